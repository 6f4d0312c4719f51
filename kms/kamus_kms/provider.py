"""The interface every key provider implements.

A provider only produces and recovers the 256-bit *data key* of one ciphertext. Scopes, the header,
padding and AES-GCM are shared code (kamus_kms.sealer), so a provider cannot get them wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kamus_kms.scope import Scope


class KeyMode(StrEnum):
    """Which KMS key a scope uses (remote providers; a setting of the services)."""

    SHARED = "shared"
    PER_SERVICE_ACCOUNT = "per-service-account"


@dataclass(frozen=True, slots=True)
class DataKey:
    """A data key and what the ciphertext stores to recover it (empty for derived keys)."""

    key: bytes = field(repr=False)
    wrapped: bytes = b""


class KeyProvider(ABC):
    """Produces and recovers data keys bound to a scope and a ciphertext header."""

    name: str

    @abstractmethod
    def current_key_id(self, scope: Scope) -> str:
        """The id of the key new ciphertexts of `scope` use.

        Raises UnavailableError when the backend cannot answer.
        """

    @abstractmethod
    def new_data_key(self, scope: Scope, key_id: str, associated_data: bytes) -> DataKey:
        """A fresh data key for one ciphertext, bound to `associated_data` (the header).

        Raises UnavailableError when the backend cannot answer.
        """

    @abstractmethod
    def recover_data_key(
        self, scope: Scope, key_id: str, wrapped: bytes, associated_data: bytes
    ) -> bytes:
        """The data key of an existing ciphertext.

        Raises InvalidCiphertextError when the key is unknown, retired or refuses the wrapped key,
        and UnavailableError when the backend cannot answer.
        """

    def aead(self, key: bytes) -> AESGCM:
        """The AES-GCM object the sealer uses with a data key of this provider.

        Setting one up costs more than sealing or opening a short secret with it. Only a provider
        whose keys stay in memory anyway may keep them; a fresh one each time is the default, so
        that no data key outlives its cache entry in a provider's own cache.
        """
        return AESGCM(key)

    def check_ready(self) -> None:
        """Raise UnavailableError when the backend cannot serve requests now."""
        return  # the local keyring is always ready; remote providers override this
