"""Offline sealing: ciphertexts made with a cluster's public sealing key, no network call.

A v1 ciphertext whose provider is ``sealed`` (docs/FORMAT.md, "Sealed offline")::

    kamus:v1:sealed:<namespace>:<service-account>:<recipient key ids joined by "+">:<body>

The body is the v1 body: ``u16be(len(wrapped)) || wrapped || nonce || AES-256-GCM || tag``, the
padded plaintext sealed under a fresh random data key. The ``wrapped`` part, the envelope, holds the
data key once per recipient cluster, each with HPKE (RFC 9180, base mode, single shot) to that
cluster's public sealing key. ``seal`` writes the bound form::

    0x00 0x02 || u8(count) || count x ( key id (8 bytes) || u16be(len(hpke)) || hpke )
    HPKE info   = header || 0x00 "cluster:" <the recipient key's cluster name>
    AES-GCM AAD = header || 0x00 "envelope:" || the whole envelope

so every byte of the ciphertext is authenticated, and each recipient opens only under the
cluster name (KAMUS_CLUSTER_NAME) its key was published with. The first form, ``u8(count) ||
entries`` with the header alone as HPKE info and AAD, is still opened (committed ciphertexts must
open forever), bound to no cluster. Either envelope is read only exactly as sealed: the header's
recipients, once each, in order.

Suite: the KEM of the recipient key, HKDF-SHA256, AES-256-GCM. The default KEM is the
post-quantum hybrid ML-KEM-768 + X25519 (``MLKEM768-X25519``, X-Wing): ciphertexts committed to git
live for years, and a recorded one must not open when a quantum computer arrives; X25519 alone is
an option. A cluster opens the ciphertext only with the private key of one of its recipient ids.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kamus_kms.ciphertext import NONCE_BYTES, Ciphertext, header_text
from kamus_kms.errors import (
    ConfigurationError,
    InvalidCiphertextError,
    InvalidRequestError,
    PayloadTooLargeError,
    ScopeMismatchError,
)
from kamus_kms.padding import pad, unpad
from kamus_kms.scope import Scope

PROVIDER = "sealed"
PUBLIC_PREFIX = "kamus-sealing-key:v1:"
KEY_ID_BYTES = 8
DATA_KEY_BYTES = 32
# The header's key-id field holds at most 256 characters: 15 ids of 16 hex digits and 14 '+'.
MAX_RECIPIENTS = 15
# Leads the envelope of the second (bound) form; the first form's starts with its count, never 0.
BOUND_FORM = b"\x00\x02"
_MLKEM_T_BYTES = 1152  # the ML-KEM-768 encapsulation key is t (1,152 bytes) then rho (32)
_ENTRY_LEN = struct.Struct(">H")
_CLUSTER = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")
_PUBLIC_TEXT = re.compile(
    r"kamus-sealing-key:v1:(?P<kem>[A-Za-z0-9-]+):(?P<cluster>[a-z0-9.-]*):(?P<key>[A-Za-z0-9_-]+)"
)


@dataclass(frozen=True)
class Kem:
    """One HPKE KEM Kamus seals with: its name in key files and its sizes."""

    name: str
    suite: hpke.Suite
    private_bytes: int
    public_bytes: int


_SUITE_PARTS = (hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
KEMS = {
    "MLKEM768-X25519": Kem("MLKEM768-X25519", hpke.Suite(hpke.KEM.MLKEM768_X25519, *_SUITE_PARTS),
                           64 + 32, 1184 + 32),
    "X25519": Kem("X25519", hpke.Suite(hpke.KEM.X25519, *_SUITE_PARTS), 32, 32),
}  # fmt: skip
DEFAULT_KEM = "MLKEM768-X25519"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    """Strict unpadded base64url: only the canonical text of some bytes (one text per key)."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(data) != text:
        raise ValueError("non-canonical base64url")
    return data


