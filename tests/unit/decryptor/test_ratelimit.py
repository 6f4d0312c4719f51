from __future__ import annotations

import pytest

from kamus_decryptor.ratelimit import FailureLimiter
from kamus_service.errors import RateLimitedError


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failures_beyond_the_limit_are_refused_until_the_window_ends() -> None:
    clock = Clock()
    limiter = FailureLimiter(3, clock)
    for _ in range(3):
        limiter.check("source:a")
        limiter.record_failure("source:a")
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("source:a")
    assert 1 <= caught.value.retry_after <= 60
    limiter.check("source:b")  # another caller is unaffected
    clock.now += 60
    limiter.check("source:a")


def test_any_limited_key_refuses_the_attempt() -> None:
    limiter = FailureLimiter(1, Clock())
    limiter.record_failure("source:a", "token:x")
    with pytest.raises(RateLimitedError):
        limiter.check("source:other", "token:x")


def test_zero_disables_the_limit() -> None:
    limiter = FailureLimiter(0, Clock())
    for _ in range(100):
        limiter.record_failure("source:a")
    limiter.check("source:a")
