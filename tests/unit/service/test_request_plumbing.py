"""The plumbing every request goes through: request line, route labels, metrics, timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from reviewer_double import StaticReviewer

from kamus_decryptor import create_app as decryptor_app
from kamus_encryptor import create_app
from kamus_kms.keyring import Keyring
from kamus_service import logs
from kamus_service.settings import LogLevel, Settings


@pytest.fixture
def registry() -> CollectorRegistry:
    """The metrics registry of the app under test."""
    return CollectorRegistry()


@pytest.fixture
def app(keyring: Keyring, registry: CollectorRegistry) -> Flask:
    """An encryptor logging every request."""
    settings = Settings(service="encryptor", keyring=keyring.to_json(), log_level=LogLevel.INFO)
    return create_app(settings, registry=registry)


def _request_lines(out: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request"]


def test_each_request_is_one_line_with_its_route_status_and_id(
    app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    client = app.test_client()
    ok = client.get("/healthz", headers={"X-Request-Id": "trace-1"})
    missing = client.get("/no/such/route?token=abc")
    wrong_method = client.open("/api/v1/encrypt", method="BREW")
    (first, second, third) = _request_lines(capsys.readouterr().out)
    assert first["route"] == "/healthz"
    assert first["status"] == 200
    # The server's own id, and the client's beside it (a client could forge any id).
    assert first["request_id"] == ok.headers["X-Request-Id"] != "trace-1"
    assert first["client_request_id"] == "trace-1"
    # Unknown paths are one label, and nothing of the query string is kept.
    assert second["route"] == "unmatched"
    assert second["status"] == 404
    assert "abc" not in json.dumps(second)
    assert missing.headers["X-Request-Id"] == second["request_id"]
    assert len(str(second["request_id"])) == 32
    assert third["status"] == 405
    assert third["method"] == "BREW"
    assert wrong_method.headers["Cache-Control"] == "no-store"
    assert wrong_method.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["//api/v1/encrypt", "/api//v1/encrypt", "///api/v1//encrypt"])
def test_path_variants_the_router_serves_count_under_their_route(
    app: Flask, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json"}
    body = b'{"data": "x", "namespace": "a", "service-account": "b"}'
    app.test_client().open(environ_overrides=environ, data=body)
    (line,) = _request_lines(capsys.readouterr().out)
    assert line["route"] == "/api/v1/encrypt"


def test_generated_request_ids_differ(app: Flask) -> None:
    client = app.test_client()
    ids = {client.get("/healthz").headers["X-Request-Id"] for _ in range(50)}
    assert len(ids) == 50


def test_metric_labels_stay_bounded_whatever_clients_send(
    app: Flask, registry: CollectorRegistry
) -> None:
    client = app.test_client()
    for i in range(20):
        client.open(f"/random/{i}", method=f"M{i}")
    client.get("/healthz")
    samples = [
        sample.labels
        for metric in registry.collect()
        if metric.name == "kamus_http_requests"
        for sample in metric.samples
        if sample.name == "kamus_http_requests_total"
    ]
    assert {(s["route"], s["method"]) for s in samples} == {
        ("unmatched", "other"),
        ("/healthz", "GET"),
    }


@pytest.mark.parametrize(
    "moment", [0.0, 1_795_000_000.0, 1_795_000_000.9996, 1_795_000_059.5, 4_102_444_799.001]
)
def test_timestamps_are_iso_8601_utc_with_milliseconds(
    moment: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kamus_service.logs.time.time", lambda: moment)
    expected = datetime.fromtimestamp(moment, UTC)
    expected = expected.replace(microsecond=expected.microsecond // 1000 * 1000)
    assert datetime.fromisoformat(logs.timestamp()) == expected
    assert logs.timestamp().endswith("+00:00")


@pytest.mark.parametrize("service", ["encryptor", "decryptor"])
def test_kamus_monitoring_answers_are_byte_for_byte_kamus(service: str, keyring: Keyring) -> None:
    """Kamus's ASP.NET Core answered `true` (JSON, no line break) and `welcome` (plain text)."""
    if service == "encryptor":
        app = create_app(Settings(service="encryptor", keyring=keyring.to_json()))
    else:
        settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32)
        app = decryptor_app(settings, reviewer=StaticReviewer())
    client = app.test_client()
    alive = client.get("/api/v1/isAlive")
    assert (alive.status_code, alive.data) == (200, b"true")
    assert alive.headers["Content-Type"] == "application/json; charset=utf-8"
    root = client.get("/")
    assert (root.status_code, root.data) == (200, b"welcome")
    assert root.headers["Content-Type"] == "text/plain; charset=utf-8"
