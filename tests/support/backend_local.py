"""The local keyring as a conformance backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.keyring import Keyring
from kamus_kms.provider import KeyMode, KeyProvider
from kamus_kms.providers.local import LocalKeyringProvider


class LocalBackend:
    """A keyring file shared by every provider it makes, as replicas share a Secret."""

    name = "local"
    modes = (KeyMode.SHARED,)

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "keyring.json"
        Keyring.generate().save(self.path)

    def provider(self, mode: KeyMode, registry: CollectorRegistry) -> KeyProvider:
        return LocalKeyringProvider(Keyring.load(self.path))

    def service_env(self, mode: KeyMode) -> dict[str, str]:
        return {"KAMUS_KEYRING_FILE": str(self.path)}

    def outage(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError("a local keyring has no outage")

    def rotate(self, provider: KeyProvider, key_id: str) -> None:
        rotated = Keyring.load(self.path).rotate()
        rotated.save(self.path)
        assert isinstance(provider, LocalKeyringProvider)
        provider.keyring = rotated

    def version_of(self, provider: KeyProvider, ciphertext: str) -> str:
        return Ciphertext.parse(ciphertext).key_id


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[LocalBackend]:
    """The local backend (nothing to start)."""
    yield LocalBackend(workdir)
