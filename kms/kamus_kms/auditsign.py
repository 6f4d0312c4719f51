"""Audit verifiable without the forging key: a public hash chain and signed checkpoints.

The HMAC chain of kamus_kms.auditchain needs the audit key to verify, and whoever holds that key
can rewrite the file. Each record therefore also carries ``hash``: the SHA-256 of the previous
record's ``hash`` (64 zeros before the first) and of the record's canonical JSON without ``mac``
and ``hash``. Anyone can recompute it; nobody without the signing key can make it match a
**checkpoint**: a record the writer appends every N records or T seconds, holding the Ed25519
signature of ``{"chain", "seq", "hash", "time", "key"}``, where ``seq`` and ``hash`` are those of
the record before it, ``chain`` the file's name and ``key`` the signing key's id. The decryptor
prints each checkpoint on stdout too, so the cluster's log pipeline keeps a witness the file's
owner cannot rewrite.

``verify_public`` checks a chain with the public key only: every hash, every signature, the
checkpoints against the recomputed chain, and against witnessed checkpoints (records removed from
the end since a witnessed checkpoint); the records after the last checkpoint are reported as not
yet covered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kamus_kms import providersealed
from kamus_kms.auditchain import GENESIS, canonical
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


def _statement(checkpoint: Mapping[str, Any]) -> bytes:
    return canonical({name: checkpoint[name] for name in ("chain", "seq", "hash", "time", "key")})


def sign_checkpoint(
    private: Ed25519PrivateKey, *, chain: str, seq: int, hash_: str, time: str
) -> dict[str, Any]:
    """The signed statement that record ``seq`` of ``chain`` has hash ``hash_``."""
    checkpoint: dict[str, Any] = {
        "chain": chain, "seq": seq, "hash": hash_, "time": time,
        "key": key_id(private.public_key()),
    }  # fmt: skip
    signature = private.sign(_statement(checkpoint))
    return checkpoint | {"sig": base64.b64encode(signature).decode("ascii")}


def checkpoint_valid(checkpoint: Mapping[str, Any], public: Ed25519PublicKey) -> bool:
    """Whether ``checkpoint`` is well formed and signed by ``public``."""
    try:
        signature = base64.b64decode(str(checkpoint["sig"]), validate=True)
        public.verify(signature, _statement(checkpoint))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidSignature):
        return False
    return checkpoint.get("key") == key_id(public)


@dataclass
class PublicVerification:
    """What ``verify_public`` found in one chain."""

    chain: str
    records: int = 0
    checkpoints: int = 0
    covered_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def uncovered(self) -> int:
        """Records after the last valid checkpoint."""
        return self.records - self.covered_seq


def _records(path: Path) -> Iterable[tuple[int, dict[str, Any] | None]]:
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                record = json.loads(raw) if raw.endswith(b"\n") else None
            except (ValueError, RecursionError):
                record = None
            yield number, record if isinstance(record, dict) else None


def verify_public(
    path: Path, public: Ed25519PublicKey, witnessed: Iterable[Mapping[str, Any]] = ()
) -> PublicVerification:
    """Check ``path`` with the public key only (see the module docstring)."""
    result = PublicVerification(path.name)
    hashes: dict[int, str] = {}
    previous, expected = GENESIS, 1
    seen_seq: set[int] = set()
    for number, record in _records(path):
        where = f"line {number}"
        if record is None:
            result.problems.append(f"{where}: truncated or not a JSON record")
            break
        seq, stored = record.get("seq"), record.get("hash")
        if not isinstance(seq, int) or not isinstance(stored, str):
            result.problems.append(
                f"{where}: no public hash (written before signed checkpoints: verify it with"
                " the audit key)"
            )
            break
        if seq != expected:
            kind = (
                "inserted: a repeated sequence number"
                if seq in seen_seq
                else f"deleted or reordered: seq {expected} expected, seq {seq} found"
            )
            result.problems.append(f"{where}: {kind}")
            break
        if record_hash(previous, record) != stored:
            result.problems.append(
                f"{where}: edited: seq {seq} does not hash to its stored hash, or does not chain"
                " to the record before it"
            )
            break
        seen_seq.add(seq)
        hashes[seq] = stored
        result.records = seq
        previous, expected = stored, seq + 1
        if record.get("event") == CHECKPOINT_EVENT:
            checkpoint = record.get("checkpoint")
            if not isinstance(checkpoint, dict) or not checkpoint_valid(checkpoint, public):
                result.problems.append(
                    f"{where}: forged checkpoint: its signature does not verify with this key"
                )
                break
            if (
                checkpoint.get("chain") != path.name
                or hashes.get(checkpoint["seq"]) != checkpoint["hash"]
            ):
                result.problems.append(
                    f"{where}: edited: the records up to seq {checkpoint['seq']} differ from what"
                    " the checkpoint signed (the file was rewritten)"
                )
                break
            result.checkpoints += 1
            result.covered_seq = seq
    for checkpoint in witnessed:
        if checkpoint.get("chain") != path.name or not checkpoint_valid(checkpoint, public):
            continue
        seq = int(checkpoint["seq"])
        if seq > result.records and not result.problems:
            result.problems.append(
                f"deleted: seq {result.records + 1}..{seq} missing at the end (a witnessed"
                f" checkpoint signed seq {seq})"
            )
        elif seq in hashes and hashes[seq] != checkpoint["hash"] and not result.problems:
            result.problems.append(
                f"edited: the records up to seq {seq} differ from a witnessed checkpoint"
            )
    return result


def witnessed_checkpoints(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The checkpoints in log lines (the decryptor's stdout), wherever they appear."""
    found = []
    for line in lines:
        start = line.find("{")
        if start < 0 or '"checkpoint"' not in line:
            continue
        try:
            event = json.loads(line[start:])
        except ValueError:
            continue
        checkpoint = event.get("checkpoint") if isinstance(event, dict) else None
        if isinstance(checkpoint, dict):
            found.append(checkpoint)
    return found
