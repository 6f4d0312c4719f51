"""Fixtures: the development token authority served in a thread, and real Kubernetes clients."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kamus_dev.authority import ManualClock, TokenAuthority, create_authority_app, serve_in_thread
from kamus_dev.kubeconfig import mint_token, write_kubeconfig
from kamus_dev.tokens import generate_signing_key

# 2027-01-15T08:00:00Z: far from the real time, so nothing passes by accident of the wall clock.
START = 1_800_000_000.0


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    """One RSA key for the session, because generating one per test is slow."""
    return generate_signing_key()


@pytest.fixture
def clock() -> ManualClock:
    """The authority's clock, pinned at START."""
    return ManualClock(START)


@pytest.fixture
def authority(signing_key: rsa.RSAPrivateKey, clock: ManualClock) -> TokenAuthority:
    """A token authority with the session key and the manual clock, and the pod shop/app-7d9."""
    created = TokenAuthority(signing_key=signing_key, clock=clock)
    created.create_pod("shop", "app-7d9")
    return created


@pytest.fixture
def server_url(authority: TokenAuthority) -> Iterator[str]:
    """The authority served on 127.0.0.1."""
    with serve_in_thread(create_authority_app(authority)) as url:
        yield url


@pytest.fixture
def mint(server_url: str, authority: TokenAuthority) -> Callable[..., str]:
    """mint_token bound to the served authority and its admin token."""
    return functools.partial(mint_token, server_url, authority.admin_token)


@pytest.fixture
def api_client(tmp_path: Path, server_url: str) -> Iterator[Callable[[str | None], Any]]:
    """Makes a kubernetes ApiClient from a kubeconfig holding the given token (None: anonymous)."""
    clients: list[Any] = []

    def make(token: str | None) -> Any:
        path = tmp_path / f"kubeconfig-{len(clients)}"
        write_kubeconfig(path, server_url, token)
        clients.append(
            kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(path)
            )
        )
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def reviewer(api_client: Callable[[str | None], Any], authority: TokenAuthority) -> Any:
    """The AuthenticationV1Api of a caller holding the admin token."""
    return kubernetes.client.AuthenticationV1Api(api_client(authority.admin_token))
