"""Both services under real gunicorn: Kamus-compatible HTTP, chunked bodies, fail-closed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from gunicorn_process import Service, gunicorn
from prometheus_client.parser import text_string_to_metric_families

from kamus_dev.kubeconfig import write_kubeconfig

TokenFactory = Callable[..., str]

BODY = {"data": "hello", "namespace": "team-a", "service-account": "app"}


def _chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_chunked_request_bodies_work_like_kamus_clients_send_them(encryptor: Service) -> None:
    response = requests.post(
        f"{encryptor.url}/api/v1/encrypt",
        data=_chunks(json.dumps(BODY).encode()),  # a generator makes requests send it chunked
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text.startswith("kamus:v1:local:team-a:app:")


def test_an_oversized_chunked_body_is_413_not_500(encryptor: Service) -> None:
    huge = json.dumps({**BODY, "data": "x" * 2_000_000}).encode()
    response = requests.post(
        f"{encryptor.url}/api/v1/encrypt",
        data=_chunks(huge, 65536),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")


def test_decrypt_round_trip_through_token_review(
    encryptor: Service, decryptor: Service, token: TokenFactory
) -> None:
    ciphertext = requests.post(f"{encryptor.url}/api/v1/encrypt", json=BODY, timeout=10).text
    response = requests.post(
        f"{decryptor.url}/api/v1/decrypt",
        json={"data": ciphertext},
        headers={"Authorization": f"Bearer {token('team-a', 'app', pod='app-7d4b9')}"},
        timeout=10,
    )
    assert (response.status_code, response.text) == (200, "hello")
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("audiences", "status", "code"),
    [
        ((), 401, "unauthorized"),  # the API server's default audience only
        (("vault",), 401, "unauthorized"),
        (("kamus",), 200, None),
        (("vault", "kamus"), 200, None),
    ],
)
def test_only_tokens_for_the_kamus_audience_decrypt(
    encryptor: Service,
    decryptor: Service,
    token: TokenFactory,
    audiences: tuple[str, ...],
    status: int,
    code: str | None,
) -> None:
    ciphertext = requests.post(f"{encryptor.url}/api/v1/encrypt", json=BODY, timeout=10).text
    response = requests.post(
        f"{decryptor.url}/api/v1/decrypt",
        json={"data": ciphertext},
        headers={"Authorization": f"Bearer {token('team-a', 'app', audiences)}"},
        timeout=10,
    )
    assert response.status_code == status
    if code:
        assert response.json()["error"] == code
        assert "hello" not in response.text


@pytest.mark.parametrize("service", ["encryptor", "decryptor"])
def test_health_metrics_and_openapi_routes(service: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(service).url
    assert requests.get(f"{url}/api/v1/isAlive", timeout=10).json() is True
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    assert "kamus_http_requests_total" in requests.get(f"{url}/metrics", timeout=10).text
    assert requests.get(f"{url}/openapi.json", timeout=10).json()["openapi"].startswith("3.")


@pytest.fixture
def orphan_decryptor(
    service_env: dict[str, str], tmp_path: Path, authority: object
) -> Iterator[Service]:
    """A decryptor whose kubeconfig points at a port where nothing listens."""
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, "http://127.0.0.1:9", "reviewer-token")
    env = {**service_env, "KAMUS_KUBECONFIG": str(kubeconfig)}
    with gunicorn("kamus_decryptor:create_app()", env, tmp_path / "logs", workers=1) as service:
        yield service


def test_token_review_unreachable_is_503_and_never_decrypts(
    encryptor: Service, orphan_decryptor: Service, token: TokenFactory
) -> None:
    ciphertext = requests.post(f"{encryptor.url}/api/v1/encrypt", json=BODY, timeout=10).text
    for _ in range(3):
        response = requests.post(
            f"{orphan_decryptor.url}/api/v1/decrypt",
            json={"data": ciphertext},
            headers={"Authorization": f"Bearer {token('team-a', 'app')}"},
            timeout=10,
        )
        assert (response.status_code, response.json()["error"]) == (503, "unavailable")
        assert response.headers["Retry-After"]
    readyz = requests.get(f"{orphan_decryptor.url}/readyz?verbose", timeout=10)
    assert readyz.status_code == 200  # reported, not enforced: docs/DEPLOY.md, "Readiness"
    assert readyz.json()["dependencies"]["tokenreview"]["error"] == "unavailable"
    audit = [json.loads(line) for line in orphan_decryptor.stdout.read_text().splitlines()]
    outcomes = [(e["outcome"], e["reason"]) for e in audit if e.get("audit")]
    assert outcomes == [("unavailable", "unavailable")] * 3


def test_a_service_without_keys_refuses_to_start(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="KAMUS_KEYRING or KAMUS_KEYRING_FILE is required"),
        gunicorn("kamus_encryptor:create_app()", {}, tmp_path, workers=1),
    ):
        pass


def _alive_count(url: str) -> float:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.headers["Content-Type"].count("charset") == 1
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if (sample.name, sample.labels.get("route")) == (
                "kamus_http_requests_total",
                "/api/v1/isAlive",
            ):
                return sample.value
    return 0.0


def test_one_scrape_shows_the_whole_pods_numbers_whichever_worker_answers(
    encryptor: Service,
) -> None:
    before = {_alive_count(encryptor.url) for _ in range(6)}
    assert len(before) == 1
    for _ in range(30):  # a new connection each: both worker processes take some
        assert requests.get(f"{encryptor.url}/api/v1/isAlive", timeout=10).status_code == 200
    after = {_alive_count(encryptor.url) for _ in range(6)}
    assert after == {before.pop() + 30}
