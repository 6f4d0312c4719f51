"""Cross-tenant isolation: 4 namespaces x 4 service accounts, each token against each ciphertext."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
from gunicorn_process import Service

TokenFactory = Callable[..., str]
NAMESPACES = ("shop", "billing", "search", "ops")
ACCOUNTS = ("api", "worker", "cron", "db.migrations")


def test_every_off_diagonal_decrypt_is_denied_and_every_diagonal_one_allowed(
    encryptor: Service, decryptor: Service, token: TokenFactory
) -> None:
    scopes = list(itertools.product(NAMESPACES, ACCOUNTS))
    ciphertexts = {
        scope: requests.post(
            f"{encryptor.url}/api/v1/encrypt",
            json={"data": f"secret-of-{scope[0]}/{scope[1]}", "namespace": scope[0],
                  "service-account": scope[1]},
            timeout=10,
        ).text
        for scope in scopes
    }  # fmt: skip
    tokens = {scope: token(*scope) for scope in scopes}

    def attempt(pair: tuple[tuple[str, str], tuple[str, str]]) -> tuple[int, str]:
        caller, owner = pair
        response = requests.post(
            f"{decryptor.url}/api/v1/decrypt",
            json={"data": ciphertexts[owner]},
            headers={"Authorization": f"Bearer {tokens[caller]}"},
            timeout=30,
        )
        return response.status_code, response.text

    pairs = list(itertools.product(scopes, scopes))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip(pairs, pool.map(attempt, pairs), strict=True))
    for (caller, owner), (status, body) in results.items():
        if caller == owner:
            assert (status, body) == (200, f"secret-of-{owner[0]}/{owner[1]}")
        else:
            assert status == 403, (caller, owner, status)
            assert "secret-of" not in body
    assert len(results) == 256
