"""The Vault adapter without a server: configuration, key names, the extra, error mapping."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac.exceptions  # type: ignore[import-untyped]
import pytest
import requests

from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError
from kamus_kms.providers.vault import VaultTransitKms
from kamus_service.providers import remote_kms
from kamus_service.settings import load_settings

ADDR = "https://vault.example:8200"
WRAPPED = b"vault:v1:AAAA"


def _kms(**options: Any) -> VaultTransitKms:
    return VaultTransitKms(**{"addr": ADDR, "token": "t0ken", **options})


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"addr": "vault:8200"}, "KAMUS_VAULT_ADDR"),
        ({"token": ""}, "KAMUS_VAULT_TOKEN"),
        ({"mount": "tran sit"}, "KAMUS_VAULT_TRANSIT_MOUNT"),
        ({"mount": "a//b"}, "KAMUS_VAULT_TRANSIT_MOUNT"),
        ({"ca_cert": "/nonexistent/ca.pem"}, "KAMUS_VAULT_CA_CERT"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_configuration_is_refused_when_the_adapter_is_built(
    options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        _kms(**options)


def test_a_good_configuration_builds_without_calling_vault(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until TLS")
    kms = _kms(mount="/kv/kamus-transit/", ca_cert=str(ca), timeout=0.5)
    assert (kms.mount, kms.addr, kms.name) == ("kv/kamus-transit", ADDR, "vault")


@pytest.mark.parametrize(
    "key_name", ["", "-leading-dash", "a/b", "a b", "kämus", "x" * 129, "a:b", "a+b"]
)
def test_a_key_name_transit_cannot_hold_is_a_configuration_error(key_name: str) -> None:
    kms = _kms()
    with pytest.raises(ConfigurationError, match="cannot name a Vault transit key"):
        kms.check_key_name(key_name)
    with pytest.raises(ConfigurationError):
        kms.wrap(key_name, bytes(32), b"header")
    with pytest.raises(ConfigurationError):
        kms.ensure_key(key_name)


@pytest.mark.parametrize("key_name", ["kamus-shared", "k", "Team_1.key-2", "x" * 128])
def test_valid_key_names_pass(key_name: str) -> None:
    _kms().check_key_name(key_name)


def test_without_hvac_the_module_raises_importerror_and_settings_name_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)
    monkeypatch.setitem(sys.modules, "hvac.exceptions", None)
    monkeypatch.delitem(sys.modules, "kamus_kms.providers.vault")
    with pytest.raises(ImportError):
        importlib.import_module("kamus_kms.providers.vault")
    settings = load_settings(
        "encryptor",
        {
            "KAMUS_PROVIDER": "vault",
            "KAMUS_VAULT_ADDR": ADDR,
            "KAMUS_VAULT_TOKEN": "t0ken",
            "KAMUS_KMS_KEY": "k",
        },
    )
    with pytest.raises(ConfigurationError, match=r"pip install 'kamus-kms\[vault\]'"):
        remote_kms(settings)


class _Raising:
    """An hvac client stand-in whose every call raises one exception."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.secrets = self
        self.transit = self
        self.auth = self
        self.token = self

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return call


def _with_client(kms: VaultTransitKms, client: object) -> VaultTransitKms:
    kms._session = (os.getpid(), client)
    return kms


