from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from reviewer_double import StaticReviewer

from kamus_decryptor import create_app
from kamus_decryptor.app import BoundedLabels
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.settings import LogLevel, Settings

TOKEN_A = "token-team_a-app"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def ciphertext(sealer: Sealer, team_a_app: Scope) -> str:
    """A ciphertext for team-a/app."""
    return sealer.seal(b"the-plaintext", team_a_app)


def test_the_right_service_account_decrypts(
    client: FlaskClient, ciphertext: str, audit_events: Callable[[], list[dict[str, Any]]]
) -> None:
    response = client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(TOKEN_A))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data() == b"the-plaintext"
    [event] = audit_events()
    assert event["outcome"] == "allowed"
    assert event["caller"]["username"] == "system:serviceaccount:team-a:app"
    assert event["caller"]["pod"] == "pod-1"
    assert event["items"][0]["namespace"] == "team-a"
    assert event["items"][0]["key_id"] == "k1"
    assert len(event["items"][0]["fingerprint"]) == 32


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        ("token-team_a-other", 403, "scope_mismatch"),
        ("token-team_b-app", 403, "scope_mismatch"),
        ("token-team_a-default", 403, "default_service_account"),
        ("token-of-alice", 403, "not_service_account"),
        ("garbage", 401, "unauthorized"),
    ],
)
def test_other_callers_are_denied_and_audited(
    client: FlaskClient,
    ciphertext: str,
    audit_events: Callable[[], list[dict[str, Any]]],
    token: str,
    status: int,
    code: str,
) -> None:
    response = client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(token))
    assert (response.status_code, response.get_json()["error"]) == (status, code)
    assert b"the-plaintext" not in response.get_data()
    [event] = audit_events()
    assert (event["outcome"], event["reason"]) == ("denied", code)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": TOKEN_A},
    ],
)
def test_missing_or_malformed_authorization_is_401(
    client: FlaskClient, ciphertext: str, reviewer: StaticReviewer, headers: dict[str, str]
) -> None:
    response = client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert reviewer.reviews == 0


def test_token_review_unavailable_is_503_and_never_decrypts(
    client: FlaskClient, ciphertext: str, reviewer: StaticReviewer,
    audit_events: Callable[[], list[dict[str, Any]]],
) -> None:  # fmt: skip
    reviewer.available = False
    response = client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(TOKEN_A))
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert b"the-plaintext" not in response.get_data()
    [event] = audit_events()
    assert (event["outcome"], event["reason"]) == ("unavailable", "unavailable")
    # A shared dependency's outage is reported, not enforced: the Service keeps its endpoints.
    readyz = client.get("/readyz?verbose")
    assert readyz.status_code == 200
    assert readyz.get_json()["dependencies"]["tokenreview"]["error"] == "unavailable"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": None},
        {"data": 42},
        {"data": ""},
        {"data": "garbage"},
        {"data": "kamus:v1:local:team-a:app:k1:AAAA"},
        {"data": "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g=="},
    ],
)
def test_bad_bodies_are_400_and_audited(
    client: FlaskClient, body: dict[str, Any], audit_events: Callable[[], list[dict[str, Any]]]
) -> None:
    response = client.post("/api/v1/decrypt", json=body, headers=_bearer(TOKEN_A))
    assert response.status_code == 400
    assert response.get_json()["error"] in {"invalid_request", "invalid_ciphertext"}
    assert [e["outcome"] for e in audit_events()] == ["denied"]


def test_a_header_edited_to_the_callers_scope_does_not_decrypt(
    client: FlaskClient, sealer: Sealer
) -> None:
    text = sealer.seal(b"for team-b", Scope("team-b", "app"))
    forged = text.replace(":team-b:app:", ":team-a:app:")
    response = client.post("/api/v1/decrypt", json={"data": forged}, headers=_bearer(TOKEN_A))
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_ciphertext")


def test_batch_decrypts_all_items_with_one_review(
    client: FlaskClient, sealer: Sealer, team_a_app: Scope, reviewer: StaticReviewer,
    audit_events: Callable[[], list[dict[str, Any]]],
) -> None:  # fmt: skip
    items = {f"s{i}": sealer.seal(f"value-{i}".encode(), team_a_app) for i in range(5)}
    response = client.post("/api/v1/decrypt/batch", json={"items": items}, headers=_bearer(TOKEN_A))
    assert response.status_code == 200
    assert response.get_json() == {"items": {f"s{i}": f"value-{i}" for i in range(5)}}
    assert reviewer.reviews == 1
    [event] = audit_events()
    assert [item["name"] for item in event["items"]] == [f"s{i}" for i in range(5)]


