"""Retrying transient decryptor failures with exponential backoff and jitter, within a deadline.

Transient: a ServerUnavailableError marked transient (502/503/504, connection refused or reset,
timeouts) and a TooManyRequestsError (429). A ``Retry-After`` longer than the backoff is honoured.
"""

from __future__ import annotations

import time

from kamus_client.errors import ServerUnavailableError, TooManyRequestsError

TYPE_CHECKING = False  # not typing's: see kamus_client.transport
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


class Backoff:
    """Delays between attempts: ``initial * factor**n`` capped at ``maximum``, with jitter.

    ``max_retry_after``: a server asking for longer is not waited for beyond it.
    ``attempt_timeout``: one attempt never waits longer, so a hung connection is retried.
    """

    __slots__ = ("attempt_timeout", "factor", "initial", "max_retry_after", "maximum")

    def __init__(
        self,
        initial: float = 0.5,
        factor: float = 2.0,
        maximum: float = 10.0,
        max_retry_after: float = 30.0,
        attempt_timeout: float = 20.0,
    ) -> None:
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.max_retry_after = max_retry_after
        self.attempt_timeout = attempt_timeout

    def delay(self, retry: int, retry_after: float | None, draw: Callable[[], float]) -> float:
        """Return seconds to wait before retry number ``retry`` (0-based); ``draw`` is in [0, 1)."""
        ceiling = min(self.maximum, self.initial * self.factor**retry)
        # Jitter spreads the retries of many pods restarted together over time.
        delay = ceiling * (0.5 + draw() / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


def call_with_retries(
    call: Callable[[float], T],
    *,
    deadline: float,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] | None = None,
) -> T:
    """Return ``call(attempt_timeout)``, retrying transient ServerUnavailableErrors and 429s.

    Other errors propagate at once. When the next wait would pass ``deadline`` seconds from the
    start, raises a non-transient ServerUnavailableError holding the last reason.
    """
    policy = backoff or Backoff()
    end = clock() + deadline
    retry = 0
    while True:
        remaining = end - clock()
        try:
            return call(min(remaining, policy.attempt_timeout))
        except (ServerUnavailableError, TooManyRequestsError) as exc:
            if isinstance(exc, ServerUnavailableError) and not exc.transient:
                raise
            if draw is None:
                import random  # noqa: PLC0415 - only a retry needs it, not every pod start

                draw = random.random
            wait = policy.delay(retry, exc.retry_after, draw)
            retry += 1
            if clock() + wait >= end:
                raise ServerUnavailableError(
                    f"gave up after {retry} attempt(s) within the {deadline:g}s deadline: {exc}",
                    transient=False,
                    status=exc.status,
                ) from exc
            sleep(wait)