@dataclass(frozen=True)
class SealingPublicKey:
    """A cluster's public sealing key, as ``kamus-cli sealing-key`` saves it (one text line)."""

    kem: str
    raw: bytes
    cluster: str = ""

    def __post_init__(self) -> None:
        kem = KEMS.get(self.kem)
        if kem is None or len(self.raw) != kem.public_bytes:
            raise ConfigurationError("not a Kamus sealing key (unknown KEM or wrong length)")
        if self.cluster and not _CLUSTER.fullmatch(self.cluster):
            raise ConfigurationError("the sealing key's cluster name is not a valid name")
        if self.kem == "MLKEM768-X25519" and not any(self.raw[:_MLKEM_T_BYTES]):
            # ML-KEM accepts t = 0, but then its shared secret is readable by anyone: the
            # "hybrid" would protect with X25519 only, against a quantum computer not at all.
            raise ConfigurationError(
                "not a valid MLKEM768-X25519 public key: its ML-KEM half is empty"
            )
        try:
            self.hpke_key()
        except ValueError as exc:
            raise ConfigurationError(f"not a valid {self.kem} public key") from exc

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the KEM name and the public key, in hex: what users pin and compare."""
        return hashlib.sha256(self.kem.encode("ascii") + b":" + self.raw).hexdigest()

    @property
    def key_id(self) -> str:
        """The key's short id in ciphertext headers: the fingerprint's first 8 bytes."""
        return self.fingerprint[: 2 * KEY_ID_BYTES]

    def text(self) -> str:
        """The one-line form of the key file."""
        return f"{PUBLIC_PREFIX}{self.kem}:{self.cluster}:{_b64url(self.raw)}"

    @classmethod
    def parse(cls, text: str) -> SealingPublicKey:
        """Parse the one-line form; ConfigurationError names the problem."""
        found = _PUBLIC_TEXT.fullmatch(text.strip())
        if found is None:
            raise ConfigurationError(
                "not a Kamus sealing key: expected one line kamus-sealing-key:v1:<kem>:<cluster>:"
                "<key> (kamus-cli sealing-key saves it)"
            )
        try:
            raw = _unb64url(found["key"])
        except ValueError as exc:
            raise ConfigurationError("the sealing key is not canonical base64url") from exc
        return cls(found["kem"], raw, found["cluster"])

    def hpke_key(self) -> x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey:
        """The key object cryptography's HPKE takes."""
        if self.kem == "X25519":
            return x25519.X25519PublicKey.from_public_bytes(self.raw)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:1184]),
            x25519.X25519PublicKey.from_public_bytes(self.raw[1184:]),
        )


@dataclass(frozen=True)
class SealingPrivateKey:
    """A cluster's private sealing key: the KEM name and its raw private bytes."""

    kem: str
    raw: bytes = field(repr=False)
    cluster: str = ""

    def __post_init__(self) -> None:
        kem = KEMS.get(self.kem)
        if kem is None or len(self.raw) != kem.private_bytes:
            raise ConfigurationError("not a Kamus sealing private key")

    @classmethod
    def generate(cls, kem: str = DEFAULT_KEM, cluster: str = "") -> SealingPrivateKey:
        """A new random key pair's private half."""
        if kem == "X25519":
            raw = x25519.X25519PrivateKey.generate().private_bytes_raw()
        elif kem == "MLKEM768-X25519":
            raw = (
                mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
                + x25519.X25519PrivateKey.generate().private_bytes_raw()
            )
        else:
            raise ConfigurationError(f"unknown KEM {kem!r}; choose from {', '.join(KEMS)}")
        return cls(kem, raw, cluster)

    def _hpke_key(self) -> x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey:
        if self.kem == "X25519":
            return x25519.X25519PrivateKey.from_private_bytes(self.raw)
        ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(self.raw[:64])
        classic = x25519.X25519PrivateKey.from_private_bytes(self.raw[64:])
        return hpke.MLKEM768X25519PrivateKey(ml, classic)

    def public_key(self) -> SealingPublicKey:
        """The public half, with the same cluster name."""
        if self.kem == "X25519":
            raw = x25519.X25519PrivateKey.from_private_bytes(self.raw).public_key()
            return SealingPublicKey(self.kem, raw.public_bytes_raw(), self.cluster)
        ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(self.raw[:64]).public_key()
        classic = x25519.X25519PrivateKey.from_private_bytes(self.raw[64:]).public_key()
        return SealingPublicKey(
            self.kem, ml.public_bytes_raw() + classic.public_bytes_raw(), self.cluster
        )

    def open_data_key(self, encapsulated: bytes, info: bytes) -> bytes:
        """The data key HPKE-sealed to this key with ``info``; InvalidCiphertextError else."""
        private = self._hpke_key()
        try:
            data_key: bytes = KEMS[self.kem].suite.decrypt(encapsulated, private, info=info)
        except (InvalidTag, ValueError) as exc:
            raise InvalidCiphertextError from exc
        if len(data_key) != DATA_KEY_BYTES:
            raise InvalidCiphertextError
        return data_key


def header_for(scope: Scope, recipients: Sequence[SealingPublicKey]) -> str:
    """The authenticated header naming ``scope`` and the recipients' key ids."""
    return header_text(PROVIDER, scope, "+".join(key.key_id for key in recipients))


def _hpke_info(header: bytes, cluster: str) -> bytes:
    """HPKE ``info`` of a bound entry: the header and the recipient's cluster name."""
    return header + b"\x00cluster:" + cluster.encode("ascii")


def _envelope_aad(header: bytes, wrapped: bytes) -> bytes:
    """AES-GCM associated data of the bound form: the header and every byte of the envelope."""
    return header + b"\x00envelope:" + wrapped


