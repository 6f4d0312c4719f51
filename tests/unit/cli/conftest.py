"""Fixtures of the kamus-cli tests: a canned encryptor over http and over https."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canned_server import (
    CannedServer,
    Certificate,
    self_signed_certificate,
    serve,
)


@pytest.fixture(autouse=True)
def direct_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep any proxy of the caller's environment away from the requests to 127.0.0.1."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def encryptor() -> Iterator[CannedServer]:
    """A canned Kamus encryptor on 127.0.0.1 over plain http."""
    server = CannedServer()
    with serve(server):
        yield server


@pytest.fixture
def decryptor() -> Iterator[CannedServer]:
    """A canned Kamus decryptor on 127.0.0.1 over plain http."""
    server = CannedServer()
    with serve(server):
        yield server


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """A fresh self-signed certificate for 127.0.0.1."""
    return self_signed_certificate(tmp_path)


@pytest.fixture
def tls_encryptor(certificate: Certificate) -> Iterator[CannedServer]:
    """A canned Kamus encryptor on 127.0.0.1 over https with the self-signed certificate."""
    server = CannedServer()
    with serve(server, ssl_context=certificate.server_context()):
        yield server


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[bytes], None]:
    """Feed bytes to the program's standard input, as a pipe would."""

    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    return feed