def test_batch_is_all_or_nothing(client: FlaskClient, sealer: Sealer, team_a_app: Scope) -> None:
    items = {
        "mine": sealer.seal(b"mine", team_a_app),
        "theirs": sealer.seal(b"theirs", Scope("team-b", "app")),
    }
    response = client.post("/api/v1/decrypt/batch", json={"items": items}, headers=_bearer(TOKEN_A))
    assert (response.status_code, response.get_json()["error"]) == (403, "scope_mismatch")
    assert b"mine" not in response.get_data()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"items": []},
        {"items": {}},
        {"items": {"a": 1}},
        {"items": {"": "x"}},
        {"items": {f"n{i}": "x" for i in range(6)}},
    ],
)
def test_batch_bad_bodies_are_400(client: FlaskClient, body: dict[str, Any]) -> None:
    response = client.post("/api/v1/decrypt/batch", json=body, headers=_bearer(TOKEN_A))
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_request")


def test_oversized_body_is_413(client: FlaskClient) -> None:
    response = client.post("/api/v1/decrypt", json={"data": "x" * 60_000}, headers=_bearer(TOKEN_A))
    assert (response.status_code, response.get_json()["error"]) == (413, "payload_too_large")


def test_audit_and_logs_never_hold_the_plaintext_or_token(
    client: FlaskClient, ciphertext: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(TOKEN_A))
    client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer("token-team_b-app"))
    out = capsys.readouterr()
    logged = out.out + out.err
    assert '"audit":true' in logged
    assert "the-plaintext" not in logged
    assert TOKEN_A not in logged
    assert ciphertext not in logged


def test_a_denied_batch_audits_every_item_it_asked_for(
    client: FlaskClient,
    sealer: Sealer,
    team_a_app: Scope,
    audit_events: Callable[[], list[dict[str, Any]]],
) -> None:
    items = {
        "theirs": sealer.seal(b"theirs", Scope("team-b", "app")),
        "mine": sealer.seal(b"mine", team_a_app),
        "junk": "not-a-ciphertext",
    }
    response = client.post("/api/v1/decrypt/batch", json={"items": items}, headers=_bearer(TOKEN_A))
    assert response.status_code == 400
    [event] = audit_events()
    assert [(i["name"], i.get("namespace")) for i in event["items"]] == [
        ("theirs", "team-b"),
        ("mine", "team-a"),
        ("junk", None),
    ]


def test_rewrap_moves_a_ciphertext_to_the_active_key_without_revealing_it(
    keyring: Keyring, reviewer: StaticReviewer, team_a_app: Scope
) -> None:
    old = Sealer(LocalKeyringProvider(keyring)).seal(b"the-plaintext", team_a_app)
    rotated = keyring.rotate()
    settings = Settings(service="decryptor", keyring=rotated.to_json(), audit_key=b"k" * 32)
    client = create_app(settings, reviewer=reviewer).test_client()
    response = client.post("/api/v1/rewrap", json={"data": old}, headers=_bearer(TOKEN_A))
    assert response.status_code == 200
    new = response.get_data(as_text=True)
    assert b"the-plaintext" not in response.get_data()
    assert new.startswith("kamus:v1:local:team-a:app:k2:")
    assert Sealer(LocalKeyringProvider(rotated)).open(new, team_a_app).plaintext == b"the-plaintext"


@pytest.mark.parametrize(
    ("token", "status"), [("token-team_b-app", 403), ("garbage", 401), ("token-team_a-other", 403)]
)
def test_rewrap_is_only_for_the_ciphertexts_own_scope(
    client: FlaskClient, ciphertext: str, token: str, status: int
) -> None:
    response = client.post("/api/v1/rewrap", json={"data": ciphertext}, headers=_bearer(token))
    assert response.status_code == status


