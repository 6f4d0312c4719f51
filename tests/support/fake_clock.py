"""A monotonic clock for retry tests: it moves only when the code under test sleeps."""

from __future__ import annotations


class FakeClock:
    """Call it for the time; pass ``sleep`` as the sleep function. ``sleeps`` records each wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
