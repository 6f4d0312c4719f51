"""TokenReview through the real kubernetes client answers as kube-apiserver does."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from kubernetes.client import V1TokenReview, V1TokenReviewSpec

from kamus_dev.authority import DEFAULT_ISSUER, ManualClock, TokenAuthority


def review(reviewer: Any, token: str, audiences: list[str] | None) -> Any:
    """The TokenReview status, after checking the answer was 201 as Kubernetes gives."""
    body = V1TokenReview(spec=V1TokenReviewSpec(token=token, audiences=audiences))
    result, code, _ = reviewer.create_token_review_with_http_info(body)
    assert code == 201
    return result.status


def test_valid_pod_bound_token_is_authenticated_with_user_groups_extra_and_audiences(
    reviewer: Any, mint: Callable[..., str], authority: TokenAuthority
) -> None:
    pod_uid = authority.pod_uid("shop", "app-7d9")
    token = mint("shop", "app", ["kamus"], pod="app-7d9", pod_uid=pod_uid)

    status = review(reviewer, token, ["kamus"])

    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert status.authenticated is True
    assert status.error is None
    assert status.audiences == ["kamus"]
    assert status.user.username == "system:serviceaccount:shop:app"
    assert status.user.uid == authority.service_account_uid("shop", "app")
    assert status.user.groups == [
        "system:serviceaccounts",
        "system:serviceaccounts:shop",
        "system:authenticated",
    ]
    assert status.user.extra == {
        "authentication.kubernetes.io/pod-name": ["app-7d9"],
        "authentication.kubernetes.io/pod-uid": [pod_uid],
        "authentication.kubernetes.io/credential-id": [f"JTI={jti}"],
    }


def test_review_without_audiences_accepts_a_token_for_the_default_audience(
    reviewer: Any, mint: Callable[..., str]
) -> None:
    status = review(reviewer, mint("shop", "app", []), None)

    assert status.authenticated is True
    assert status.audiences == [DEFAULT_ISSUER]


def test_token_is_valid_up_to_its_expiry_second(
    reviewer: Any, mint: Callable[..., str], clock: ManualClock
) -> None:
    token = mint("shop", "app", ["kamus"], expiration_seconds=600)
    clock.advance(600)

    assert review(reviewer, token, ["kamus"]).authenticated is True


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _foreign(authority: TokenAuthority, **overrides: Any) -> str:
    other = TokenAuthority(clock=authority.clock, **overrides)
    return other.issue_token("shop", "app", ["kamus"])[0]


Setup = Callable[[TokenAuthority, ManualClock, Callable[..., str]], str]
TARGETS = '["https://kubernetes.default.svc.cluster.local"]'


def _expire(authority: TokenAuthority, clock: ManualClock, mint: Callable[..., str]) -> str:
    token = mint("shop", "app", ["kamus"], expiration_seconds=600)
    clock.advance(601)
    return token


def _delete_sa(authority: TokenAuthority, clock: ManualClock, mint: Callable[..., str]) -> str:
    token = mint("shop", "app", ["kamus"])
    authority.delete_service_account("shop", "app")
    return token


def _recreate_sa(authority: TokenAuthority, clock: ManualClock, mint: Callable[..., str]) -> str:
    token = _delete_sa(authority, clock, mint)
    authority.create_service_account("shop", "app")
    return token


def _delete_pod(authority: TokenAuthority, clock: ManualClock, mint: Callable[..., str]) -> str:
    token = mint("shop", "app", ["kamus"], pod="app-7d9")
    authority.delete_pod("shop", "app-7d9")
    return token


@pytest.mark.parametrize(
    ("setup", "audiences", "error"),
    [
        pytest.param(
            lambda a, c, m: m("shop", "app", ["vault", "other"]),
            ["kamus"],
            '[invalid bearer token, token audiences ["vault" "other"] is invalid'
            ' for the target audiences ["kamus"]]',
            id="wrong-audience",
        ),
        pytest.param(
            lambda a, c, m: m("shop", "app", ["kamus"]),
            None,
            f'[invalid bearer token, token audiences ["kamus"] is invalid'
            f" for the target audiences {TARGETS}]",
            id="kamus-token-reviewed-for-default-audience",
        ),
        pytest.param(
            _expire,
            ["kamus"],
            "[invalid bearer token, service account token has expired]",
            id="expired",
        ),
        pytest.param(
            lambda a, c, m: _foreign(a), ["kamus"], "invalid bearer token", id="other-key"
        ),
        pytest.param(
            lambda a, c, m: _foreign(a, signing_key=a.signing_key, issuer="https://evil"),
            ["kamus"],
            "invalid bearer token",
            id="other-issuer",
        ),
        pytest.param(
            lambda a, c, m: _tampered(m("shop", "app", ["kamus"])),
            ["kamus"],
            "invalid bearer token",
            id="tampered",
        ),
        pytest.param(lambda a, c, m: "not-a-jwt", ["kamus"], "invalid bearer token", id="garbage"),
        pytest.param(
            _delete_sa,
            ["kamus"],
            '[invalid bearer token, serviceaccounts "app" not found]',
            id="deleted-service-account",
        ),
        pytest.param(
            _delete_pod,
            ["kamus"],
            "[invalid bearer token, service account token has been invalidated]",
            id="deleted-pod",
        ),
    ],
)
def test_rejected_token_gets_201_without_authenticated_and_the_kubernetes_error(
    reviewer: Any,
    authority: TokenAuthority,
    clock: ManualClock,
    mint: Callable[..., str],
    setup: Setup,
    audiences: list[str] | None,
    error: str,
) -> None:
    status = review(reviewer, setup(authority, clock, mint), audiences)

    assert status.authenticated is None
    assert status.error == error
    assert status.audiences is None
    assert status.user.to_dict() == {"username": None, "uid": None, "groups": None, "extra": None}


def test_token_of_a_recreated_service_account_fails_on_the_uid(
    reviewer: Any, authority: TokenAuthority, clock: ManualClock, mint: Callable[..., str]
) -> None:
    old_uid = authority.service_account_uid("shop", "app")
    token = _recreate_sa(authority, clock, mint)
    new_uid = authority.service_account_uid("shop", "app")

    status = review(reviewer, token, ["kamus"])

    assert new_uid != old_uid
    assert status.error == (
        f"[invalid bearer token, service account UID ({new_uid}) does not match claim ({old_uid})]"
    )
    assert review(reviewer, mint("shop", "app", ["kamus"]), ["kamus"]).authenticated is True


def test_token_of_a_pod_created_again_under_its_name_fails_on_the_pod_uid(
    reviewer: Any, authority: TokenAuthority, mint: Callable[..., str]
) -> None:
    token = mint("shop", "app", ["kamus"], pod="app-7d9")
    old_uid = authority.pod_uid("shop", "app-7d9")
    authority.delete_pod("shop", "app-7d9")
    new_uid = authority.create_pod("shop", "app-7d9")

    status = review(reviewer, token, ["kamus"])

    assert new_uid != old_uid
    assert status.error == (
        f"[invalid bearer token, pod UID ({new_uid}) does not match service account pod ref "
        f"claim ({old_uid})]"
    )
    fresh = mint("shop", "app", ["kamus"], pod="app-7d9")
    assert review(reviewer, fresh, ["kamus"]).authenticated is True


@pytest.mark.parametrize(
    ("delete", "error"),
    [
        pytest.param(
            lambda a: a.delete_pod("shop", "app-7d9"),
            "[invalid bearer token, service account token has been invalidated]",
            id="deleted-pod",
        ),
        pytest.param(
            lambda a: a.delete_service_account("shop", "app"),
            '[invalid bearer token, serviceaccounts "app" not found]',
            id="deleted-service-account",
        ),
    ],
)
def test_a_success_is_answered_again_for_about_ten_seconds_like_the_api_server(
    reviewer: Any,
    authority: TokenAuthority,
    clock: ManualClock,
    mint: Callable[..., str],
    delete: Callable[[TokenAuthority], None],
    error: str,
) -> None:
    token = mint("shop", "app", ["kamus"], pod="app-7d9")
    assert review(reviewer, token, ["kamus"]).authenticated is True
    delete(authority)
    clock.advance(9.9)
    assert review(reviewer, token, ["kamus"]).authenticated is True
    clock.advance(0.1)
    late = review(reviewer, token, ["kamus"])
    assert late.authenticated is None
    assert late.error == error


def test_a_cached_success_never_outlives_the_token(
    reviewer: Any, clock: ManualClock, mint: Callable[..., str]
) -> None:
    token = mint("shop", "app", ["kamus"], expiration_seconds=600)
    clock.advance(595)
    assert review(reviewer, token, ["kamus"]).authenticated is True
    clock.advance(6)
    assert review(reviewer, token, ["kamus"]).error == (
        "[invalid bearer token, service account token has expired]"
    )


def test_failures_are_not_cached(
    reviewer: Any, clock: ManualClock, mint: Callable[..., str]
) -> None:
    token = mint("shop", "app", ["kamus"])
    clock.advance(-5)
    early = review(reviewer, token, ["kamus"])
    assert early.authenticated is None
    assert early.error == "[invalid bearer token, service account token is not valid yet]"
    clock.advance(5)
    assert review(reviewer, token, ["kamus"]).authenticated is True
