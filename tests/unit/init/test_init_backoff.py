"""Backoff delays and the retry loop, on a fake clock."""

from __future__ import annotations

import pytest
from fake_clock import FakeClock

from kamus_client.errors import ServerRefusedError, ServerUnavailableError
from kamus_init.backoff import Backoff, call_with_retries


def unavailable(retry_after: float | None = None) -> ServerUnavailableError:
    return ServerUnavailableError("down", transient=True, status=503, retry_after=retry_after)


@pytest.mark.parametrize(
    ("retry", "draw", "delay"),
    [(0, 0.0, 0.25), (0, 0.999999, 0.5), (1, 0.0, 0.5), (3, 1.0, 4.0), (10, 1.0, 10.0)],
)
def test_delay_grows_exponentially_with_jitter_up_to_the_maximum(
    retry: int, draw: float, delay: float
) -> None:
    assert Backoff().delay(retry, None, lambda: draw) == pytest.approx(delay, abs=1e-5)


@pytest.mark.parametrize(("retry_after", "delay"), [(3.0, 3.0), (0.0, 0.25), (600.0, 30.0)])
def test_retry_after_is_a_floor_capped_at_max_retry_after(retry_after: float, delay: float) -> None:
    assert Backoff().delay(0, retry_after, lambda: 0.0) == delay


def test_retries_transient_errors_until_success() -> None:
    clock = FakeClock()
    outcomes: list[ServerUnavailableError | str] = [unavailable(), unavailable(), "done"]

    def call(timeout: float) -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = call_with_retries(call, deadline=60, clock=clock, sleep=clock.sleep, draw=lambda: 0.0)

    assert result == "done"
    assert clock.sleeps == [0.25, 0.5]


def test_gives_up_when_the_next_wait_would_pass_the_deadline() -> None:
    clock = FakeClock()
    timeouts: list[float] = []

    def call(timeout: float) -> str:
        timeouts.append(timeout)
        raise unavailable()

    with pytest.raises(ServerUnavailableError, match="gave up after 4 attempt") as raised:
        call_with_retries(call, deadline=5, clock=clock, sleep=clock.sleep, draw=lambda: 1.0)

    assert raised.value.transient is False
    assert clock.sleeps == [0.5, 1.0, 2.0]  # a fourth wait of 4s would end past 5s
    assert timeouts == [5.0, 4.5, 3.5, 1.5]  # no attempt may outlive the deadline


@pytest.mark.parametrize(
    "error",
    [
        ServerRefusedError("no", status=403),
        ServerUnavailableError("bug", transient=False, status=500),
    ],
)
def test_errors_that_are_not_transient_are_raised_at_once(error: Exception) -> None:
    clock = FakeClock()
    calls: list[float] = []

    def call(timeout: float) -> str:
        calls.append(timeout)
        raise error

    with pytest.raises(type(error)):
        call_with_retries(call, deadline=60, clock=clock, sleep=clock.sleep)

    assert len(calls) == 1
    assert clock.sleeps == []


def test_each_attempt_gets_at_most_the_attempt_timeout() -> None:
    seen: list[float] = []

    def call(timeout: float) -> str:
        seen.append(timeout)
        return "ok"

    call_with_retries(call, deadline=60, backoff=Backoff(attempt_timeout=7), clock=FakeClock())

    assert seen == [7]
