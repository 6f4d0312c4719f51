"""What every KMS backend of the conformance suite offers (one module `backend_<name>` each).

Each module exports ``running(workdir: Path) -> ContextManager[Backend]``: it starts the real
backend on 127.0.0.1 (or in a temporary folder), yields a Backend, and stops everything on exit.
"""

from __future__ import annotations

import base64
from contextlib import AbstractContextManager
from typing import Protocol

from prometheus_client import CollectorRegistry

from kamus_kms.envelope import EnvelopeProvider, KmsMetrics, RemoteKms
from kamus_kms.provider import KeyMode, KeyProvider

BACKENDS = ("local", "gcp", "aws", "pkcs11", "vault", "azure")
REMOTE_BACKENDS = BACKENDS[1:]


class Backend(Protocol):
    """A running backend the conformance suite drives."""

    name: str
    modes: tuple[KeyMode, ...]

    def provider(self, mode: KeyMode, registry: CollectorRegistry) -> KeyProvider:
        """A fresh provider (empty caches) over the backend, reporting metrics to `registry`."""
        ...

    def service_env(self, mode: KeyMode) -> dict[str, str]:
        """The KAMUS_* variables that make a service use this backend."""
        ...

    def outage(self) -> AbstractContextManager[None]:
        """Inside the block the backend cannot be reached (stopped, or its port closed)."""
        ...

    def rotate(self, provider: KeyProvider, key_id: str) -> None:
        """Rotate the key `key_id` the way an operator would (server side for a KMS)."""
        ...

    def version_of(self, provider: KeyProvider, ciphertext: str) -> str:
        """Which version of its key sealed `ciphertext` (changes after rotate())."""
        ...


def envelope_provider(
    kms: RemoteKms, mode: KeyMode, registry: CollectorRegistry, shared_key: str, naming_key: bytes
) -> EnvelopeProvider:
    """The provider a service builds for `kms` in `mode`."""
    return EnvelopeProvider(
        kms,
        mode=mode,
        shared_key=shared_key if mode is KeyMode.SHARED else None,
        naming_key=naming_key if mode is KeyMode.PER_SERVICE_ACCOUNT else None,
        metrics=KmsMetrics(registry),
    )


def key_mode_env(mode: KeyMode, shared_key: str, naming_key: bytes) -> dict[str, str]:
    """The KAMUS_KMS_* variables selecting `mode` and its key."""
    if mode is KeyMode.SHARED:
        return {"KAMUS_KMS_KEY_MODE": mode.value, "KAMUS_KMS_KEY": shared_key}
    return {
        "KAMUS_KMS_KEY_MODE": mode.value,
        "KAMUS_KMS_NAMING_KEY": base64.b64encode(naming_key).decode("ascii"),
    }