def test_a_callers_failures_get_it_429_while_another_caller_at_its_address_is_served(
    keyring: Keyring, reviewer: StaticReviewer, ciphertext: str
) -> None:
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        rate_limit_failures_per_minute=5)  # fmt: skip
    client = create_app(settings, reviewer=reviewer).test_client()
    node = {"REMOTE_ADDR": "10.0.0.66"}  # pods of one node, or behind SNAT, share an address
    statuses = [
        client.post("/api/v1/decrypt", json={"data": ciphertext}, environ_base=node,
                    headers=_bearer("token-team_b-app")).status_code
        for _ in range(8)
    ]  # fmt: skip
    assert statuses == [403] * 5 + [429] * 3
    limited = client.post("/api/v1/decrypt", json={"data": ciphertext}, environ_base=node,
                          headers=_bearer("token-team_b-app"))  # fmt: skip
    assert (limited.status_code, limited.get_json()["error"]) == (429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0
    neighbour = client.post("/api/v1/decrypt", json={"data": ciphertext}, environ_base=node,
                            headers=_bearer(TOKEN_A))  # fmt: skip
    assert (neighbour.status_code, neighbour.text) == (200, "the-plaintext")


def test_requests_without_a_token_are_limited_by_address(
    keyring: Keyring, reviewer: StaticReviewer, ciphertext: str
) -> None:
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        rate_limit_failures_per_minute=2)  # fmt: skip
    client = create_app(settings, reviewer=reviewer).test_client()
    node = {"REMOTE_ADDR": "10.0.0.66"}
    statuses = [
        client.post("/api/v1/decrypt", json={"data": ciphertext}, environ_base=node).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]
    served = client.post("/api/v1/decrypt", json={"data": ciphertext}, environ_base=node,
                         headers=_bearer(TOKEN_A))  # fmt: skip
    assert served.status_code == 200


def test_successes_never_count_towards_the_limit(
    keyring: Keyring, reviewer: StaticReviewer, ciphertext: str
) -> None:
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        rate_limit_failures_per_minute=2)  # fmt: skip
    client = create_app(settings, reviewer=reviewer).test_client()
    for _ in range(20):
        response = client.post(
            "/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(TOKEN_A)
        )
        assert response.status_code == 200


def test_a_quiet_log_level_never_silences_the_audit(
    keyring: Keyring, reviewer: StaticReviewer, ciphertext: str,
    audit_events: Callable[[], list[dict[str, Any]]],
) -> None:  # fmt: skip
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        log_level=LogLevel.ERROR)  # fmt: skip
    client = create_app(settings, reviewer=reviewer).test_client()
    client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer("token-team_b-app"))
    client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(TOKEN_A))
    assert [e["outcome"] for e in audit_events()] == ["denied", "allowed"]


KAMUS_VECTOR = "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g=="


@pytest.fixture
def legacy_client(keyring: Keyring, reviewer: StaticReviewer) -> FlaskClient:
    """A decryptor configured with Kamus's published legacy key."""
    settings = Settings(
        service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
        legacy_key=base64.b64decode("tWG4dk8ARsETnFL3jCf1xtMVe05imlx9vimER7iky2s="),
    )  # fmt: skip
    return create_app(settings, reviewer=reviewer).test_client()


def test_legacy_kamus_ciphertexts_decrypt_only_when_the_operator_configured_the_key(
    client: FlaskClient, legacy_client: FlaskClient
) -> None:
    body, headers = {"data": KAMUS_VECTOR}, _bearer(TOKEN_A)
    refused = client.post("/api/v1/decrypt", json=body, headers=headers)
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_ciphertext")
    response = legacy_client.post("/api/v1/decrypt", json=body, headers=headers)
    assert (response.status_code, response.get_data()) == (200, b"hello")
    metrics = legacy_client.get("/metrics").get_data(as_text=True)
    assert "kamus_legacy_ciphertexts_opened_total 1.0" in metrics


def test_a_legacy_text_with_white_space_in_its_base64_decrypts_as_in_kamus(
    legacy_client: FlaskClient,
) -> None:
    # .NET's base64 decoder skipped white space: a text wrapped or indented in a manifest opened.
    body = {"data": "C4gChhspnTa5yVqY\n  mSitrg==:tr0Ke6OGUaUa8KZg MJg14g=="}
    response = legacy_client.post("/api/v1/decrypt", json=body, headers=_bearer(TOKEN_A))
    assert (response.status_code, response.get_data()) == (200, b"hello")


def test_rewrap_turns_a_legacy_ciphertext_into_v1_for_the_callers_scope(
    legacy_client: FlaskClient, keyring: Keyring, team_a_app: Scope
) -> None:
    response = legacy_client.post(
        "/api/v1/rewrap", json={"data": KAMUS_VECTOR}, headers=_bearer(TOKEN_A)
    )
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert text.startswith("kamus:v1:local:team-a:app:")
    assert Sealer(LocalKeyringProvider(keyring)).open(text, team_a_app).plaintext == b"hello"


