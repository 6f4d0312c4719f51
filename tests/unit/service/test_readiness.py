"""Readiness: dependency checks made at most once per interval, in the background of probes,
counted, and reported (not enforced) so a shared outage does not empty the Service."""

from __future__ import annotations

import logging
import threading

import pytest
from prometheus_client import CollectorRegistry

from kamus_dev.authority import ManualClock
from kamus_kms.errors import UnavailableError
from kamus_service.readiness import Readiness


class Dependency:
    """A check that counts its calls, can fail, and can be held mid-call."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        self.release.wait()
        if self.down:
            raise UnavailableError("token verification is unavailable; retry later")


@pytest.fixture
def dependency() -> Dependency:
    """The one dependency of the process under test."""
    return Dependency()


@pytest.fixture
def clock() -> ManualClock:
    """The readiness clock."""
    return ManualClock(100.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    """Where the readiness metrics go."""
    return CollectorRegistry()


@pytest.fixture
def readiness(dependency: Dependency, clock: ManualClock, registry: CollectorRegistry) -> Readiness:
    """Readiness over the dependency, checked at most every 5 s."""
    return Readiness({"tokenreview": dependency}, registry, interval=5.0, clock=clock)


def test_a_thousand_probes_within_the_interval_cost_one_check(
    readiness: Readiness, dependency: Dependency, clock: ManualClock
) -> None:
    for _ in range(1000):
        readiness.states()
    readiness.states(wait=True)
    assert dependency.calls == 1
    clock.advance(5)
    readiness.states(wait=True)
    assert dependency.calls == 2


def test_checks_are_counted_and_the_state_is_a_gauge(
    readiness: Readiness, dependency: Dependency, clock: ManualClock, registry: CollectorRegistry
) -> None:
    readiness.states(wait=True)
    dependency.down = True
    clock.advance(5)
    state = readiness.states(wait=True)["tokenreview"]
    assert (state.ready, state.error) == (False, "unavailable")
    sample = registry.get_sample_value
    assert (
        sample("kamus_readiness_checks_total", {"dependency": "tokenreview", "result": "ok"}) == 1
    )
    assert sample("kamus_readiness_checks_total",
                  {"dependency": "tokenreview", "result": "unavailable"}) == 1  # fmt: skip
    assert sample("kamus_dependency_ready", {"dependency": "tokenreview"}) == 0


def test_changes_of_state_are_logged_once_each(
    readiness: Readiness, dependency: Dependency, clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, "kamus.readiness")
    dependency.down = True
    for _ in range(3):
        readiness.states(wait=True)
        clock.advance(5)
    dependency.down = False
    for _ in range(3):
        readiness.states(wait=True)
        clock.advance(5)
    assert [r.getMessage() for r in caplog.records] == [
        "dependency unavailable",
        "dependency available again",
    ]


def test_a_hanging_check_never_delays_a_probe(
    readiness: Readiness, dependency: Dependency, clock: ManualClock
) -> None:
    readiness.states(wait=True)  # one known state: ready
    dependency.release.clear()
    dependency.entered.clear()
    dependency.down = True
    clock.advance(5)  # due again
    try:
        # The probe starts the check and answers with the last known state at once, even though
        # the check hangs: a dependency must not time the probe out.
        assert readiness.states()["tokenreview"].ready is True
        assert dependency.entered.wait(10)
        assert readiness.states()["tokenreview"].ready is True
    finally:
        dependency.release.set()
    assert readiness.states(wait=True)["tokenreview"].ready is False  # verbose waits for it
    assert dependency.calls == 2
