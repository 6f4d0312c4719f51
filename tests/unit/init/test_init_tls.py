"""kamus-init over https: a CA bundle from --ca-bundle or $KAMUS_CA_BUNDLE."""

from __future__ import annotations

from pathlib import Path

import pytest
from canned_server import CannedServer, Certificate

from kamus_client.exitcodes import ExitCode
from kamus_init.main import main


def tls_environ(server: CannedServer, token_file: Path, **extra: str) -> dict[str, str]:
    return {"KAMUS_URL": server.url, "TOKEN_FILE_PATH": str(token_file), **extra}


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_ca_bundle_trusts_the_self_signed_decryptor(
    encrypted: Path,
    decrypted: Path,
    token_file: Path,
    tls_decryptor: CannedServer,
    certificate: Certificate,
    where: str,
) -> None:
    argv = ["-e", str(encrypted), "-d", str(decrypted), "-f", "files"]
    if where == "flag":
        argv += ["--ca-bundle", str(certificate.cert_path)]
        environ = tls_environ(tls_decryptor, token_file)
    else:
        environ = tls_environ(tls_decryptor, token_file, KAMUS_CA_BUNDLE=str(certificate.cert_path))

    assert main(argv, environ) == 0
    assert (decrypted / "db-password").read_text() == "hunter2-SENTINEL"


def test_without_the_ca_bundle_the_self_signed_decryptor_fails_tls_and_gets_no_token(
    encrypted: Path, decrypted: Path, token_file: Path, tls_decryptor: CannedServer
) -> None:
    argv = ["-e", str(encrypted), "-d", str(decrypted)]

    assert main(argv, tls_environ(tls_decryptor, token_file)) == ExitCode.TLS
    assert tls_decryptor.requests == []
    assert list(decrypted.iterdir()) == []


def test_missing_ca_bundle_is_an_input_error(
    encrypted: Path, decrypted: Path, token_file: Path, tls_decryptor: CannedServer
) -> None:
    argv = ["-e", str(encrypted), "-d", str(decrypted), "--ca-bundle", str(decrypted / "no.pem")]

    assert main(argv, tls_environ(tls_decryptor, token_file)) == ExitCode.INPUT