def seal(
    plaintext: bytes,
    scope: Scope,
    recipients: Iterable[SealingPublicKey],
    *,
    max_plaintext: int = 64 * 1024,
    padding_bucket: int = 32,
    random: Callable[[int], bytes] = os.urandom,
) -> str:
    """The sealed ciphertext of ``plaintext`` for ``scope``, openable by each recipient cluster
    (the cluster its sealing key names, and no other)."""
    unique = {key.key_id: key for key in recipients}
    keys = [unique[key_id] for key_id in sorted(unique)]
    if not keys:
        raise InvalidRequestError("sealing needs at least one cluster's sealing key")
    if len(keys) > MAX_RECIPIENTS:
        raise InvalidRequestError(f"a ciphertext seals to at most {MAX_RECIPIENTS} clusters")
    if not plaintext:
        raise InvalidRequestError("the secret is empty; there is nothing to encrypt")
    if len(plaintext) > max_plaintext:
        raise PayloadTooLargeError(
            f"the secret is {len(plaintext)} bytes; the limit is {max_plaintext}"
        )
    header = header_for(scope, keys).encode("ascii")
    data_key = random(DATA_KEY_BYTES)
    wrapped = BOUND_FORM + bytes([len(keys)])
    for key in keys:
        info = _hpke_info(header, key.cluster)
        try:
            encapsulated = KEMS[key.kem].suite.encrypt(data_key, key.hpke_key(), info=info)
        except ValueError as exc:
            # A point X25519 refuses only in the exchange (all zeros, low order).
            raise InvalidRequestError(
                f"sealing key {key.key_id} cannot be sealed to: not a usable public key"
            ) from exc
        wrapped += bytes.fromhex(key.key_id) + _ENTRY_LEN.pack(len(encapsulated)) + encapsulated
    nonce = random(NONCE_BYTES)
    padded = pad(plaintext, padding_bucket)
    sealed = AESGCM(data_key).encrypt(nonce, padded, _envelope_aad(header, wrapped))
    return Ciphertext(PROVIDER, scope, "+".join(k.key_id for k in keys), wrapped, nonce,
                      sealed).encode()  # fmt: skip


@dataclass(frozen=True)
class Envelope:
    """The parsed ``wrapped`` part of a sealed ciphertext."""

    bound: bool  # the second form: the envelope authenticated, each entry bound to a cluster
    entries: dict[str, bytes]  # key id -> HPKE ciphertext, in header order


def envelope_of(ciphertext: Ciphertext) -> Envelope:
    """The envelope of a sealed ciphertext; InvalidCiphertextError unless it is exactly the one
    ``seal`` writes for the header's recipients (each once, in order, nothing more)."""
    wrapped = ciphertext.wrapped_key
    if ciphertext.provider != PROVIDER:
        raise InvalidCiphertextError
    bound = wrapped.startswith(BOUND_FORM)
    position = len(BOUND_FORM) if bound else 0
    ids = ciphertext.key_id.split("+")
    # Sorted and unique: the first form's envelope was not authenticated, so only the one
    # encoding seal ever wrote is read, and an edited copy of it opens nowhere.
    if position >= len(wrapped) or wrapped[position] != len(ids) or ids != sorted(set(ids)):
        raise InvalidCiphertextError
    position += 1
    entries = {}
    for key_id in ids:
        end = position + KEY_ID_BYTES + _ENTRY_LEN.size
        if end > len(wrapped) or wrapped[position : position + KEY_ID_BYTES].hex() != key_id:
            raise InvalidCiphertextError
        (length,) = _ENTRY_LEN.unpack_from(wrapped, position + KEY_ID_BYTES)
        entries[key_id] = wrapped[end : end + length]
        position = end + length
    if position != len(wrapped):
        raise InvalidCiphertextError
    return Envelope(bound, entries)


def recipients_of(ciphertext: Ciphertext) -> dict[str, bytes]:
    """``{key id: HPKE ciphertext}`` of a sealed ciphertext; InvalidCiphertextError if malformed."""
    return envelope_of(ciphertext).entries


class SealingKeys:
    """The private sealing keys a decryptor opens with, by key id (decrypt-only ones included)."""

    def __init__(self, keys: Iterable[SealingPrivateKey], *, cluster: str = "") -> None:
        self._keys = {key.public_key().key_id: key for key in keys}
        self._cluster = cluster

    def __bool__(self) -> bool:
        return bool(self._keys)

    def open(self, ciphertext: Ciphertext, caller: Scope | None = None) -> bytes:
        """The plaintext of a sealed ciphertext, for ``caller``'s scope only."""
        if caller is not None and ciphertext.scope != caller:
            raise ScopeMismatchError(
                f"the ciphertext is for {ciphertext.scope}, not for the caller's {caller}"
            )
        header = ciphertext.associated_data
        envelope = envelope_of(ciphertext)
        if envelope.bound:
            info = _hpke_info(header, self._cluster)
            associated = _envelope_aad(header, ciphertext.wrapped_key)
        else:  # the first form: opens in any cluster holding the key (docs/FORMAT.md)
            info = associated = header
        for key_id, encapsulated in envelope.entries.items():
            key = self._keys.get(key_id)
            if key is None:
                continue
            data_key = key.open_data_key(encapsulated, info)
            try:
                padded = AESGCM(data_key).decrypt(ciphertext.nonce, ciphertext.sealed, associated)
            except InvalidTag as exc:
                raise InvalidCiphertextError from exc
            return unpad(padded)
        raise InvalidCiphertextError  # sealed for other clusters only
