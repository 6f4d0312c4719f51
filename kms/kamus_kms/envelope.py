"""Envelope encryption over a remote KMS: a fresh data key per ciphertext, wrapped by the KMS.

The data key (32 random bytes) seals the padded plaintext with AES-256-GCM (shared code in
kamus_kms.sealer); the KMS wraps the data key with the ciphertext *header* as additional
authenticated data / encryption context. A shared KMS key therefore still cannot open a ciphertext
of another scope: the header names the scope, and both the wrap and the AEAD authenticate it.

Key modes:
- ``shared``: one configured KMS key for every scope (the header's key id is that key's name).
- ``per-service-account``: one KMS key per namespace + service account, named
  ``kamus-<HMAC-SHA256(naming key, "ns/sa")[:32 hex]>`` (keyed, so key names do not reveal or
  let anyone enumerate scopes), created on demand by the adapter, race-free between replicas.

Unwrapped data keys are cached (bounded, with a TTL) under a hash of key id, wrapped key and header,
so a pod-restart storm re-reading the same ciphertexts does not become a KMS storm.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter

from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, KamusError
from kamus_kms.provider import DataKey, KeyMode, KeyProvider
from kamus_kms.scope import Scope
from kamus_kms.singleflight import SingleFlight

DATA_KEY_BYTES = 32
_T = TypeVar("_T")


class RemoteKms(ABC):
    """What each KMS adapter implements: wrap and unwrap a data key with associated data."""

    name: str

    @abstractmethod
    def wrap(self, key_name: str, data_key: bytes, associated_data: bytes) -> bytes:
        """The data key encrypted under the KMS key `key_name`, bound to `associated_data`.

        Raises UnavailableError when the KMS cannot answer (unreachable, throttled, permission
        missing: the message names the permission).
        """

    @abstractmethod
    def unwrap(self, key_name: str, wrapped: bytes, associated_data: bytes) -> bytes:
        """The data key of `wrapped`.

        Raises InvalidCiphertextError when the KMS refuses the wrapped key (wrong key, wrong
        associated data, garbage), UnavailableError when it cannot answer.
        """

    def check_key_name(self, key_name: str) -> None:
        """Raise ConfigurationError when `key_name` cannot name a key of this KMS."""
        return

    def ensure_key(self, key_name: str) -> None:
        """Create the KMS key `key_name` unless it exists; safe when replicas race.

        Raises UnavailableError when the KMS cannot answer.
        """
        raise ConfigurationError(f"the {self.name} provider cannot create keys on demand")

    def check_ready(self) -> None:
        """Raise UnavailableError when the KMS cannot serve requests now."""
        return


class KmsMetrics:
    """Prometheus metrics of KMS use."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "kamus_kms_calls",
            "KMS calls by provider, operation and result",
            ["provider", "operation", "result"],
            registry=registry,
        )
        self.cache = Counter(
            "kamus_kms_data_key_cache", "Data key cache lookups by result (hit, miss)",
            ["result"], registry=registry,
        )  # fmt: skip
        # Looked up once: labels() takes a lock and checks the values on every call, and a
        # cache hit is on every decrypt.
        self.cache_hits = self.cache.labels("hit")
        self.cache_misses = self.cache.labels("miss")


def service_account_key_name(naming_key: bytes, scope: Scope) -> str:
    """The per-service-account KMS key name: keyed, so it reveals nothing about the scope."""
    digest = hmac.new(naming_key, f"{scope.namespace}/{scope.service_account}".encode(), "sha256")
    return f"kamus-{digest.hexdigest()[:32]}"


class EnvelopeProvider(KeyProvider):
    """A KeyProvider that wraps a fresh data key per ciphertext with a remote KMS."""

    def __init__(
        self,
        kms: RemoteKms,
        *,
        mode: KeyMode,
        shared_key: str | None = None,
        naming_key: bytes | None = None,
        cache_seconds: float = 300.0,
        cache_size: int = 10_000,
        metrics: KmsMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if mode is KeyMode.SHARED and not shared_key:
            raise ConfigurationError("the shared key mode needs the name of the KMS key")
        if mode is KeyMode.PER_SERVICE_ACCOUNT and (naming_key is None or len(naming_key) < 32):
            raise ConfigurationError("the per-service-account key mode needs a 32-byte naming key")
        if shared_key:
            # A bad key name stops the service at start, not at its first request.
            kms.check_key_name(shared_key)
        self.kms = kms
        self.name = kms.name
        self.mode = mode
        self.shared_key = shared_key
        self._naming_key = naming_key or b""
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self.metrics = metrics or KmsMetrics(CollectorRegistry())
        self._clock = clock
        self._random = random
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._ensured: set[str] = set()
        self._unwraps: SingleFlight[bytes] = SingleFlight()

    def _expected_key(self, scope: Scope) -> str:
        if self.mode is KeyMode.SHARED:
            assert self.shared_key is not None
            return self.shared_key
        return service_account_key_name(self._naming_key, scope)

    def _call(self, operation: str, call: Callable[[], _T]) -> _T:
        try:
            result = call()
        except InvalidCiphertextError:
            self.metrics.calls.labels(self.name, operation, "refused").inc()
            raise
        except KamusError:
            self.metrics.calls.labels(self.name, operation, "error").inc()
            raise
        self.metrics.calls.labels(self.name, operation, "ok").inc()
        return result

    def current_key_id(self, scope: Scope) -> str:
        key_name = self._expected_key(scope)
        if self.mode is KeyMode.PER_SERVICE_ACCOUNT and key_name not in self._ensured:
            self._call("ensure_key", lambda: self.kms.ensure_key(key_name))
            with self._lock:
                self._ensured.add(key_name)
        return key_name

    def new_data_key(self, scope: Scope, key_id: str, associated_data: bytes) -> DataKey:
        data_key = self._random(DATA_KEY_BYTES)
        wrapped = self._call("wrap", lambda: self.kms.wrap(key_id, data_key, associated_data))
        return DataKey(data_key, wrapped)

    def recover_data_key(
        self, scope: Scope, key_id: str, wrapped: bytes, associated_data: bytes
    ) -> bytes:
        # Only the key this scope maps to may open its ciphertexts: a header naming another
        # scope's key is refused before any KMS call.
        if key_id != self._expected_key(scope) or not wrapped:
            raise InvalidCiphertextError
        cache_key = hashlib.sha256(b"\0".join((key_id.encode(), wrapped, associated_data))).digest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(cache_key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(cache_key)
                self.metrics.cache_hits.inc()
                return cached[1]
        self.metrics.cache_misses.inc()
        # Pods of one deployment start together and read the same ciphertexts: one unwrap each.
        data_key = self._unwraps.do(
            cache_key,
            lambda: self._call("unwrap", lambda: self.kms.unwrap(key_id, wrapped, associated_data)),
        )
        if len(data_key) != DATA_KEY_BYTES:
            raise InvalidCiphertextError
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[cache_key] = (now + self._cache_seconds, data_key)
                self._cache.move_to_end(cache_key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return data_key

    def check_ready(self) -> None:
        self.kms.check_ready()
