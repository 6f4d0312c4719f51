"""A cluster's sealing keys: the JSON document of ``KAMUS_SEALING_KEYS``, and its private keys kept
sealed by the cluster's own key provider (never in plaintext at rest).

    {"version": 1, "keys": [{"id": "982879d9f5e58315", "kem": "MLKEM768-X25519",
      "cluster": "prod-eu", "state": "active", "created": "2026-12-02T02:30:00+00:00",
      "public": "kamus-sealing-key:v1:...", "private": "<provider>:<key id>:<base64url>"}]}

``state`` is ``active`` (exactly one: the key the encryptor publishes and CLIs seal to),
``decrypt-only`` (an earlier key: the decryptor still opens its ciphertexts) or ``retired`` (not
loaded at all). ``private`` is the raw private key sealed by the configured provider
(kamus_kms.providersealed) for the reserved scope ``kamus-system`` / ``kamus-sealing-keys``, with
associated data ``kamus-sealing-private-key:v1:<id>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kamus_kms import providersealed
from kamus_kms.errors import ConfigurationError
from kamus_kms.offline import KEMS, SealingKeys, SealingPrivateKey, SealingPublicKey
from kamus_kms.provider import KeyProvider
from kamus_kms.scope import Scope

SEALING_SCOPE = Scope("kamus-system", "kamus-sealing-keys")
STATES = ("active", "decrypt-only", "retired")
_AD_PREFIX = b"kamus-sealing-private-key:v1:"


@dataclass(frozen=True)
class SealingKeyEntry:
    """One key of the document: public half in clear, private half sealed by the provider."""

    public: SealingPublicKey
    private: str
    state: str
    created: str

    @property
    def id(self) -> str:
        return self.public.key_id


def protect(key: SealingPrivateKey, provider: KeyProvider) -> str:
    """The private key sealed by ``provider`` (see the module docstring)."""
    associated = _AD_PREFIX + key.public_key().key_id.encode("ascii")
    return providersealed.seal(key.raw, provider, SEALING_SCOPE, associated)


def unprotect(entry: SealingKeyEntry, provider: KeyProvider) -> SealingPrivateKey:
    """The private key of ``entry``; ConfigurationError when this provider cannot open it."""
    associated = _AD_PREFIX + entry.id.encode("ascii")
    what = f"sealing key {entry.id}"
    raw = providersealed.open_sealed(entry.private, provider, SEALING_SCOPE, associated, what)
    private = SealingPrivateKey(entry.public.kem, raw, entry.public.cluster)
    if private.public_key() != entry.public:
        raise ConfigurationError(f"sealing key {entry.id}: its private and public halves differ")
    return private


class SealingKeyring:
    """The parsed ``KAMUS_SEALING_KEYS`` document."""

    def __init__(self, entries: list[SealingKeyEntry]) -> None:
        active = [entry for entry in entries if entry.state == "active"]
        if entries and len(active) != 1:
            raise ConfigurationError("KAMUS_SEALING_KEYS must hold exactly one active key")
        if len({entry.id for entry in entries}) != len(entries):
            raise ConfigurationError("KAMUS_SEALING_KEYS holds a key twice")
        self.entries = entries

    @property
    def active(self) -> SealingKeyEntry:
        """The key clusters publish and seal to."""
        return next(entry for entry in self.entries if entry.state == "active")

    @classmethod
    def parse(cls, text: str) -> SealingKeyring:
        """Parse the document; ConfigurationError names what is wrong (never a key)."""
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError("KAMUS_SEALING_KEYS is not JSON") from exc
        if not isinstance(document, dict) or document.get("version") != 1:
            raise ConfigurationError('KAMUS_SEALING_KEYS must be {"version": 1, "keys": [...]}')
        entries = []
        for item in document.get("keys") or []:
            if not isinstance(item, dict) or item.get("state") not in STATES:
                raise ConfigurationError("KAMUS_SEALING_KEYS: each key needs a state of " +
                                         ", ".join(STATES))  # fmt: skip
            public = SealingPublicKey.parse(str(item.get("public", "")))
            if item.get("id") != public.key_id or item.get("kem") != public.kem:
                raise ConfigurationError("KAMUS_SEALING_KEYS: a key's id or kem does not match it")
            private, created = str(item.get("private", "")), str(item.get("created", ""))
            entries.append(SealingKeyEntry(public, private, item["state"], created))
        return cls(entries)

    def dumps(self) -> str:
        """The JSON document."""
        keys: list[dict[str, Any]] = [
            {
                "id": entry.id, "kem": entry.public.kem, "cluster": entry.public.cluster,
                "state": entry.state, "created": entry.created, "public": entry.public.text(),
                "private": entry.private,
            }
            for entry in self.entries
        ]  # fmt: skip
        return json.dumps({"version": 1, "keys": keys}, indent=2) + "\n"

    def with_new_key(
        self, provider: KeyProvider, *, kem: str, cluster: str
    ) -> tuple[SealingKeyring, SealingPublicKey]:
        """A new active key; the previous active one becomes decrypt-only."""
        if kem not in KEMS:
            raise ConfigurationError(f"unknown KEM {kem!r}; choose from {', '.join(KEMS)}")
        key = SealingPrivateKey.generate(kem, cluster)
        entry = SealingKeyEntry(key.public_key(), protect(key, provider), "active",
                                datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip
        kept = [replace(e, state="decrypt-only") if e.state == "active" else e
                for e in self.entries]  # fmt: skip
        return SealingKeyring([*kept, entry]), entry.public

    def retired(self, key_id: str) -> SealingKeyring:
        """``key_id`` retired: its ciphertexts open nowhere any more."""
        found = [entry for entry in self.entries if entry.id == key_id]
        if not found:
            raise ConfigurationError(f"no sealing key {key_id!r}")
        if found[0].state == "active":
            raise ConfigurationError(
                "the active sealing key cannot be retired; add a new one first"
            )
        return SealingKeyring([replace(e, state="retired") if e.id == key_id else e
                               for e in self.entries])  # fmt: skip

    def opener(self, provider: KeyProvider, *, cluster: str = "") -> SealingKeys:
        """The private keys the decryptor of ``cluster`` (KAMUS_CLUSTER_NAME) opens with: every
        key not retired, for the ciphertexts sealed to this cluster's name."""
        keys = (unprotect(entry, provider) for entry in self.entries if entry.state != "retired")
        return SealingKeys(keys, cluster=cluster)

    def published(self, cluster: str) -> SealingPublicKey:
        """The active public key as the encryptor of ``cluster`` (KAMUS_CLUSTER_NAME) serves it:
        named for that cluster, which its ciphertexts are bound to (not the document's label)."""
        return replace(self.active.public, cluster=cluster)
