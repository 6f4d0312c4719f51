"""Original Kamus ciphertexts: the published vector and the per-service-account derivation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kamus_kms.errors import ConfigurationError, InvalidCiphertextError
from kamus_kms.legacy import LegacyCiphertext, LegacyKamusKey, is_legacy
from kamus_kms.scope import Scope
from kamus_service.settings import load_settings

KAMUS_KEY = base64.b64decode("tWG4dk8ARsETnFL3jCf1xtMVe05imlx9vimER7iky2s=")
KAMUS_VECTOR = "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g=="


def _kamus_encrypt(key: bytes, plaintext: bytes) -> str:
    """What Kamus's RijndaelUtils.Encrypt produces (AES-CBC, PKCS#7, random IV)."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padded) + encryptor.finalize()
    return f"{base64.b64encode(iv).decode()}:{base64.b64encode(sealed).decode()}"


def _hkdf_expand_first_block(prk: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-Expand, first block: HMAC-SHA256(PRK, info || 0x01) — 32 bytes."""
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_kamus_published_vector_decrypts_to_hello() -> None:
    key = LegacyKamusKey(KAMUS_KEY, derive_per_service_account=False)
    assert key.open(LegacyCiphertext.parse(KAMUS_VECTOR), Scope("any", "one")) == b"hello"


def test_per_service_account_keys_follow_kamus_derivation() -> None:
    scope = Scope("team-a", "app")
    derived = _hkdf_expand_first_block(KAMUS_KEY, b"team-a:app")
    text = _kamus_encrypt(derived, "pässwörd".encode())
    key = LegacyKamusKey(KAMUS_KEY, derive_per_service_account=True)
    assert key.open(LegacyCiphertext.parse(text), scope) == "pässwörd".encode()
    assert _open_or_none(key, text, Scope("team-a", "other")) != "pässwörd".encode()


@pytest.mark.parametrize(
    "text",
    [
        "C4gChhspnTa5yVqYmSitrg== : tr0Ke6OGUaUa8KZgMJg14g==",
        "C4gChhsp nTa5yVqY\tmSitrg==:tr0Ke6OGUaUa8KZg\r\nMJg14g==",
        "\nC4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g = =\n",
    ],
    ids=["around-colon", "inside", "padding"],
)
def test_white_space_in_a_kamus_text_is_ignored_as_dotnet_did(text: str) -> None:
    key = LegacyKamusKey(KAMUS_KEY, derive_per_service_account=False)
    assert is_legacy(text)
    assert key.open(LegacyCiphertext.parse(text), Scope("any", "one")) == b"hello"


def test_a_kamus_key_with_white_space_is_read_as_dotnet_read_it() -> None:
    # The decryptor's setting: the base64 of Kamus's key, as an operator may have written it.
    key_text = "tWG4dk8ARsETnFL3jCf1xtMV\ne05imlx9vimER7iky2s ="
    settings = load_settings(
        "decryptor",
        {"KAMUS_DEV_MODE": "true", "KAMUS_LEGACY_KEY": key_text},
    )
    assert settings.legacy_key == KAMUS_KEY
    # Other characters stay errors, as they were for .NET.
    with pytest.raises(ConfigurationError, match="KAMUS_LEGACY_KEY must be base64"):
        load_settings("decryptor", {"KAMUS_DEV_MODE": "true", "KAMUS_LEGACY_KEY": key_text + "!"})


@pytest.mark.parametrize(
    "text",
    ["", "abc", "kamus:v1:local:a:b:k1:AAAA", "AAAA:AAAA", "C4gChhspnTa5yVqYmSitrg==:",
     "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg1", "!!!!:????"],
)  # fmt: skip
def test_anything_else_is_not_a_legacy_ciphertext(text: str) -> None:
    with pytest.raises(InvalidCiphertextError):
        LegacyCiphertext.parse(text)


def test_v1_texts_are_never_taken_for_legacy_ones() -> None:
    assert is_legacy(KAMUS_VECTOR)
    assert not is_legacy("kamus:v1:local:team-a:app:k1:AAB-R68V")


def _open_or_none(key: LegacyKamusKey, text: str, scope: Scope) -> bytes | None:
    # Unauthenticated CBC: a wrong key fails the padding check, or (rarely) yields garbage.
    try:
        return key.open(LegacyCiphertext.parse(text), scope)
    except InvalidCiphertextError:
        return None


def test_a_wrong_key_never_yields_the_secret() -> None:
    for _ in range(50):
        key = LegacyKamusKey(os.urandom(32), derive_per_service_account=False)
        assert _open_or_none(key, KAMUS_VECTOR, Scope("a", "b")) != b"hello"


def test_the_legacy_key_must_be_aes_256() -> None:
    with pytest.raises(ConfigurationError):
        LegacyKamusKey(b"short", derive_per_service_account=False)
