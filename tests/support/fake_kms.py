"""An in-memory RemoteKms for unit tests. Configuration can never select it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kamus_kms.envelope import RemoteKms
from kamus_kms.errors import InvalidCiphertextError, UnavailableError


@dataclass
class FakeKms(RemoteKms):
    """AES-GCM per named key, with AAD; counts calls; can be switched off."""

    name: str = "fake"
    keys: dict[str, bytes] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    available: bool = True
    auto_create: bool = False
    delay: float = 0.0

    def _count(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if not self.available:
            raise UnavailableError("the fake KMS is down")

    def wrap(self, key_name: str, data_key: bytes, associated_data: bytes) -> bytes:
        self._count("wrap")
        if key_name not in self.keys:
            raise UnavailableError(f"no KMS key {key_name}")
        nonce = os.urandom(12)
        return nonce + AESGCM(self.keys[key_name]).encrypt(nonce, data_key, associated_data)

    def unwrap(self, key_name: str, wrapped: bytes, associated_data: bytes) -> bytes:
        self._count("unwrap")
        time.sleep(self.delay)
        key = self.keys.get(key_name)
        if key is None:
            raise InvalidCiphertextError
        try:
            return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], associated_data)
        except InvalidTag as exc:
            raise InvalidCiphertextError from exc

    def ensure_key(self, key_name: str) -> None:
        self._count("ensure_key")
        self.keys.setdefault(key_name, AESGCM.generate_key(256))
