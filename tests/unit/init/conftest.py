"""Fixtures of the kamus-init tests: a canned decryptor, a token file and ConfigMap-like folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from canned_server import CannedServer, Certificate, self_signed_certificate, serve
from configmap_mounts import PREFIX, TOKEN, configmap_folder, echo


@pytest.fixture(autouse=True)
def direct_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep any proxy of the caller's environment away from the requests to 127.0.0.1."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def decryptor() -> Iterator[CannedServer]:
    """A canned Kamus decryptor on 127.0.0.1 that echoes the ciphertexts' plaintexts."""
    server = CannedServer()
    server.otherwise = echo
    with serve(server):
        yield server


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """A fresh self-signed certificate for 127.0.0.1."""
    return self_signed_certificate(tmp_path)


@pytest.fixture
def tls_decryptor(certificate: Certificate) -> Iterator[CannedServer]:
    """The echoing decryptor over https with the self-signed certificate."""
    server = CannedServer()
    server.otherwise = echo
    with serve(server, ssl_context=certificate.server_context()):
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A projected service-account token file."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def encrypted(tmp_path: Path) -> Path:
    """A ConfigMap mount holding two ciphertexts."""
    return configmap_folder(
        tmp_path / "encrypted",
        {"db-password": f"{PREFIX}hunter2-SENTINEL\n", "api.key": f"{PREFIX}abc-SENTINEL"},
    )


@pytest.fixture
def decrypted(tmp_path: Path) -> Path:
    """The output folder, an empty emptyDir."""
    path = tmp_path / "decrypted"
    path.mkdir()
    return path


@pytest.fixture
def environ(decryptor: CannedServer, token_file: Path) -> dict[str, str]:
    """The init container's environment: the decryptor URL and the token path."""
    return {"KAMUS_URL": decryptor.url + "/", "TOKEN_FILE_PATH": str(token_file)}
