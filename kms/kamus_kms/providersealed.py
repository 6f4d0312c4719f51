"""Kamus's own secrets (private sealing keys, the audit signing key) kept sealed by the configured
key provider, so that they are never at rest in plaintext: only the provider's keys (local keyring,
KMS, HSM) open them.

    <provider>:<key id>:<base64url(len(wrapped) ‖ wrapped data key ‖ nonce ‖ AES-256-GCM)>

Each kind of secret has a reserved scope under the ``kamus-system`` namespace and associated data
of its own (naming the secret). No v1 ciphertext carries that associated data, so no request to the
decrypt API can open one, whoever runs as that scope.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag

from kamus_kms.ciphertext import NONCE_BYTES, b64url_decode, b64url_encode
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError
from kamus_kms.provider import KeyProvider
from kamus_kms.scope import Scope

_WRAPPED_LEN = struct.Struct(">H")


def seal(raw: bytes, provider: KeyProvider, scope: Scope, associated: bytes) -> str:
    """``raw`` sealed under a fresh data key of ``provider`` for ``scope``."""
    key_id = provider.current_key_id(scope)
    data_key = provider.new_data_key(scope, key_id, associated)
    nonce = os.urandom(NONCE_BYTES)
    sealed = provider.aead(data_key.key).encrypt(nonce, raw, associated)
    body = _WRAPPED_LEN.pack(len(data_key.wrapped)) + data_key.wrapped + nonce + sealed
    return f"{provider.name}:{key_id}:{b64url_encode(body)}"


def open_sealed(
    text: str, provider: KeyProvider, scope: Scope, associated: bytes, what: str
) -> bytes:
    """What :func:`seal` sealed; ConfigurationError naming ``what`` when it does not open."""
    name, _, rest = text.partition(":")
    key_id, _, body_text = rest.rpartition(":")
    if name != provider.name:
        raise ConfigurationError(
            f"{what} is sealed by the {name!r} provider, not {provider.name!r}"
        )
    try:
        body = b64url_decode(body_text)
        (length,) = _WRAPPED_LEN.unpack_from(body)
        wrapped = body[2 : 2 + length]
        nonce = body[2 + length : 2 + length + NONCE_BYTES]
        sealed = body[2 + length + NONCE_BYTES :]
        data_key = provider.recover_data_key(scope, key_id, wrapped, associated)
        return provider.aead(data_key).decrypt(nonce, sealed, associated)
    except (InvalidCiphertextError, InvalidTag, struct.error, ValueError) as exc:
        raise ConfigurationError(f"{what} does not open with this provider's keys") from exc