OPERATIONS: dict[str, Callable[[VaultTransitKms], object]] = {
    "wrap": lambda kms: kms.wrap("kamus-shared", bytes(32), b"header"),
    "unwrap": lambda kms: kms.unwrap("kamus-shared", WRAPPED, b"header"),
    "ensure_key": lambda kms: kms.ensure_key("kamus-0123"),
    "check_ready": lambda kms: kms.check_ready(),
}
ERRORS: list[tuple[BaseException, str]] = [
    (requests.ConnectTimeout(), "did not answer within 5 s"),
    (requests.ReadTimeout(), "did not answer within 5 s"),
    (requests.exceptions.SSLError(), "KAMUS_VAULT_CA_CERT"),
    (requests.ConnectionError(), "cannot connect"),
    (requests.exceptions.ChunkedEncodingError(), "ChunkedEncodingError"),
    (hvac.exceptions.Forbidden(errors=["permission denied"]), "lacks"),
    (hvac.exceptions.Unauthorized(), "invalid, expired or revoked"),
    (hvac.exceptions.RateLimitExceeded(), "throttling"),
    (hvac.exceptions.VaultDown(), "sealed"),
    (hvac.exceptions.VaultNotInitialized(), "uninitialized"),
    (hvac.exceptions.InternalServerError(), "InternalServerError"),
    (hvac.exceptions.BadGateway(), "BadGateway"),
    (hvac.exceptions.UnexpectedError(), "UnexpectedError"),
]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(("error", "message"), ERRORS, ids=lambda e: type(e).__name__)
def test_every_transport_and_server_error_is_unavailable(
    operation: str, error: BaseException, message: str
) -> None:
    with pytest.raises(UnavailableError, match=message) as raised:
        OPERATIONS[operation](_with_client(_kms(), _Raising(error)))
    assert raised.value.__cause__ is error
    assert "t0ken" not in str(raised.value)


@pytest.mark.parametrize(
    ("operation", "error", "expected", "message"),
    [
        ("unwrap", hvac.exceptions.InvalidRequest(errors=["cipher: message authentication failed"]),
         InvalidCiphertextError, "invalid"),
        ("unwrap", hvac.exceptions.InvalidRequest(errors=["encryption key not found"]),
         InvalidCiphertextError, "invalid"),
        ("unwrap", hvac.exceptions.InvalidPath(), UnavailableError, "no transit engine"),
        ("wrap", hvac.exceptions.InvalidPath(), UnavailableError, "does not exist"),
        ("wrap", hvac.exceptions.InvalidRequest(errors=["1 error occurred:\n\t* bad thing\n\n"]),
         UnavailableError, "refused to read transit/keys/kamus-shared: bad thing$"),
        ("ensure_key", hvac.exceptions.InvalidPath(), UnavailableError, "no transit engine"),
    ],
)  # fmt: skip
def test_requests_vault_refuses_map_by_operation(
    operation: str, error: BaseException, expected: type[Exception], message: str
) -> None:
    with pytest.raises(expected, match=message):
        OPERATIONS[operation](_with_client(_kms(), _Raising(error)))


class _Answering:
    """An hvac client stand-in answering every call with one response."""

    def __init__(self, response: object) -> None:
        self.response = response
        self.secrets = self
        self.transit = self

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: self.response


@pytest.mark.parametrize(
    "response",
    [None, {}, {"data": None}, {"data": {"type": "aes256-gcm96", "ciphertext": "garbage"}},
     {"data": {"type": "aes256-gcm96", "ciphertext": 7}}],
)  # fmt: skip
def test_an_unexpected_answer_to_encrypt_is_unavailable(response: object) -> None:
    kms = _with_client(_kms(), _Answering(response))
    with pytest.raises(UnavailableError, match="unexpected answer"):
        kms.wrap("kamus-shared", bytes(32), b"header")


@pytest.mark.parametrize("plaintext", [None, "not base64!", 7])
def test_an_undecodable_answer_to_decrypt_is_invalid(plaintext: object) -> None:
    kms = _with_client(_kms(), _Answering({"data": {"plaintext": plaintext}}))
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap("kamus-shared", WRAPPED, b"header")


@pytest.mark.parametrize(
    "wrapped", [b"", b"vault:v1:", b"vault:v0:AAAA", b"vault:vx:AAAA", b"AAAA", b"vault:v1:A A"]
)
def test_a_malformed_wrapped_key_is_refused_without_a_call(wrapped: bytes) -> None:
    kms = _with_client(_kms(), _Raising(AssertionError("Vault must not be called")))
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap("kamus-shared", wrapped, b"header")
