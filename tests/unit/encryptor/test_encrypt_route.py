from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from kamus_encryptor import create_app
from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.settings import Settings


@pytest.fixture
def app(keyring: Keyring) -> Flask:
    """An encryptor over a fresh keyring."""
    settings = Settings(service="encryptor", keyring=keyring.to_json(), max_plaintext_bytes=1000,
                        max_body_bytes=10_000)  # fmt: skip
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the encryptor."""
    return app.test_client()


def _encrypt(client: FlaskClient, body: Any, **kwargs: Any) -> Any:
    return client.post("/api/v1/encrypt", json=body, **kwargs)


BODY = {"data": "s3cr3t", "namespace": "team-a", "service-account": "app"}


def test_encrypt_returns_a_text_plain_ciphertext_that_opens_for_the_scope(
    client: FlaskClient, keyring: Keyring
) -> None:
    response = _encrypt(client, BODY)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert text.startswith("kamus:v1:local:team-a:app:k1:")
    opened = Sealer(LocalKeyringProvider(keyring)).open(text, Scope("team-a", "app"))
    assert opened.plaintext == b"s3cr3t"


def test_json_is_returned_only_to_clients_that_ask_for_json_alone(client: FlaskClient) -> None:
    only_json = _encrypt(client, BODY, headers={"Accept": "application/json"})
    assert only_json.mimetype == "application/json"
    assert only_json.get_json()["data"].startswith("kamus:v1:")
    axios_style = _encrypt(client, BODY, headers={"Accept": "application/json, text/plain, */*"})
    assert axios_style.mimetype == "text/plain"


def test_non_ascii_secrets_round_trip(client: FlaskClient, keyring: Keyring) -> None:
    text = _encrypt(client, {**BODY, "data": "pässwörd ✓ 🔑"}).get_data(as_text=True)
    assert Sealer(LocalKeyringProvider(keyring)).open(text).plaintext.decode() == "pässwörd ✓ 🔑"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"namespace": "team-a", "service-account": "app"}, 400, "invalid_request"),
        ({"data": "x", "service-account": "app"}, 400, "invalid_request"),
        ({"data": "x", "namespace": "team-a"}, 400, "invalid_request"),
        ({"data": 1, "namespace": "team-a", "service-account": "app"}, 400, "invalid_request"),
        ({"data": None, "namespace": "team-a", "service-account": "app"}, 400, "invalid_request"),
        ({"data": "", "namespace": "team-a", "service-account": "app"}, 400, "invalid_request"),
        ({"data": "x", "namespace": ["team-a"], "service-account": "app"}, 400, "invalid_request"),
        ({"data": "x", "namespace": "Team_A", "service-account": "app"}, 400, "invalid_scope"),
        ({"data": "x", "namespace": "team-a", "service-account": "a:b"}, 400, "invalid_scope"),
        ({"data": "x", "namespace": "team-a", "service-account": "default"}, 400,
         "default_service_account"),
        ({"data": "x" * 1001, "namespace": "team-a", "service-account": "app"}, 413,
         "payload_too_large"),
        ([], 400, "invalid_request"),
        ("just a string", 400, "invalid_request"),
    ],
)  # fmt: skip
def test_bad_bodies_get_a_json_4xx(client: FlaskClient, body: Any, status: int, code: str) -> None:
    response = _encrypt(client, body)
    assert response.status_code == status
    assert response.get_json() == {"error": code, "message": response.get_json()["message"]}
    assert response.get_json()["message"]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"", "application/json", 400, "invalid_request"),
        (b"{not json", "application/json", 400, "invalid_request"),
        (b"null", "application/json", 400, "invalid_request"),
        (b'{"data": "\\ud800", "namespace": "team-a", "service-account": "app"}',
         "application/json", 400, "invalid_request"),
        (b"[" * 100_000, "application/json", 413, "payload_too_large"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "invalid_request"),
        (b"data=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (json.dumps(BODY).encode(), "text/plain", 415, "unsupported_media_type"),
        (json.dumps(BODY).encode(), None, 415, "unsupported_media_type"),
        (b"\xff\xfe", "application/json", 400, "invalid_request"),
    ],
)  # fmt: skip
def test_raw_bodies_never_cause_a_500(
    client: FlaskClient, data: bytes, content_type: str | None, status: int, code: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/api/v1/encrypt", data=data, headers=headers)
    assert (response.status_code, response.get_json()["error"]) == (status, code)


def test_a_json_content_type_with_charset_is_accepted(client: FlaskClient) -> None:
    response = client.post(
        "/api/v1/encrypt",
        data=json.dumps(BODY),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/api/v1/encrypt", 405), ("POST", "/nope", 404), ("GET", "/api/v1/decrypt", 404)],
)
def test_unknown_routes_and_methods_are_json_errors(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json
    assert "error" in response.get_json()


def test_service_routes_answer(client: FlaskClient) -> None:
    assert client.get("/api/v1/isAlive").get_json() is True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    _encrypt(client, BODY)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'kamus_encrypt_total{outcome="ok"} 1.0' in metrics
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/encrypt" in document["paths"]


def test_responses_carry_a_request_id_and_no_store(client: FlaskClient) -> None:
    response = _encrypt(client, BODY, headers={"X-Request-Id": "abc-123"})
    # The id is always the server's own: a client's cannot stand in for it.
    assert len(response.headers["X-Request-Id"]) == 32
    assert response.headers["X-Request-Id"] != "abc-123"
    assert response.headers["Cache-Control"] == "no-store"


def test_default_service_account_can_be_allowed_by_the_operator(keyring: Keyring) -> None:
    settings = Settings(service="encryptor", keyring=keyring.to_json(),
                        allow_default_service_account=True)  # fmt: skip
    response = (
        create_app(settings)
        .test_client()
        .post("/api/v1/encrypt", json={**BODY, "service-account": "default"})
    )
    assert response.status_code == 200
