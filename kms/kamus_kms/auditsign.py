"""Audit verifiable without the forging key: a public hash chain and signed checkpoints.

The HMAC chain of kamus_kms.auditchain needs the audit key to verify, and whoever holds that key
can rewrite the file. Each record therefore also carries ``hash``: the SHA-256 of the previous
record's ``hash`` (64 zeros before the first) and of the record's canonical JSON without ``mac``
and ``hash``. Anyone can recompute it; nobody without the signing key can make it match a
**checkpoint**: a record the writer appends when a chain begins, every N records or T seconds and
when it stops, holding the Ed25519 signature of every field of the checkpoint but ``sig``: the
log's ``origin``, the ``chain`` (the file's name), its size ``seq`` (the record right before the
checkpoint), that record's ``hash``, the ``time`` and the signing ``key``'s id. How a chain is
verified against them, and against the witnesses: kamus_kms.auditverify.

This module also holds the signing key's forms (base64 of the seed, or sealed by the provider).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kamus_kms import providersealed
from kamus_kms.auditchain import canonical
from kamus_kms.errors import ConfigurationError
from kamus_kms.provider import KeyProvider
from kamus_kms.scope import Scope

CHECKPOINT_EVENT = "checkpoint"
# A signing key kept sealed by the key provider (KMS, HSM, keyring): the form of
# KAMUS_AUDIT_SIGNING_KEY that `python -m kamus_service.auditsigning new` prints.
SEALED_SIGNING_KEY = "kamus-audit-signing-key:v1:"
SIGNING_SCOPE = Scope("kamus-system", "kamus-audit-signing")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


def record_hash(previous: str, record: Mapping[str, Any]) -> str:
    """The public chain's hash of ``record`` after a record of hash ``previous``."""
    body = {name: value for name, value in record.items() if name not in ("mac", "hash")}
    return hashlib.sha256(bytes.fromhex(previous) + canonical(body)).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    """A signing key's id: the first 8 bytes of the SHA-256 of its raw public key, in hex."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def load_private(text: str) -> Ed25519PrivateKey:
    """The signing key from base64 of its 32-byte seed; ConfigurationError names the problem."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(
            "the audit signing key must be base64 of a 32-byte Ed25519 seed"
            " (kamus-audit signing-key new)"
        ) from exc


def _sealing_context(key: str) -> bytes:
    return f"{SEALED_SIGNING_KEY}{key}".encode("ascii")


def seal_private(private: Ed25519PrivateKey, provider: KeyProvider) -> str:
    """The signing key sealed by ``provider``, never in plaintext at rest."""
    key = key_id(private.public_key())
    sealed = providersealed.seal(
        private.private_bytes_raw(), provider, SIGNING_SCOPE, _sealing_context(key)
    )
    return f"{SEALED_SIGNING_KEY}{key}:{sealed}"


def signing_key(text: str, provider: KeyProvider) -> Ed25519PrivateKey:
    """The key of KAMUS_AUDIT_SIGNING_KEY: base64 of the seed, or sealed by ``provider``.

    ConfigurationError when it is malformed or this provider's keys do not open it; a provider
    that does not answer raises UnavailableError.
    """
    text = text.strip()
    if not text.startswith(SEALED_SIGNING_KEY):
        return load_private(text)
    key, _, sealed = text.removeprefix(SEALED_SIGNING_KEY).partition(":")
    if not _KEY_ID.fullmatch(key):
        raise ConfigurationError(
            "the sealed audit signing key is malformed: expected "
            f"{SEALED_SIGNING_KEY}<16 hex digits>:<provider>:..."
        )
    what = f"the audit signing key {key}"
    raw = providersealed.open_sealed(sealed, provider, SIGNING_SCOPE, _sealing_context(key), what)
    try:
        private = Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{what} is not an Ed25519 seed") from exc
    if key_id(private.public_key()) != key:
        raise ConfigurationError(f"{what} does not match its key id")
    return private


def load_public(text: str) -> Ed25519PublicKey:
    """A public key from base64 of its 32 raw bytes."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("the public key must be base64 of 32 bytes (Ed25519)") from exc


def public_text(public: Ed25519PublicKey) -> str:
    """The base64 form of a public key, as ``--public-key`` files hold it."""
    return base64.b64encode(public.public_bytes_raw()).decode("ascii")


_CHECKPOINT_FIELDS = {"chain": str, "seq": int, "hash": str, "time": str, "key": str}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _statement(checkpoint: Mapping[str, Any]) -> bytes:
    # Every field but the signature is signed, so none can be added, dropped or changed; a
    # checkpoint of the first version (chain, seq, hash, time, key) signs the same bytes as then.
    return canonical({name: value for name, value in checkpoint.items() if name != "sig"})


def sign_checkpoint(
    private: Ed25519PrivateKey, *, chain: str, origin: str, seq: int, hash_: str, time: str
) -> dict[str, Any]:
    """The signed statement that the chain ``chain`` of the log ``origin`` holds ``seq`` records,
    the last of which has the public hash ``hash_``."""
    checkpoint: dict[str, Any] = {
        "chain": chain, "origin": origin, "seq": seq, "hash": hash_, "time": time,
        "key": key_id(private.public_key()),
    }  # fmt: skip
    signature = private.sign(_statement(checkpoint))
    return checkpoint | {"sig": base64.b64encode(signature).decode("ascii")}


def checkpoint_valid(checkpoint: Mapping[str, Any], public: Ed25519PublicKey) -> bool:
    """Whether ``checkpoint`` is well formed and signed by ``public``."""
    for name, kind in _CHECKPOINT_FIELDS.items():
        value = checkpoint.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return False
    if checkpoint["seq"] < 0 or not _HEX64.fullmatch(checkpoint["hash"]):
        return False
    if not isinstance(checkpoint.get("origin", ""), str):
        return False
    try:
        signature = base64.b64decode(str(checkpoint["sig"]), validate=True)
        public.verify(signature, _statement(checkpoint))
    except (KeyError, TypeError, ValueError, RecursionError, binascii.Error, InvalidSignature):
        return False
    return bool(checkpoint["key"] == key_id(public))
