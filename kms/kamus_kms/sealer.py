"""Sealing and opening v1 ciphertexts with any key provider."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from kamus_kms.ciphertext import NONCE_BYTES, Ciphertext, header_text
from kamus_kms.errors import InvalidCiphertextError, PayloadTooLargeError, ScopeMismatchError
from kamus_kms.padding import pad, unpad
from kamus_kms.provider import KeyProvider
from kamus_kms.scope import Scope

DEFAULT_MAX_PLAINTEXT = 64 * 1024
DEFAULT_PADDING_BUCKET = 32


@dataclass(frozen=True, slots=True)
class Opened:
    """A successfully opened ciphertext: the plaintext and what the header said."""

    plaintext: bytes
    ciphertext: Ciphertext


def cluster_suffix(cluster: str) -> bytes:
    """What a cluster name adds to the associated data: nothing when unset (docs/FORMAT.md)."""
    return b"\x00cluster:" + cluster.encode("ascii") if cluster else b""


class Sealer:
    """Encrypts plaintext for a scope and opens ciphertexts, delegating keys to a provider."""

    def __init__(
        self,
        provider: KeyProvider,
        *,
        max_plaintext: int = DEFAULT_MAX_PLAINTEXT,
        padding_bucket: int = DEFAULT_PADDING_BUCKET,
        cluster: str = "",
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.provider = provider
        self.max_plaintext = max_plaintext
        self.padding_bucket = padding_bucket
        # Not in the header (so it costs nothing to read), but authenticated: a ciphertext sealed
        # in one cluster does not open in another, even with the same master key and scope.
        self._cluster_suffix = cluster_suffix(cluster)
        # Injected so the committed test vectors can be reproduced byte for byte.
        self._random = random

    def seal(self, plaintext: bytes, scope: Scope) -> str:
        """The v1 ciphertext of `plaintext`, openable only for `scope`."""
        if len(plaintext) > self.max_plaintext:
            raise PayloadTooLargeError(
                f"the secret is {len(plaintext)} bytes; the limit is {self.max_plaintext}"
            )
        key_id = self.provider.current_key_id(scope)
        aad = header_text(self.provider.name, scope, key_id).encode("ascii") + self._cluster_suffix
        data_key = self.provider.new_data_key(scope, key_id, aad)
        nonce = self._random(NONCE_BYTES)
        sealed = self.provider.aead(data_key.key).encrypt(
            nonce, pad(plaintext, self.padding_bucket), aad
        )
        return Ciphertext(
            self.provider.name, scope, key_id, data_key.wrapped, nonce, sealed
        ).encode()

    def open(self, text: str, caller: Scope | None = None) -> Opened:
        """Open a ciphertext; when `caller` is given, the header must name that scope.

        Raises InvalidCiphertextError for every malformed, tampered or unopenable ciphertext,
        ScopeMismatchError when the header names another scope than the caller's.
        """
        ciphertext = Ciphertext.parse(text)
        return self.open_parsed(ciphertext, caller)

    def open_parsed(self, ciphertext: Ciphertext, caller: Scope | None = None) -> Opened:
        """Like open(), for a ciphertext already parsed (to audit its header first)."""
        if caller is not None and ciphertext.scope != caller:
            raise ScopeMismatchError(
                f"the ciphertext is for {ciphertext.scope}, not for the caller's {caller}"
            )
        if ciphertext.provider != self.provider.name:
            raise InvalidCiphertextError
        aad = ciphertext.associated_data + self._cluster_suffix
        key = self.provider.recover_data_key(
            ciphertext.scope, ciphertext.key_id, ciphertext.wrapped_key, aad
        )
        try:
            padded = self.provider.aead(key).decrypt(ciphertext.nonce, ciphertext.sealed, aad)
        except InvalidTag as exc:
            raise InvalidCiphertextError from exc
        return Opened(unpad(padded), ciphertext)
