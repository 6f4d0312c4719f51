from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from kamus_decryptor.tokencache import CachingTokenReviewer, token_expiry
from kamus_decryptor.tokenreview import Caller, ReviewMetrics
from kamus_kms.errors import UnavailableError
from kamus_kms.scope import Scope
from kamus_service.errors import AuthenticationError


class Clock:
    """A settable monotonic and wall clock."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class CountingReviewer:
    """Accepts tokens starting with 'good', rejects others; can be slow or unavailable."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.available = True
        self._lock = threading.Lock()

    def review(self, token: str) -> Caller:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if not self.available:
            raise UnavailableError("down")
        if not token.startswith("good"):
            raise AuthenticationError("the token was rejected: invalid bearer token")
        return Caller(Scope("team-a", "app"), "system:serviceaccount:team-a:app", "uid")

    def check_ready(self) -> None:
        return


def _jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=").decode()
    return f"good.{payload}.sig"


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves."""
    return Clock()


@pytest.fixture
def inner() -> CountingReviewer:
    """The reviewer behind the cache, counting its calls."""
    return CountingReviewer()


def _cache(inner: CountingReviewer, clock: Clock, **overrides: float) -> CachingTokenReviewer:
    options = {"ttl": 30.0, "failure_ttl": 5.0, "max_concurrent": 4, "wait_timeout": 2.0}
    options.update(overrides)
    return CachingTokenReviewer(
        inner, ttl=options["ttl"], failure_ttl=options["failure_ttl"],
        max_concurrent=int(options["max_concurrent"]), wait_timeout=options["wait_timeout"],
        metrics=ReviewMetrics(CollectorRegistry()), clock=clock, wall_clock=clock,
    )  # fmt: skip


def test_a_token_is_reviewed_once_until_the_ttl_passes(
    inner: CountingReviewer, clock: Clock
) -> None:
    cache = _cache(inner, clock)
    for _ in range(100):
        assert cache.review("good-token").scope == Scope("team-a", "app")
    assert inner.calls == 1
    clock.now += 31
    cache.review("good-token")
    assert inner.calls == 2


def test_the_cache_never_outlives_the_token(inner: CountingReviewer, clock: Clock) -> None:
    cache = _cache(inner, clock)
    token = _jwt(exp=clock.now + 10)
    cache.review(token)
    clock.now += 11
    cache.review(token)
    assert inner.calls == 2


def test_rejections_are_remembered_briefly(inner: CountingReviewer, clock: Clock) -> None:
    cache = _cache(inner, clock)
    for _ in range(10):
        with pytest.raises(AuthenticationError, match="invalid bearer token"):
            cache.review("bad-token")
    assert inner.calls == 1
    clock.now += 6
    with pytest.raises(AuthenticationError):
        cache.review("bad-token")
    assert inner.calls == 2


def test_unavailable_answers_are_never_cached(inner: CountingReviewer, clock: Clock) -> None:
    cache = _cache(inner, clock)
    inner.available = False
    for _ in range(3):
        with pytest.raises(UnavailableError):
            cache.review("good-token")
    inner.available = True
    assert cache.review("good-token").username.endswith(":app")
    assert inner.calls == 4


def test_concurrent_requests_with_one_token_share_one_review(clock: Clock) -> None:
    inner = CountingReviewer(delay=0.2)
    cache = _cache(inner, clock)
    with ThreadPoolExecutor(max_workers=32) as pool:
        callers = list(pool.map(lambda _: cache.review("good-token"), range(64)))
    assert inner.calls == 1
    assert {c.username for c in callers} == {"system:serviceaccount:team-a:app"}


def test_reviews_beyond_the_concurrency_bound_wait_then_fail_closed(clock: Clock) -> None:
    inner = CountingReviewer(delay=0.5)
    cache = _cache(inner, clock, max_concurrent=1, wait_timeout=0.1)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(cache.review, "good-1")
        time.sleep(0.05)
        second = pool.submit(cache.review, "good-2")
        assert first.result().scope == Scope("team-a", "app")
        with pytest.raises(UnavailableError):
            second.result()


@pytest.mark.parametrize(
    ("token", "expected"),
    [(_jwt(12345), 12345.0), ("not-a-jwt", None), ("a.!!!.c", None), ("a.e30.c", None)],
)
def test_token_expiry_is_read_from_the_exp_claim(token: str, expected: float | None) -> None:
    assert token_expiry(token) == expected