def test_every_attempt_is_counted_by_outcome_and_a_limited_one_is_audited(
    keyring: Keyring,
    reviewer: StaticReviewer,
    ciphertext: str,
    audit_events: Callable[[], list[dict[str, Any]]],
) -> None:
    registry = CollectorRegistry()
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        rate_limit_failures_per_minute=1)  # fmt: skip
    client = create_app(settings, reviewer=reviewer, registry=registry).test_client()
    for token in (TOKEN_A, "token-team_b-app", "token-team_b-app"):
        client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(token))

    def counted(reason: str) -> float | None:
        labels = {"action": "decrypt", "reason": reason}
        return registry.get_sample_value("kamus_decrypt_total", labels)

    assert (counted("ok"), counted("scope_mismatch"), counted("rate_limited")) == (1, 1, 1)
    outcomes = [(event["outcome"], event["reason"]) for event in audit_events()]
    assert outcomes == [
        ("allowed", "ok"),
        ("denied", "scope_mismatch"),
        ("denied", "rate_limited"),
    ]


def test_denials_are_counted_by_the_verified_caller_so_probing_shows(
    keyring: Keyring, reviewer: StaticReviewer, ciphertext: str
) -> None:
    # An alert on one scope probing others needs who was refused, as TokenReview proved it.
    registry = CollectorRegistry()
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32)
    client = create_app(settings, reviewer=reviewer, registry=registry).test_client()
    for token in (TOKEN_A, "token-team_b-app", "token-team_b-app", "token-team_a-default",
                  "garbage"):  # fmt: skip
        client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(token))
    client.post("/api/v1/decrypt", json={"data": ciphertext})  # no token at all

    def denied(namespace: str, service_account: str, reason: str) -> float | None:
        labels = {
            "caller_namespace": namespace,
            "caller_service_account": service_account,
            "reason": reason,
        }
        return registry.get_sample_value("kamus_decrypt_denials_total", labels)

    assert denied("team-b", "app", "scope_mismatch") == 2
    assert denied("team-a", "default", "default_service_account") == 1
    assert denied("(unverified)", "(unverified)", "unauthorized") == 2
    assert denied("team-a", "app", "ok") is None  # allowed attempts are not denials
    families = {family.name: family for family in registry.collect()}
    total = sum(
        s.value for s in families["kamus_decrypt_denials"].samples if s.name.endswith("_total")
    )
    assert total == 5


def test_denied_callers_are_bounded() -> None:
    callers = BoundedLabels(("(other)", "(other)"), limit=1)
    assert callers.of(("a", "x")) == ("a", "x")
    assert callers.of(("b", "y")) == ("(other)", "(other)")
    assert callers.of(("a", "x")) == ("a", "x")


def _holds(value: object, needle: str, seen: set[int], depth: int = 0) -> bool:
    """Whether ``needle`` is reachable from ``value`` through attributes and containers."""
    if isinstance(value, str):
        return needle in value
    if id(value) in seen or depth > 8 or isinstance(value, (int, float, bytes, type)):
        return False
    seen.add(id(value))
    if isinstance(value, dict):
        children: list[object] = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    else:
        children = list(getattr(value, "__dict__", {}).values())
        children += [getattr(value, name, None) for name in getattr(value, "__slots__", ())]
    return any(_holds(child, needle, seen, depth + 1) for child in children)


def test_no_raw_token_is_kept_by_the_review_cache_or_the_rate_limiter(
    client: FlaskClient, ciphertext: str
) -> None:
    # Both key their state by the token's SHA-256: a memory dump shows no usable token.
    response = client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(TOKEN_A))
    assert response.status_code == 200
    garbage = "garbage-token-" + "x" * 40
    denied = client.post("/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(garbage))
    assert denied.status_code == 401
    decryptor = client.application.extensions["kamus_decryptor"]
    for kept in (decryptor.reviewer, decryptor.limiter):
        assert not _holds(kept, TOKEN_A, set())
        assert not _holds(kept, garbage, set())
    assert _holds(decryptor.limiter, "token:", set())  # the walk does reach the keys


def test_opens_are_counted_per_key_so_a_key_s_last_use_shows(
    client: FlaskClient, ciphertext: str
) -> None:
    for _ in range(2):
        response = client.post(
            "/api/v1/decrypt", json={"data": ciphertext}, headers=_bearer(TOKEN_A)
        )
        assert response.status_code == 200
    key_id = Ciphertext.parse(ciphertext).key_id
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'kamus_decrypt_key_opens_total{{key_id="{key_id}",provider="local"}} 2.0' in metrics


def test_key_labels_are_bounded() -> None:
    labels = BoundedLabels("other", limit=2)
    assert [labels.of(k) for k in ("k1", "k2", "k3", "k1", "k4")] == ["k1", "k2", "other", "k1",
                                                                       "other"]  # fmt: skip
