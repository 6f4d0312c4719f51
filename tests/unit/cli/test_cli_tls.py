"""kamus-cli --cert-fingerprint against a canned encryptor with a self-signed certificate."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from canned_server import CannedServer, Certificate, Reply

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode

CIPHERTEXT = "kamus:v1:team-a:api:k1:local:c2VjcmV0LWJ5dGVz"


def encrypt_args(url: str, *extra: str) -> list[str]:
    return ["encrypt", "-n", "team-a", "-a", "api", "-u", url, "-s", "secret", *extra]


def colon_separated(hex_digits: str) -> str:
    return ":".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2)).upper()


@pytest.mark.parametrize("spelling", [str.lower, colon_separated], ids=["hex", "openssl-style"])
def test_matching_pin_accepts_a_self_signed_certificate(
    tls_encryptor: CannedServer,
    certificate: Certificate,
    capsys: pytest.CaptureFixture[str],
    spelling: Callable[[str], str],
) -> None:
    tls_encryptor.queue(Reply(body=CIPHERTEXT))

    argv = encrypt_args(tls_encryptor.url, "--cert-fingerprint", spelling(certificate.sha256))
    assert main(argv, {}) == ExitCode.OK
    assert capsys.readouterr().out == CIPHERTEXT + "\n"


def test_wrong_pin_fails_with_the_tls_exit_code_before_sending_the_secret(
    tls_encryptor: CannedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = encrypt_args(tls_encryptor.url, "--cert-fingerprint", "ab" * 32)

    assert main(argv, {}) == ExitCode.TLS
    assert tls_encryptor.requests == []
    assert "TLS" in capsys.readouterr().err


def test_self_signed_certificate_without_pin_fails_ca_validation(
    tls_encryptor: CannedServer,
) -> None:
    assert main(encrypt_args(tls_encryptor.url), {}) == ExitCode.TLS
    assert tls_encryptor.requests == []


@pytest.mark.parametrize(
    "pin",
    [
        pytest.param("ab" * 16, id="md5-length"),
        pytest.param("zz" * 32, id="not-hex"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_pin_is_an_input_error(tls_encryptor: CannedServer, pin: str) -> None:
    argv = encrypt_args(tls_encryptor.url, "--cert-fingerprint", pin)

    assert main(argv, {}) == ExitCode.INPUT
    assert tls_encryptor.requests == []


def test_pin_with_a_plain_http_url_is_an_input_error(certificate: Certificate) -> None:
    argv = encrypt_args(
        "http://127.0.0.1:9", "--allow-insecure-url", "--cert-fingerprint", certificate.sha256
    )

    assert main(argv, {}) == ExitCode.INPUT


def test_sha1_pin_of_kamus_users_is_accepted_with_a_weakness_warning(
    tls_encryptor: CannedServer, certificate: Certificate, capsys: pytest.CaptureFixture[str]
) -> None:
    tls_encryptor.queue(Reply(body=CIPHERTEXT))

    argv = encrypt_args(tls_encryptor.url, "--cert-fingerprint", colon_separated(certificate.sha1))
    assert main(argv, {}) == ExitCode.OK

    out, err = capsys.readouterr()
    assert out == CIPHERTEXT + "\n"
    assert "warning: --cert-fingerprint is a SHA-1 fingerprint" in err
    assert "SHA-1 is weak" in err


def test_wrong_sha1_pin_fails_with_the_tls_exit_code(tls_encryptor: CannedServer) -> None:
    argv = encrypt_args(tls_encryptor.url, "--cert-fingerprint", "ab" * 20)

    assert main(argv, {}) == ExitCode.TLS
    assert tls_encryptor.requests == []


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_ca_bundle_trusts_the_self_signed_encryptor(
    tls_encryptor: CannedServer, certificate: Certificate, where: str
) -> None:
    tls_encryptor.queue(Reply(body=CIPHERTEXT))
    if where == "flag":
        argv, environ = (
            encrypt_args(tls_encryptor.url, "--ca-bundle", str(certificate.cert_path)),
            {},
        )
    else:
        argv, environ = (
            encrypt_args(tls_encryptor.url),
            {"KAMUS_CA_BUNDLE": str(certificate.cert_path)},
        )

    assert main(argv, environ) == ExitCode.OK
    assert len(tls_encryptor.requests) == 1


def test_pin_and_ca_bundle_together_are_an_input_error(
    tls_encryptor: CannedServer, certificate: Certificate
) -> None:
    argv = encrypt_args(
        tls_encryptor.url,
        "--cert-fingerprint", certificate.sha256,
        "--ca-bundle", str(certificate.cert_path),
    )  # fmt: skip

    assert main(argv, {}) == ExitCode.INPUT
