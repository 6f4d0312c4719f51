"""What every KMS backend of the conformance suite offers (one module `backend_<name>` each).

Each module exports ``running(workdir: Path) -> ContextManager[Backend]``: it starts the real
backend on 127.0.0.1 (or in a temporary folder), yields a Backend, and stops everything on exit.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from prometheus_client import CollectorRegistry

from kamus_kms.envelope import KeyMode
from kamus_kms.provider import KeyProvider

BACKENDS = ("local", "gcp", "aws", "pkcs11", "vault")
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
