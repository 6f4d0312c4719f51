"""Readiness: dependency checks made at most once per interval, in the background of probes,
counted, and reported (not enforced) so a shared outage does not empty the Service; only the
process's own conditions (enforced checks) fail a plain /readyz."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from kamus_dev.authority import ManualClock
from kamus_kms.errors import UnavailableError
from kamus_kms.keyring import Keyring
from kamus_service.readiness import Readiness
from kamus_service.settings import Settings
from kamus_service.webapp import new_app


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


@pytest.fixture
def own() -> Dependency:
    """A condition of the process itself, as its audit volume is."""
    return Dependency()


def test_only_an_enforced_check_makes_the_process_not_ready(
    dependency: Dependency, own: Dependency, clock: ManualClock, registry: CollectorRegistry
) -> None:
    readiness = Readiness({"tokenreview": dependency, "audit": own}, registry, enforced={"audit"},
                          interval=5.0, clock=clock)  # fmt: skip
    readings = []
    for shared_down, own_down in [(False, False), (True, False), (True, True), (False, False)]:
        dependency.down, own.down = shared_down, own_down
        states = readiness.states(wait=True)
        shown = (states["tokenreview"].ready, states["audit"].ready)
        readings.append((*shown, readiness.ready(states)))
        clock.advance(5)
    assert readings == [(True, True, True), (False, True, True), (False, False, False),
                        (True, True, True)]  # fmt: skip
    assert registry.get_sample_value("kamus_dependency_ready", {"dependency": "audit"}) == 1


def test_a_plain_probe_answers_with_the_fresh_result_of_an_enforced_check(
    dependency: Dependency, own: Dependency, clock: ManualClock, registry: CollectorRegistry
) -> None:
    readiness = Readiness({"tokenreview": dependency, "audit": own}, registry, enforced={"audit"},
                          interval=5.0, clock=clock)  # fmt: skip
    dependency.release.clear()  # a dependency that hangs
    own.down = True
    try:
        # The very first probe (a pod just started) already knows, and does not wait for the
        # dependency; the one before would have answered ready.
        states = readiness.states()
        assert "tokenreview" not in states
        assert (states["audit"].ready, readiness.ready(states)) == (False, False)
    finally:
        dependency.release.set()
    readiness.states(wait=True)
    own.down = False
    clock.advance(5)
    assert readiness.ready(readiness.states())  # and back at the next probe after the repair


def test_a_hanging_enforced_check_delays_a_probe_half_a_second_at_most(
    own: Dependency, registry: CollectorRegistry
) -> None:
    readiness = Readiness({"audit": own}, registry, enforced={"audit"})
    own.release.clear()
    try:
        started = time.monotonic()
        assert readiness.states() == {}
        assert time.monotonic() - started < 2
    finally:
        own.release.set()


def test_an_enforced_name_without_its_check_is_refused(
    dependency: Dependency, registry: CollectorRegistry
) -> None:
    with pytest.raises(ValueError, match="audit"):
        Readiness({"tokenreview": dependency}, registry, enforced={"audit"})


@pytest.mark.parametrize(("down", "status"), [(None, 200), ("tokenreview", 200), ("audit", 503)])
def test_plain_readyz_fails_for_an_enforced_check_and_only_for_it(
    keyring: Keyring, down: str | None, status: int
) -> None:
    checks = {"tokenreview": Dependency(), "audit": Dependency()}
    if down is not None:
        checks[down].down = True
    settings = Settings(service="encryptor", keyring=keyring.to_json(), readiness_check_seconds=0)
    app = new_app("test", settings, readiness=checks, enforced={"audit"}, openapi={},
                  registry=CollectorRegistry())  # fmt: skip
    client = app.test_client()
    verbose = client.get("/readyz?verbose")
    plain = client.get("/readyz")
    assert (verbose.status_code, plain.status_code) == (status, status)
    assert plain.get_json() == {"status": "ready" if status == 200 else "not_ready"}
    shown = verbose.get_json()["dependencies"]
    assert {name: (entry["ready"], entry["enforced"]) for name, entry in shown.items()} == {
        "tokenreview": (down != "tokenreview", False),
        "audit": (down != "audit", True),
    }
