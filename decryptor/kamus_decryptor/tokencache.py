"""Caching token verification, so a pod-restart storm is not a TokenReview storm.

A successful review is kept, under the SHA-256 of the token (never the token), until the earlier of
the configured TTL and the token's own `exp`. A rejection is kept briefly, so a client retrying a
bad token does not hammer the API server either. Concurrent requests with one token share a single
review ("single flight"), and at most `max_concurrent` reviews run at once per process. Answers of
"unavailable" are never cached: the next request tries again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from kamus_decryptor.tokenreview import Caller, ReviewMetrics, TokenReviewer
from kamus_kms.errors import RequestError, UnavailableError

_MAX_ENTRIES = 10_000


def token_key(token: str) -> str:
    """The cache and rate-limit key of a token: its SHA-256, so the token itself is never kept."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verification (only to shorten a cache entry)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


@dataclass
class _Entry:
    expires: float
    caller: Caller | None = None
    error: RequestError | None = None


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    entry: _Entry | None = None
    unavailable: UnavailableError | None = None


class CachingTokenReviewer:
    """Wraps a TokenReviewer with a bounded cache, single flight and a concurrency bound."""

    def __init__(
        self,
        inner: TokenReviewer,
        *,
        ttl: float,
        failure_ttl: float,
        max_concurrent: int,
        wait_timeout: float,
        metrics: ReviewMetrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.wait_timeout = wait_timeout
        self.metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}

    def review(self, token: str) -> Caller:
        key = token_key(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._clock():
                self._entries.move_to_end(key)
                self.metrics.cache_hits.inc()
                return _answer(entry)
            self.metrics.cache_misses.inc()
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leader:
            self._lead(key, token, flight)
        elif not flight.done.wait(self.wait_timeout):
            raise UnavailableError("token verification is busy; retry later")
        if flight.unavailable is not None:
            raise flight.unavailable
        assert flight.entry is not None
        return _answer(flight.entry)

    def _lead(self, key: str, token: str, flight: _Flight) -> None:
        try:
            flight.entry = self._review_bounded(token)
            self._store(key, flight.entry)
        except UnavailableError as exc:
            flight.unavailable = exc
        except Exception:
            # A bug in the leader's review: it surfaces (500) for the leader, and the requests
            # that waited on it fail closed instead of reading an empty result.
            flight.unavailable = UnavailableError("token verification failed; retry later")
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def _review_bounded(self, token: str) -> _Entry:
        if not self._slots.acquire(timeout=self.wait_timeout):
            raise UnavailableError("too many token verifications at once; retry later")
        try:
            return self._review(token)
        finally:
            self._slots.release()

    def _review(self, token: str) -> _Entry:
        now = self._clock()
        try:
            caller = self.inner.review(token)
        except RequestError as exc:
            return _Entry(now + self.failure_ttl, error=exc)
        lifetime = self.ttl
        exp = token_expiry(token)
        if exp is not None:
            lifetime = min(lifetime, exp - self._wall_clock())
        return _Entry(now + lifetime, caller=caller)

    def _store(self, key: str, entry: _Entry) -> None:
        if entry.expires <= self._clock():
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)

    def check_ready(self) -> None:
        self.inner.check_ready()


def _answer(entry: _Entry) -> Caller:
    if entry.error is not None:
        # A fresh exception each time: one instance raised in several threads would share (and
        # grow) one traceback.
        raise type(entry.error)(str(entry.error))
    assert entry.caller is not None
    return entry.caller
