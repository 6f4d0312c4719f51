"""The local keyring: versioned 256-bit master keys, exactly one of them active.

JSON form (a file or a Kubernetes Secret mounted as a file)::

    {"version": 1, "keys": [
        {"id": "k2", "state": "active",       "secret": "<base64 of 32 bytes>", "created": "..."},
        {"id": "k1", "state": "decrypt-only", "secret": "...",                  "created": "..."}]}

Rotation adds a key and makes it active; the former active key becomes decrypt-only so existing
ciphertexts still open. Once every ciphertext has been rewrapped, the old key is retired: a retired
key opens nothing, but stays listed so its id is never reused by mistake.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from kamus_kms.errors import ConfigurationError
from kamus_kms.privatefile import write_private

KEY_BYTES = 32
FORMAT_VERSION = 1
_KEY_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class KeyState(StrEnum):
    """Lifecycle of a key version."""

    ACTIVE = "active"
    DECRYPT_ONLY = "decrypt-only"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One master key version."""

    id: str
    state: KeyState
    secret: bytes = field(repr=False)
    created: str = ""

    @property
    def can_decrypt(self) -> bool:
        """Active and decrypt-only keys open ciphertexts; retired ones do not."""
        return self.state is not KeyState.RETIRED


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Keyring:
    """An immutable, validated set of key versions."""

    versions: tuple[KeyVersion, ...]

    def __post_init__(self) -> None:
        problems = []
        ids = [v.id for v in self.versions]
        if not self.versions:
            problems.append("the keyring holds no keys")
        for key_id in ids:
            if not _KEY_ID.fullmatch(key_id):
                problems.append(
                    f"key id {key_id!r} must be 1-63 lowercase letters, digits, '.', '_' or '-'"
                )
        if len(set(ids)) != len(ids):
            problems.append("key ids must be unique")
        for version in self.versions:
            if len(version.secret) != KEY_BYTES:
                problems.append(f"key {version.id!r} must be exactly {KEY_BYTES} bytes")
        active = [v.id for v in self.versions if v.state is KeyState.ACTIVE]
        if self.versions and len(active) != 1:
            problems.append(f"exactly one key must be active, found {len(active)}")
        if problems:
            raise ConfigurationError(problems)

    @property
    def active(self) -> KeyVersion:
        """The key new ciphertexts are made with."""
        return next(v for v in self.versions if v.state is KeyState.ACTIVE)

    def get(self, key_id: str) -> KeyVersion | None:
        """The version with this id, or None."""
        return next((v for v in self.versions if v.id == key_id), None)

    @classmethod
    def generate(
        cls, key_id: str = "k1", *, random: Callable[[int], bytes] = os.urandom
    ) -> Keyring:
        """A new keyring with one active random key."""
        return cls((KeyVersion(key_id, KeyState.ACTIVE, random(KEY_BYTES), _now()),))

    def rotate(
        self, key_id: str | None = None, *, random: Callable[[int], bytes] = os.urandom
    ) -> Keyring:
        """Add a new active key; the former active key becomes decrypt-only."""
        new_id = key_id or f"k{len(self.versions) + 1}"
        while key_id is None and self.get(new_id) is not None:
            new_id = f"{new_id}-{random(2).hex()}"
        demoted = tuple(
            replace(v, state=KeyState.DECRYPT_ONLY) if v.state is KeyState.ACTIVE else v
            for v in self.versions
        )
        return Keyring((KeyVersion(new_id, KeyState.ACTIVE, random(KEY_BYTES), _now()), *demoted))

    def retire(self, key_id: str) -> Keyring:
        """Retire a decrypt-only key; the active key cannot be retired."""
        version = self.get(key_id)
        if version is None:
            raise ConfigurationError(f"no key {key_id!r} in the keyring")
        if version.state is KeyState.ACTIVE:
            raise ConfigurationError(f"key {key_id!r} is active; rotate before retiring it")
        return Keyring(
            tuple(
                replace(v, state=KeyState.RETIRED) if v.id == key_id else v for v in self.versions
            )
        )

    def to_json(self) -> str:
        """The JSON form, secrets included: write it only to a protected file or Secret."""
        keys = [
            {
                "id": v.id,
                "state": v.state.value,
                "secret": base64.b64encode(v.secret).decode("ascii"),
                "created": v.created,
            }
            for v in self.versions
        ]
        return json.dumps({"version": FORMAT_VERSION, "keys": keys}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        """Parse and validate the JSON form; ConfigurationError lists every problem."""
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError("the keyring is not valid JSON") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ConfigurationError('the keyring must be a JSON object with a "keys" list')
        if document.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ConfigurationError(f"unsupported keyring version {document.get('version')!r}")
        problems: list[str] = []
        versions = [_parse_version(i, item, problems) for i, item in enumerate(document["keys"])]
        if problems:
            raise ConfigurationError(problems)
        return cls(tuple(v for v in versions if v is not None))

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read a keyring file."""
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read keyring file {path}: {exc.strerror}") from exc

    def save(self, path: Path, *, exclusive: bool = False) -> bool:
        """Write the keyring atomically with mode 0600; with `exclusive`, never replace a file.

        Returns False when `exclusive` and the file already exists.
        """
        return write_private(path, self.to_json().encode("utf-8"), exclusive=exclusive)


def _parse_version(index: int, item: Any, problems: list[str]) -> KeyVersion | None:
    where = f"keys[{index}]"
    if not isinstance(item, dict):
        problems.append(f"{where} must be an object")
        return None
    key_id, state, secret = item.get("id"), item.get("state"), item.get("secret")
    if not isinstance(key_id, str):
        problems.append(f"{where}.id must be a string")
    if state not in {s.value for s in KeyState}:
        problems.append(f"{where}.state must be one of active, decrypt-only, retired")
    raw = b""
    if not isinstance(secret, str):
        problems.append(f"{where}.secret must be a base64 string")
    else:
        try:
            raw = base64.b64decode(secret, validate=True)
        except binascii.Error:
            problems.append(f"{where}.secret is not valid base64")
        if not raw:
            problems.append(f"{where}.secret is empty")
    if not isinstance(key_id, str) or state not in {s.value for s in KeyState} or not raw:
        return None
    return KeyVersion(key_id, KeyState(state), raw, str(item.get("created", "")))
