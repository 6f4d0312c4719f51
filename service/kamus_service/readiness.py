"""What `/readyz` reports: the process serves; its shared dependencies are reported, not enforced.

The services' remote dependencies (TokenReview on the API server, the KMS) are shared by every
replica. If readiness failed with them, one API server restart would mark every decryptor NotReady
at once, the Service would lose all its endpoints, and starting pods would get connection errors
instead of the `503` with `Retry-After` that kamus-init retries. So `/readyz` answers 200 while
the process can serve, and a dependency's state shows in `/readyz?verbose`, in the gauge
`kamus_dependency_ready{dependency}` and in a log line whenever it changes.

Checks run only when `/readyz` is asked, at most once per interval per process, in a thread of
their own: a plain probe never waits for them (a dependency that hangs must not time the probe out
and make the pod NotReady after all), `?verbose` waits for the fresh result. A flood of anonymous
probes costs one TokenReview (or KMS call) per interval, not one per probe. Every check is counted
in `kamus_readiness_checks_total{dependency,result}`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from kamus_kms.errors import KamusError

log = logging.getLogger("kamus.readiness")
ReadinessCheck = Callable[[], None]
CHECK_INTERVAL_SECONDS = 5.0
_VERBOSE_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class DependencyState:
    """The outcome of a dependency's last check."""

    ready: bool
    error: str | None  # the error code (never a message: /readyz?verbose is unauthenticated)
    since: float  # unix time of the last change


class Readiness:
    """The dependencies of one process and their last known states."""

    def __init__(
        self,
        checks: Mapping[str, ReadinessCheck],
        registry: CollectorRegistry,
        *,
        interval: float = CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._checks = dict(checks)
        self._interval = interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._idle = threading.Event()  # clear while a check is running
        self._idle.set()
        self._checked_at = float("-inf")
        self._states: dict[str, DependencyState] = {}
        self._counted = Counter(
            "kamus_readiness_checks", "Dependency checks made for /readyz by dependency and result",
            ["dependency", "result"], registry=registry,
        )  # fmt: skip
        self._ready = Gauge(
            "kamus_dependency_ready", "1 when the dependency answered its last check, else 0",
            ["dependency"], registry=registry,
            # With several worker processes, the latest check made by any of them.
            multiprocess_mode="mostrecent",
        )  # fmt: skip

    def states(self, *, wait: bool = False) -> dict[str, DependencyState]:
        """Every dependency's last known state; a new check starts when the last is old enough.

        With ``wait``, the states once the check running now (if any) has ended.
        """
        with self._lock:
            due = self._idle.is_set() and self._clock() - self._checked_at >= self._interval
            if due:
                self._idle.clear()
        if due:
            threading.Thread(target=self._check_all, name="kamus-readiness", daemon=True).start()
        if wait:
            self._idle.wait(_VERBOSE_WAIT_SECONDS)
        with self._lock:
            return dict(self._states)

    def _check_all(self) -> None:
        try:
            for name, check in self._checks.items():
                self._check(name, check)
        finally:
            with self._lock:
                self._checked_at = self._clock()
            self._idle.set()

    def _check(self, name: str, check: ReadinessCheck) -> None:
        try:
            check()
        except KamusError as exc:
            error: str | None = exc.code
        except Exception as exc:
            error = "internal_error"
            log.error(
                "readiness check failed unexpectedly",
                extra={"dependency": name, "error": type(exc).__name__},
            )
        else:
            error = None
        self._counted.labels(name, error or "ok").inc()
        self._ready.labels(name).set(0 if error else 1)
        self._record(name, error)

    def _record(self, name: str, error: str | None) -> None:
        with self._lock:
            previous = self._states.get(name)
            if previous is not None and previous.error == error:
                return
            self._states[name] = DependencyState(error is None, error, self._wall_clock())
        if error is not None:
            log.warning("dependency unavailable", extra={"dependency": name, "error": error})
        elif previous is not None:
            log.info("dependency available again", extra={"dependency": name})
