"""The authority over HTTP: caller authentication, TokenRequest, OIDC discovery, errors, faults."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import kubernetes
import pytest
import requests
from kubernetes.client import (
    AuthenticationV1TokenRequest,
    V1BoundObjectReference,
    V1TokenRequestSpec,
    V1TokenReview,
    V1TokenReviewSpec,
)
from kubernetes.client.exceptions import ApiException

from kamus_dev.authority import DEFAULT_ISSUER, ManualClock, TokenAuthority
from kamus_dev.kubeconfig import mint_token

REVIEW = V1TokenReview(spec=V1TokenReviewSpec(token="x.y.z", audiences=["kamus"]))
Mint = Callable[..., str]
ApiFactory = Callable[[str | None], Any]


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    """The Kubernetes Status body of a failed call."""
    assert exc.value.body is not None
    body: dict[str, Any] = json.loads(exc.value.body)
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert body["code"] == exc.value.status
    return body


@pytest.mark.parametrize(
    ("credential", "code", "reason", "user"),
    [
        pytest.param(None, 403, "Forbidden", "system:anonymous", id="anonymous"),
        pytest.param("wrong", 401, "Unauthorized", None, id="wrong-token"),
        pytest.param("sa", 403, "Forbidden", "system:serviceaccount:shop:app", id="sa-token"),
    ],
)
def test_reviewer_without_admin_token_is_refused(
    api_client: ApiFactory,
    mint: Mint,
    authority: TokenAuthority,
    credential: str | None,
    code: int,
    reason: str,
    user: str | None,
) -> None:
    token = mint("shop", "app", []) if credential == "sa" else credential
    api = kubernetes.client.AuthenticationV1Api(api_client(token))

    with pytest.raises(ApiException) as exc:
        api.create_token_review(REVIEW)

    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (code, reason)
    if user is not None:
        assert body["message"] == (
            f'tokenreviews.authentication.k8s.io is forbidden: User "{user}" cannot create '
            'resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope'
        )
    assert authority.tokenreview_calls == 1


def test_review_of_an_empty_token_is_a_bad_request(reviewer: Any) -> None:
    with pytest.raises(ApiException) as exc:
        reviewer.create_token_review(V1TokenReview(spec=V1TokenReviewSpec(token="")))

    assert exc.value.status == 400
    assert status_of(exc)["message"] == "token is required for TokenReview in authentication"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"kind": "Pod"}', b'{"spec": 1}'])
def test_malformed_review_body_is_a_bad_request(
    server_url: str, authority: TokenAuthority, body: bytes
) -> None:
    response = requests.post(
        f"{server_url}/apis/authentication.k8s.io/v1/tokenreviews",
        data=body,
        headers={"Authorization": f"Bearer {authority.admin_token}"},
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["reason"] == "BadRequest"


def request_token(api_client: ApiFactory, authority: TokenAuthority, **spec: Any) -> Any:
    """A TokenRequest for shop/app through the kubernetes client."""
    core = kubernetes.client.CoreV1Api(api_client(authority.admin_token))
    body = AuthenticationV1TokenRequest(spec=V1TokenRequestSpec(**spec))
    return core.create_namespaced_service_account_token("app", "shop", body)


def test_token_request_below_ten_minutes_is_invalid(
    api_client: ApiFactory, authority: TokenAuthority
) -> None:
    with pytest.raises(ApiException) as exc:
        request_token(api_client, authority, audiences=["kamus"], expiration_seconds=599)

    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"] == (
        'TokenRequest.authentication.k8s.io "app" is invalid: spec.expirationSeconds: '
        "Invalid value: 599: may not specify a duration less than 10 minutes"
    )


def test_token_request_of_ten_minutes_issues_a_kubernetes_shaped_token(
    api_client: ApiFactory, authority: TokenAuthority, clock: ManualClock
) -> None:
    start = clock.now
    answer = request_token(
        api_client,
        authority,
        audiences=["kamus"],
        expiration_seconds=600,
        bound_object_ref=V1BoundObjectReference(kind="Pod", api_version="v1", name="app-7d9"),
    )

    claims = jwt.decode(answer.status.token, options={"verify_signature": False})
    assert answer.status.expiration_timestamp == datetime.fromtimestamp(start + 600, tz=UTC)
    assert answer.spec.bound_object_ref.uid == authority.pod_uid("shop", "app-7d9")
    assert jwt.get_unverified_header(answer.status.token) == {"alg": "RS256", "kid": authority.kid}
    assert claims == {
        "aud": ["kamus"],
        "exp": start + 600,
        "iat": start,
        "nbf": start,
        "iss": DEFAULT_ISSUER,
        "jti": claims["jti"],
        "sub": "system:serviceaccount:shop:app",
        "kubernetes.io": {
            "namespace": "shop",
            "serviceaccount": {"name": "app", "uid": authority.service_account_uid("shop", "app")},
            "pod": {"name": "app-7d9", "uid": authority.pod_uid("shop", "app-7d9")},
        },
    }


def test_token_request_without_audiences_or_expiry_gets_the_defaults(
    api_client: ApiFactory, authority: TokenAuthority
) -> None:
    answer = request_token(api_client, authority)

    claims = jwt.decode(answer.status.token, options={"verify_signature": False})
    assert claims["aud"] == [DEFAULT_ISSUER]
    assert claims["exp"] - claims["iat"] == 3600
    assert (answer.spec.audiences, answer.spec.expiration_seconds) == ([DEFAULT_ISSUER], 3600)


@pytest.mark.parametrize(
    ("namespace", "service_account"),
    [("shop", "Bad_Name"), ("Shop", "app"), ("shop", "-app"), ("a" * 64, "app")],
)
def test_token_request_for_an_invalid_name_is_not_found(
    mint: Mint, namespace: str, service_account: str
) -> None:
    with pytest.raises(requests.HTTPError, match=f'404 serviceaccounts "{service_account}"'):
        mint(namespace, service_account, ["kamus"])


def test_token_request_for_a_deleted_service_account_is_not_found(
    mint: Mint, authority: TokenAuthority
) -> None:
    authority.delete_service_account("shop", "app")

    with pytest.raises(requests.HTTPError) as exc:
        mint("shop", "app", ["kamus"])

    assert exc.value.response is not None
    assert exc.value.response.status_code == 404


def test_token_request_needs_the_admin_token(server_url: str) -> None:
    with pytest.raises(requests.HTTPError, match="401 Unauthorized"):
        mint_token(server_url, "wrong", "shop", "app", ["kamus"])


def test_jwks_key_verifies_a_minted_token(
    server_url: str, authority: TokenAuthority, mint: Mint
) -> None:
    token = mint("shop", "app", ["kamus"])
    headers = {"Authorization": f"Bearer {authority.admin_token}"}

    discovery = requests.get(
        f"{server_url}/.well-known/openid-configuration", headers=headers, timeout=5
    )
    jwks = requests.get(discovery.json()["jwks_uri"], headers=headers, timeout=5)

    assert discovery.json()["issuer"] == DEFAULT_ISSUER
    assert jwks.headers["Content-Type"] == "application/jwk-set+json"
    key = jwt.PyJWKSet.from_dict(jwks.json())[authority.kid]
    assert (key.key_type, key.public_key_use, key.algorithm_name) == ("RSA", "sig", "RS256")
    # The authority's clock runs ahead of the wall clock: check signature, issuer and audience.
    claims = jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience="kamus",
        issuer=DEFAULT_ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "system:serviceaccount:shop:app"


@pytest.mark.parametrize(
    ("accept", "discovery", "jwks"),
    [
        ("application/json", 200, 406),
        ("application/jwk-set+json", 406, 200),
        (None, 200, 200),
        ("application/json, application/jwk-set+json", 200, 200),
        ("*/*", 200, 200),
    ],
)
def test_oidc_routes_negotiate_their_one_content_type_like_the_api_server(
    server_url: str, authority: TokenAuthority, accept: str | None, discovery: int, jwks: int
) -> None:
    headers = {"Authorization": f"Bearer {authority.admin_token}"}
    if accept is not None:
        headers["Accept"] = accept
    answers = {
        path: requests.get(f"{server_url}{path}", headers=headers, timeout=5)
        for path in ("/.well-known/openid-configuration", "/openid/v1/jwks")
    }
    served = {"/.well-known/openid-configuration": "application/json",
              "/openid/v1/jwks": "application/jwk-set+json"}  # fmt: skip

    assert [r.status_code for r in answers.values()] == [discovery, jwks]
    for path, response in answers.items():
        if response.status_code == 406:
            assert response.json() == {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f"406: Not Acceptable\n\nAvailable representations: {served[path]}",
                "reason": "NotAcceptable", "details": {}, "code": 406,
            }  # fmt: skip
        else:
            assert response.headers["Content-Type"] == served[path]


def test_token_request_for_a_pod_with_another_uid_is_a_conflict(
    authority: TokenAuthority, mint: Mint
) -> None:
    with pytest.raises(requests.HTTPError) as raised:
        mint("shop", "app", ["kamus"], pod="app-7d9", pod_uid="0000")

    assert raised.value.response is not None
    assert raised.value.response.status_code == 409
    assert raised.value.response.json()["message"] == (
        'Operation cannot be fulfilled on Pod "app-7d9": the UID in the bound object reference '
        "(0000) does not match the UID in record. The object might have been deleted and then "
        "recreated"
    )


@pytest.mark.parametrize(
    ("credential", "code"),
    [("admin", 200), ("sa", 200), ("kamus-sa", 401), ("wrong", 401), (None, 403)],
)
def test_oidc_discovery_needs_a_caller_the_api_server_authenticates(
    server_url: str, authority: TokenAuthority, mint: Mint, credential: str | None, code: int
) -> None:
    tokens: dict[str, Callable[[], str]] = {
        "admin": lambda: authority.admin_token,
        "sa": lambda: mint("shop", "app", []),
        "kamus-sa": lambda: mint("shop", "app", ["kamus"]),
        "wrong": lambda: "wrong",
    }
    headers = {} if credential is None else {"Authorization": f"Bearer {tokens[credential]()}"}

    for path in ("/.well-known/openid-configuration", "/openid/v1/jwks"):
        response = requests.get(f"{server_url}{path}", headers=headers, timeout=5)
        assert response.status_code == code


@pytest.mark.parametrize(
    ("method", "path", "code", "reason"),
    [
        ("GET", "/api/v1/pods", 404, "NotFound"),
        ("GET", "/apis/authentication.k8s.io/v1/tokenreviews", 405, "MethodNotAllowed"),
        ("DELETE", "/openid/v1/jwks", 405, "MethodNotAllowed"),
    ],
)
def test_unknown_route_or_method_answers_a_status(
    server_url: str, method: str, path: str, code: int, reason: str
) -> None:
    response = requests.request(method, f"{server_url}{path}", timeout=5)

    assert response.status_code == code
    assert (response.json()["kind"], response.json()["reason"]) == ("Status", reason)


def test_counters_count_reviews_and_requests(
    reviewer: Any, mint: Mint, authority: TokenAuthority
) -> None:
    tokens = [mint("shop", "app", ["kamus"]) for _ in range(2)]
    for token in tokens * 2:
        reviewer.create_token_review(V1TokenReview(spec=V1TokenReviewSpec(token=token)))

    assert (authority.tokenrequest_calls, authority.tokenreview_calls) == (2, 4)


def test_error500_fault_makes_token_review_fail(reviewer: Any, authority: TokenAuthority) -> None:
    authority.fault = "error500"

    with pytest.raises(ApiException) as exc:
        reviewer.create_token_review(REVIEW)

    assert (exc.value.status, status_of(exc)["reason"]) == (500, "InternalError")


def test_slow_fault_delays_token_review(reviewer: Any, authority: TokenAuthority) -> None:
    authority.fault = ("slow", 0.3)

    started = time.monotonic()
    status = reviewer.create_token_review(REVIEW).status

    assert time.monotonic() - started >= 0.3
    assert status.error == "invalid bearer token"


def test_expired_service_account_token_no_longer_authenticates_its_caller(
    server_url: str, mint: Mint, clock: ManualClock
) -> None:
    token = mint("shop", "app", [], expiration_seconds=600)
    clock.advance(601)

    response = requests.get(
        f"{server_url}/openid/v1/jwks", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )

    assert response.status_code == 401


def test_a_token_bound_to_a_pod_that_does_not_exist_is_not_found(mint: Mint) -> None:
    with pytest.raises(requests.HTTPError, match='404 pods "never-created" not found'):
        mint("shop", "app", ["kamus"], pod="never-created")


def test_pods_and_service_accounts_are_created_and_deleted_like_api_objects(
    server_url: str, authority: TokenAuthority, mint: Mint
) -> None:
    admin = {"Authorization": f"Bearer {authority.admin_token}"}
    pods = f"{server_url}/api/v1/namespaces/shop/pods"
    accounts = f"{server_url}/api/v1/namespaces/shop/serviceaccounts"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1"}}

    created = requests.post(pods, json=pod, headers=admin, timeout=5)
    again = requests.post(pods, json=pod, headers=admin, timeout=5)
    token = mint("shop", "app", ["kamus"], pod="web-1")
    deleted = requests.delete(f"{pods}/web-1", headers=admin, timeout=5)
    gone = requests.delete(f"{pods}/web-1", headers=admin, timeout=5)
    anonymous = requests.post(pods, json=pod, timeout=5)

    assert (created.status_code, again.status_code) == (201, 409)
    assert created.json()["metadata"]["uid"] == deleted.json()["metadata"]["uid"]
    assert (deleted.status_code, gone.status_code, anonymous.status_code) == (200, 404, 403)
    assert authority.review(token, ["kamus"])["error"] == (
        "[invalid bearer token, service account token has been invalidated]"
    )
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}}
    assert requests.post(accounts, json=account, headers=admin, timeout=5).status_code == 409
    assert requests.delete(f"{accounts}/app", headers=admin, timeout=5).status_code == 200
    assert requests.post(accounts, json=account, headers=admin, timeout=5).status_code == 201
