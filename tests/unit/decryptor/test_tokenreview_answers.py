"""KubernetesTokenReviewer against canned API answers: anything unreadable fails closed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, Response, request

from kamus_decryptor import create_app
from kamus_decryptor.tokenreview import KubernetesTokenReviewer, api_client
from kamus_dev.authority import serve_in_thread
from kamus_dev.kubeconfig import write_kubeconfig
from kamus_kms.errors import UnavailableError
from kamus_kms.keyring import Keyring
from kamus_service.errors import AuthenticationError, NotServiceAccountError
from kamus_service.settings import Settings

ANSWERS: dict[str, tuple[int, str]] = {
    "not-json": (201, "not json"),
    "empty-object": (201, "{}"),
    "bad-extra": (
        201,
        '{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{"authenticated":'
        'true,"user":{"username":"system:serviceaccount:a:b","extra":{"k":"not-a-list"}},'
        '"audiences":["kamus"]}}',
    ),
    "server-error": (500, '{"kind":"Status","code":500}'),
    "forbidden": (403, '{"kind":"Status","code":403}'),
    "user-token": (
        201,
        '{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"t"},"status":'
        '{"authenticated":true,"user":{"username":"alice"},"audiences":["kamus"]}}',
    ),
    "go-jose": (
        201,
        '{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"t"},"status":'
        '{"user":{},'
        '"error":"[invalid bearer token, square/go-jose: error in cryptographic primitive]"}}',
    ),
    "ghost": (
        201,
        '{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"t"},"status":'
        '{"user":{},'
        '"error":"[invalid bearer token, serviceaccounts \\"ghost\\" not found]"}}',
    ),
    "other-audience": (
        201,
        '{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"t"},"status":'
        '{"authenticated":true,"user":{"username":"system:serviceaccount:a:b"},'
        '"audiences":["vault"]}}',
    ),
}


REVIEWS: list[str] = []


def _jwt(answer: str) -> str:
    """A JWT-shaped token whose first part names the canned answer it gets."""
    return f"{answer}.payload.signature"


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    """A canned API server: the token names the answer it gets."""
    app = Flask("canned-api")

    @app.post("/apis/authentication.k8s.io/v1/tokenreviews")
    def review() -> Response:
        token = (request.get_json(force=True).get("spec") or {}).get("token", "")
        REVIEWS.append(token)
        status, body = ANSWERS.get(token.split(".")[0], ANSWERS["not-json"])
        return Response(body, status=status, mimetype="application/json")

    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def reviewer(api_url: str, tmp_path: Path) -> KubernetesTokenReviewer:
    """A reviewer reaching the canned API through a kubeconfig."""
    write_kubeconfig(tmp_path / "kubeconfig", api_url, "reviewer-token")
    return KubernetesTokenReviewer(api_client(tmp_path / "kubeconfig"), ("kamus",), 2.0)


@pytest.mark.parametrize("answer", ["not-json", "empty-object", "bad-extra", "server-error",
                                    "forbidden"])  # fmt: skip
def test_unreadable_or_failed_reviews_are_unavailable(
    reviewer: KubernetesTokenReviewer, answer: str
) -> None:
    with pytest.raises((UnavailableError, AuthenticationError)) as caught:
        reviewer.review(_jwt(answer))
    if answer != "empty-object":  # `{}` reads as "not authenticated": a 401, also fail-closed
        assert isinstance(caught.value, UnavailableError)


@pytest.mark.parametrize(
    ("answer", "error"),
    [("user-token", NotServiceAccountError), ("other-audience", AuthenticationError)],
)
def test_reviews_that_are_not_a_kamus_service_account_are_refused(
    reviewer: KubernetesTokenReviewer, answer: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        reviewer.review(_jwt(answer))


def test_readiness_reports_a_token_review_it_cannot_read(
    reviewer: KubernetesTokenReviewer, keyring: Keyring
) -> None:
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32)
    client = create_app(settings, reviewer=reviewer).test_client()
    response = client.get("/readyz?verbose")
    assert response.status_code == 200
    assert response.get_json()["dependencies"]["tokenreview"]["ready"] is False


@pytest.mark.parametrize("token", ["garbage", "a.b", "a.b.c.d", "x.y.z w", "ä.b.c"])
def test_a_token_that_is_not_a_jwt_is_refused_without_an_api_call(
    reviewer: KubernetesTokenReviewer, token: str
) -> None:
    before = len(REVIEWS)
    with pytest.raises(AuthenticationError, match="not a JWT"):
        reviewer.review(token)
    assert len(REVIEWS) == before


@pytest.mark.parametrize(
    ("answer", "detail"),
    [("go-jose", "square/go-jose: error in cryptographic primitive"),
     ("ghost", 'serviceaccounts "ghost" not found')],
)  # fmt: skip
def test_the_api_servers_rejection_text_is_logged_but_never_answered(
    reviewer: KubernetesTokenReviewer,
    keyring: Keyring,
    caplog: pytest.LogCaptureFixture,
    answer: str,
    detail: str,
) -> None:
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32)
    client = create_app(settings, reviewer=reviewer).test_client()
    token = _jwt(answer)
    with caplog.at_level(logging.INFO, logger="kamus.tokenreview"):
        response = client.post(
            "/api/v1/decrypt",
            json={"data": "kamus:v1:local:a:b:k1:x"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized", "message": "the token was rejected"}
    logged = [(record.getMessage(), getattr(record, "reason", None)) for record in caplog.records]
    assert ("TokenReview rejected a token", f"[invalid bearer token, {detail}]") in logged
    assert token not in caplog.text
