"""The v1 ciphertext text format (byte for byte in docs/FORMAT.md).

    kamus:v1:<provider>:<namespace>:<service-account>:<key-id>:<body>

Everything up to and including the last ':' is the *header*; its ASCII bytes are the AEAD
associated data, so editing any header field makes decryption fail. ``body`` is unpadded
base64url of::

    u16be(len(wrapped_key)) || wrapped_key || nonce(12) || AES-256-GCM(padded plaintext) || tag(16)

``wrapped_key`` is empty for the local keyring (its data key is derived per scope) and holds the
KMS-wrapped data key for envelope providers. The text has no spaces, quotes or '$', so it is safe
unquoted in YAML, JSON strings and env files.
"""

from __future__ import annotations

import base64
import functools
import re
import struct
from dataclasses import dataclass

from kamus_kms.errors import InvalidCiphertextError, InvalidScopeError
from kamus_kms.scope import Scope

PREFIX = "kamus:v1:"
NONCE_BYTES = 12
TAG_BYTES = 16
_WRAPPED_LEN = struct.Struct(">H")
# Generous bound so a hostile string is rejected before any base64 work; the HTTP layer has its
# own, tighter body limit.
MAX_TEXT_CHARS = 1 << 20

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+=-]{0,255}")
_BODY = re.compile(r"[A-Za-z0-9_-]+")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as used for the body."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of b64url_encode: only the canonical encoding of some bytes is accepted."""
    if not _BODY.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidCiphertextError
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Non-canonical trailing bits would let two texts decode to one body: refuse them so that
    # every character of a ciphertext matters.
    if b64url_encode(data) != text:
        raise InvalidCiphertextError
    return data


def header_text(provider: str, scope: Scope, key_id: str) -> str:
    """The authenticated header, trailing ':' included."""
    return f"{PREFIX}{provider}:{scope.namespace}:{scope.service_account}:{key_id}:"


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """A parsed v1 ciphertext. Building one validates every field."""

    provider: str
    scope: Scope
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    sealed: bytes

    def __post_init__(self) -> None:
        if not PROVIDER_NAME.fullmatch(self.provider) or not KEY_ID.fullmatch(self.key_id):
            raise InvalidCiphertextError
        if len(self.nonce) != NONCE_BYTES or len(self.sealed) < TAG_BYTES:
            raise InvalidCiphertextError
        if len(self.wrapped_key) > 0xFFFF:
            raise ValueError("wrapped key too long for the v1 format")

    @property
    def header(self) -> str:
        """The header text, also the AEAD associated data."""
        return header_text(self.provider, self.scope, self.key_id)

    @property
    def associated_data(self) -> bytes:
        """The bytes every AEAD and KMS wrap of this ciphertext authenticates."""
        return self.header.encode("ascii")

    def encode(self) -> str:
        """The one-line text form."""
        body = (
            _WRAPPED_LEN.pack(len(self.wrapped_key)) + self.wrapped_key + self.nonce + self.sealed
        )
        return self.header + b64url_encode(body)

    @classmethod
    def parse(cls, text: str) -> Ciphertext:
        """Parse the text form; every problem raises the one opaque InvalidCiphertextError."""
        if len(text) <= _CACHEABLE_CHARS:
            return _parse_cached(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Ciphertext:
        # Only ASCII whitespace (a trailing newline from a file or ConfigMap): stripping Unicode
        # spaces would let different texts stand for one ciphertext.
        text = text.strip(" \t\r\n")
        if len(text) > MAX_TEXT_CHARS or not text.startswith(PREFIX) or not text.isascii():
            raise InvalidCiphertextError
        fields = text[len(PREFIX) :].split(":")
        if len(fields) != 5:
            raise InvalidCiphertextError
        provider, namespace, service_account, key_id, body_text = fields
        try:
            scope = Scope(namespace, service_account)
        except InvalidScopeError as exc:
            raise InvalidCiphertextError from exc
        body = b64url_decode(body_text)
        if len(body) < _WRAPPED_LEN.size:
            raise InvalidCiphertextError
        (wrapped_len,) = _WRAPPED_LEN.unpack_from(body)
        rest = body[_WRAPPED_LEN.size :]
        if len(rest) < wrapped_len + NONCE_BYTES + TAG_BYTES:
            raise InvalidCiphertextError
        return cls(
            provider=provider,
            scope=scope,
            key_id=key_id,
            wrapped_key=rest[:wrapped_len],
            nonce=rest[wrapped_len : wrapped_len + NONCE_BYTES],
            sealed=rest[wrapped_len + NONCE_BYTES :],
        )


# The pods of a deployment start together and send the same ciphertexts: parsing (validation,
# canonical base64) is a third of opening one, and its result is immutable. Only short texts are
# kept, so the cache stays small; failures are not cached (they raise).
_CACHEABLE_CHARS = 4096


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Ciphertext:
    return Ciphertext._parse(text)
