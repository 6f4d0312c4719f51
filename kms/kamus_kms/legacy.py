"""Ciphertexts of the original Kamus (C#/Node), opened only to migrate them to v1.

Format: ``base64(iv) ":" base64(ciphertext)`` — AES-256-CBC with PKCS#7 padding, no
authentication. The key is either one global key, or (Kamus's `useKeyDerivation`) per service
account: HKDF-SHA256 *expand only*, with the global key as the pseudorandom key and the UTF-8 of
``"<namespace>:<service-account>"`` as info, 32 bytes.

These ciphertexts name no scope and carry no tag. Kamus for Python therefore opens them only when
an operator configures the legacy key, only for the scope the caller's token proves (with a global
key any service account could open any of them, exactly as in Kamus), and only to serve the
migration: `rewrap` turns them into v1. Success versus failure is an oracle on CBC padding, which
the decryptor's failure rate limit slows down but does not remove: remove the legacy key once
everything is rewrapped.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from kamus_kms.errors import ConfigurationError, InvalidCiphertextError
from kamus_kms.scope import Scope

PROVIDER_NAME = "kamus-legacy"
_FORMAT = re.compile(r"[A-Za-z0-9+/]+={0,2}:[A-Za-z0-9+/]+={0,2}")
_MAX_CHARS = 1 << 20
# .NET's Convert.FromBase64String, which Kamus used for its keys and ciphertexts, skips these
# anywhere in its input; texts and keys that worked with Kamus must work here.
_DOTNET_WHITESPACE = str.maketrans("", "", " \t\r\n")


def dotnet_base64(text: str) -> bytes:
    """Decode base64 as .NET's Convert.FromBase64String does: space, tab, CR and LF ignored
    anywhere, everything else strict; binascii.Error otherwise."""
    return base64.b64decode(text.translate(_DOTNET_WHITESPACE), validate=True)


def is_legacy(text: str) -> bool:
    """True when `text` has the shape of an original Kamus ciphertext (white space ignored)."""
    if len(text) > _MAX_CHARS:
        return False
    return _FORMAT.fullmatch(text.translate(_DOTNET_WHITESPACE)) is not None


@dataclass(frozen=True, slots=True)
class LegacyCiphertext:
    """A parsed original Kamus ciphertext."""

    iv: bytes
    sealed: bytes

    @classmethod
    def parse(cls, text: str) -> LegacyCiphertext:
        """Parse `iv:ciphertext`; InvalidCiphertextError for anything else."""
        if not is_legacy(text):
            raise InvalidCiphertextError
        iv_text, sealed_text = text.split(":")
        try:
            iv = dotnet_base64(iv_text)
            sealed = dotnet_base64(sealed_text)
        except binascii.Error as exc:
            raise InvalidCiphertextError from exc
        if len(iv) != 16 or not sealed or len(sealed) % 16:
            raise InvalidCiphertextError
        return cls(iv, sealed)


class LegacyKamusKey:
    """The original Kamus AES key, global or derived per service account."""

    def __init__(self, key: bytes, *, derive_per_service_account: bool) -> None:
        if len(key) != 32:
            raise ConfigurationError("the legacy Kamus key must be 32 bytes (base64 of AES-256)")
        self._key = key
        self.derive_per_service_account = derive_per_service_account

    def _key_for(self, scope: Scope) -> bytes:
        if not self.derive_per_service_account:
            return self._key
        info = f"{scope.namespace}:{scope.service_account}".encode()
        return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(self._key)

    def open(self, ciphertext: LegacyCiphertext, caller: Scope) -> bytes:
        """The plaintext, for the caller's scope; InvalidCiphertextError on any failure."""
        decryptor = Cipher(
            algorithms.AES(self._key_for(caller)), modes.CBC(ciphertext.iv)
        ).decryptor()
        padded = decryptor.update(ciphertext.sealed) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError as exc:
            raise InvalidCiphertextError from exc
