from __future__ import annotations

import pytest

from kamus_kms.errors import InvalidScopeError
from kamus_kms.scope import Scope


@pytest.mark.parametrize(
    ("namespace", "service_account"),
    [("team-a", "app"), ("a", "b"), ("ns1", "api.v2.internal"), ("x" * 63, "y" * 253)],
)
def test_kubernetes_names_are_accepted(namespace: str, service_account: str) -> None:
    assert str(Scope(namespace, service_account)) == f"{namespace}/{service_account}"


@pytest.mark.parametrize(
    ("namespace", "service_account"),
    [
        ("", "app"),
        ("team-a", ""),
        ("Team-A", "app"),
        ("team_a", "app"),
        ("-team", "app"),
        ("team-", "app"),
        ("team.a", "app"),  # namespaces are labels: no dots
        ("x" * 64, "app"),
        ("team-a", "y" * 254),
        ("team-a", "app:x"),
        ("team-a", "app..x"),
        ("team-a", "app\n"),
        ("team-a", "äpp"),
    ],
)
def test_invalid_names_are_refused(namespace: str, service_account: str) -> None:
    with pytest.raises(InvalidScopeError):
        Scope(namespace, service_account)


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("system:serviceaccount:team-a:app", Scope("team-a", "app")),
        ("system:serviceaccount:team-a:default", Scope("team-a", "default")),
        ("system:serviceaccount:team-a", None),
        ("system:serviceaccount:Team:app", None),
        ("system:node:worker-1", None),
        ("alice@example.com", None),
        ("", None),
    ],
)
def test_scope_is_read_only_from_service_account_usernames(
    username: str, expected: Scope | None
) -> None:
    assert Scope.from_username(username) == expected


def test_default_service_account_is_recognised() -> None:
    assert Scope("team-a", "default").is_default_service_account
    assert not Scope("team-a", "app").is_default_service_account
