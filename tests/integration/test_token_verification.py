"""Token verification against the token authority, counting its TokenReview calls."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from gunicorn_process import Service, gunicorn

from kamus_dev.authority import TokenAuthority
from kamus_dev.tokens import TokenSigner, generate_signing_key

TokenFactory = Callable[..., str]
BODY = {"data": "counted", "namespace": "team-c", "service-account": "app"}


@pytest.fixture(scope="module")
def one_worker(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A decryptor with one worker process, so one cache serves every request."""
    logs = tmp_path_factory.mktemp("one-worker")
    with gunicorn("kamus_decryptor:create_app()", service_env, logs, workers=1) as service:
        yield service


@pytest.fixture(scope="module")
def hybrid(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A decryptor in hybrid mode: offline JWKS check before TokenReview."""
    env = {**service_env, "KAMUS_TOKEN_VERIFICATION": "hybrid"}
    logs = tmp_path_factory.mktemp("hybrid")
    with gunicorn("kamus_decryptor:create_app()", env, logs, workers=1) as service:
        yield service


@pytest.fixture(scope="module")
def ciphertext(encryptor: Service) -> str:
    """A ciphertext for team-c/app."""
    return requests.post(f"{encryptor.url}/api/v1/encrypt", json=BODY, timeout=10).text


def _decrypt(service: Service, ciphertext: str, token: str) -> requests.Response:
    return requests.post(
        f"{service.url}/api/v1/decrypt",
        json={"data": ciphertext},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _audit(service: Service) -> list[dict[str, Any]]:
    lines = service.stdout.read_text("utf-8").splitlines()
    return [
        e for e in (json.loads(line) for line in lines if line.startswith("{")) if e.get("audit")
    ]


def test_one_hundred_decrypts_with_one_token_cost_one_review(
    one_worker: Service, ciphertext: str, token: TokenFactory, authority: TokenAuthority
) -> None:
    minted = token("team-c", "app")
    before = authority.tokenreview_calls
    for _ in range(100):
        assert _decrypt(one_worker, ciphertext, minted).text == "counted"
    assert authority.tokenreview_calls - before == 1


def test_a_burst_of_concurrent_decrypts_with_one_token_costs_one_review(
    one_worker: Service, ciphertext: str, token: TokenFactory, authority: TokenAuthority
) -> None:
    minted = token("team-c", "app")
    before = authority.tokenreview_calls
    with ThreadPoolExecutor(max_workers=16) as pool:
        texts = list(pool.map(lambda _: _decrypt(one_worker, ciphertext, minted).text, range(48)))
    assert texts == ["counted"] * 48
    assert authority.tokenreview_calls - before == 1


@pytest.mark.parametrize("fault", ["error500", ("slow", 3.0)], ids=["answers-500", "too-slow"])
def test_a_failing_token_authority_means_503_every_time_and_no_decrypt(
    one_worker: Service,
    ciphertext: str,
    token: TokenFactory,
    authority: TokenAuthority,
    fault: Any,
) -> None:
    minted = token("team-c", "app")
    seen = len(_audit(one_worker))
    authority.fault = fault
    try:
        responses = [_decrypt(one_worker, ciphertext, minted) for _ in range(3)]
    finally:
        authority.fault = None
    for response in responses:
        assert (response.status_code, response.json()["error"]) == (503, "unavailable")
        assert "counted" not in response.text
        assert int(response.headers["Retry-After"]) > 0
    events = _audit(one_worker)[seen:]
    assert [(e["outcome"], e["reason"]) for e in events] == [("unavailable", "unavailable")] * 3
    assert _decrypt(one_worker, ciphertext, minted).text == "counted"  # recovers at once


def _foreign_token() -> str:
    signer = TokenSigner(generate_signing_key(), "https://kubernetes.default.svc.cluster.local")
    return signer.sign(
        namespace="team-c", service_account="app", service_account_uid="uid", audiences=["kamus"],
        issued_at=int(time.time()), expires_at=int(time.time()) + 3600,
    )  # fmt: skip


@pytest.mark.parametrize(
    "make_token",
    [
        lambda token: "garbage",
        lambda token: "a.b.c",
        lambda token: token("team-c", "app", ("not-kamus",)),
        lambda token: _foreign_token(),
    ],
    ids=["garbage", "not-a-jwt", "wrong-audience", "foreign-signer"],
)
def test_hybrid_mode_refuses_invalid_tokens_without_a_token_review(
    hybrid: Service,
    ciphertext: str,
    token: TokenFactory,
    authority: TokenAuthority,
    make_token: Callable[[TokenFactory], str],
) -> None:
    bad = make_token(token)
    before = authority.tokenreview_calls
    response = _decrypt(hybrid, ciphertext, bad)
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    assert authority.tokenreview_calls == before


def test_hybrid_mode_still_asks_token_review_for_plausible_tokens(
    hybrid: Service, ciphertext: str, token: TokenFactory, authority: TokenAuthority
) -> None:
    before = authority.tokenreview_calls
    assert _decrypt(hybrid, ciphertext, token("team-c", "app")).text == "counted"
    assert authority.tokenreview_calls == before + 1
