"""Limiting failed decrypt attempts per caller.

Only failures count (400, 401, 403), so a legitimate pod that decrypts its own secrets is never
slowed down, while someone probing ciphertexts or retrying a bad token is answered 429 once they
pass the limit within the current minute. The decryptor keys a caller by its token (by source
address only for requests with none), and each worker process counts on its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from kamus_service.errors import RateLimitedError

WINDOW_SECONDS = 60.0
_MAX_KEYS = 100_000


class FailureLimiter:
    """Counts failures per key in fixed one-minute windows; 0 disables the limit."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}

    def check(self, *keys: str | None) -> None:
        """Raise RateLimitedError when any key has used up its failures for this window."""
        if not self.per_minute:
            return
        now = self._clock()
        with self._lock:
            for key in filter(None, keys):
                started, count = self._counts.get(key, (now, 0))
                if now - started < WINDOW_SECONDS and count >= self.per_minute:
                    retry_after = math.ceil(started + WINDOW_SECONDS - now)
                    raise RateLimitedError(
                        "too many failed attempts; retry later", retry_after=max(retry_after, 1)
                    )

    def record_failure(self, *keys: str | None) -> None:
        """Count one failed attempt against every key."""
        if not self.per_minute:
            return
        now = self._clock()
        with self._lock:
            if len(self._counts) > _MAX_KEYS:
                self._counts = {
                    k: v for k, v in self._counts.items() if now - v[0] < WINDOW_SECONDS
                }
            for key in filter(None, keys):
                started, count = self._counts.get(key, (now, 0))
                if now - started >= WINDOW_SECONDS:
                    started, count = now, 0
                self._counts[key] = (started, count + 1)
