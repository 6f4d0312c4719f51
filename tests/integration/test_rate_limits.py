"""The failure limit under real gunicorn: it stops the caller that fails, never a neighbour that
shares its address (pods of one node, SNAT, an ingress) and whose token verifies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from gunicorn_process import Service, gunicorn

pytestmark = pytest.mark.integration

LIMIT = 5


@pytest.fixture(scope="module")
def limited(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A decryptor allowing LIMIT failures a minute, one worker (so one count sees them all)."""
    env = {**service_env, "KAMUS_RATE_LIMIT_FAILURES_PER_MINUTE": str(LIMIT)}
    logs: Path = tmp_path_factory.mktemp("limited")
    with gunicorn("kamus_decryptor:create_app()", env, logs, workers=1) as service:
        yield service


def _decrypt(service: Service, ciphertext: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(
        f"{service.url}/api/v1/decrypt", json={"data": ciphertext}, headers=headers, timeout=10
    )


def test_one_callers_failures_never_lock_out_another_caller_at_the_same_address(
    limited: Service, encryptor: Service, token: Callable[..., str]
) -> None:
    body = {"data": "neighbour's secret", "namespace": "team-a", "service-account": "app"}
    ciphertext = requests.post(f"{encryptor.url}/api/v1/encrypt", json=body, timeout=10).text
    broken = token("team-b", "app", pod="broken-1")  # a pod asking for another scope's secret
    statuses = [_decrypt(limited, ciphertext, broken).status_code for _ in range(LIMIT + 3)]
    assert statuses == [403] * LIMIT + [429] * 3
    refused = _decrypt(limited, ciphertext, broken)
    assert int(refused.headers["Retry-After"]) > 0
    # Junk from the same address: each a 401 (limited per token), none touching the neighbour.
    for n in range(3 * LIMIT):
        assert _decrypt(limited, ciphertext, f"junk-{n}").status_code == 401
    # Both callers come from 127.0.0.1, as pods on one node or behind SNAT would.
    neighbour = _decrypt(limited, ciphertext, token("team-a", "app", pod="neighbour-1"))
    assert (neighbour.status_code, neighbour.text) == (200, "neighbour's secret")


def test_requests_without_a_token_are_limited_by_address(limited: Service) -> None:
    statuses = [_decrypt(limited, "kamus:v1:x", None).status_code for _ in range(LIMIT + 1)]
    assert statuses == [401] * LIMIT + [429]
