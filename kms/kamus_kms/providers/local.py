"""The local keyring provider: per-scope keys derived from the keyring with HKDF-SHA256."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kamus_kms.errors import InvalidCiphertextError
from kamus_kms.keyring import Keyring
from kamus_kms.provider import DataKey, KeyProvider
from kamus_kms.scope import Scope

NAME = "local"


def derive_scope_key(master: bytes, scope: Scope) -> bytes:
    """HKDF-SHA256 of the master key; info binds the format version and the scope."""
    info = f"kamus:v1:scope:{scope.namespace}:{scope.service_account}".encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


_CACHE_SIZE = 4096


class LocalKeyringProvider(KeyProvider):
    """Derives each scope's data key from the keyring's master key versions."""

    name = NAME

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    @property
    def keyring(self) -> Keyring:
        """The keyring in use."""
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: Keyring) -> None:
        # HKDF is a third of the cost of opening a ciphertext, and setting up AES-GCM for a key
        # costs more than using it. Scope keys are as secret as the master keys already in this
        # process, so keeping recent ones costs nothing in exposure; a new keyring drops them.
        self._scope_keys: dict[tuple[bytes, Scope], bytes] = {}
        self._aeads: dict[bytes, AESGCM] = {}
        # The versions before the keyring: a concurrent seal that reads the new active id
        # finds it (the new keyring still holds every id the old one sealed with).
        self._versions = {version.id: version for version in keyring.versions}
        self._keyring = keyring

    def aead(self, key: bytes) -> AESGCM:
        aead = self._aeads.get(key)
        if aead is None:
            if len(self._aeads) >= _CACHE_SIZE:
                self._aeads = {}
            aead = self._aeads[key] = AESGCM(key)
        return aead

    def _scope_key(self, master: bytes, scope: Scope) -> bytes:
        key = self._scope_keys.get((master, scope))
        if key is None:
            if len(self._scope_keys) >= _CACHE_SIZE:
                self._scope_keys = {}
            key = self._scope_keys[(master, scope)] = derive_scope_key(master, scope)
        return key

    def current_key_id(self, scope: Scope) -> str:
        return self._keyring.active.id

    def new_data_key(self, scope: Scope, key_id: str, associated_data: bytes) -> DataKey:
        version = self._versions.get(key_id)
        if version is None:
            raise InvalidCiphertextError
        return DataKey(self._scope_key(version.secret, scope))

    def recover_data_key(
        self, scope: Scope, key_id: str, wrapped: bytes, associated_data: bytes
    ) -> bytes:
        version = self._versions.get(key_id)
        if version is None or not version.can_decrypt or wrapped:
            raise InvalidCiphertextError
        return self._scope_key(version.secret, scope)
