"""What `/readyz` reports: the process serves; its shared dependencies are reported, not enforced;
its own conditions are enforced.

The services' remote dependencies (TokenReview on the API server, the KMS) are shared by every
replica. If readiness failed with them, one API server restart would mark every decryptor NotReady
at once, the Service would lose all its endpoints, and starting pods would get connection errors
instead of the `503` with `Retry-After` that kamus-init retries. So `/readyz` answers 200 while
the process can serve, and a dependency's state shows in `/readyz?verbose`, in the gauge
`kamus_dependency_ready{dependency}` and in a log line whenever it changes.

A condition of the process itself (the decryptor's audit volume, under the fail-closed policy) is
different: while it fails, this pod refuses every decrypt and the other replicas would not. Such
checks are ``enforced``: plain `/readyz` answers 503 while one of them fails, so the kubelet takes
the pod out of the Service until it passes again. In all else they are checked, shown and
counted like the dependencies.

Checks run only when `/readyz` is asked, at most once per interval per process, in a thread of
their own, enforced ones first. A plain probe never waits for the dependencies (one that hangs must
not time the probe out and make the pod NotReady after all); it waits for the enforced checks,
which look at the process's own state and are quick, at most half a second, so that it answers
with their fresh result rather than the one before. `?verbose` waits for every fresh result. A
flood of anonymous probes costs one TokenReview (or KMS call) per interval, not one per probe.
Every check is counted in `kamus_readiness_checks_total{dependency,result}`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from kamus_kms.errors import KamusError, UnavailableError

log = logging.getLogger("kamus.readiness")
ReadinessCheck = Callable[[], None]
CHECK_INTERVAL_SECONDS = 5.0
_VERBOSE_WAIT_SECONDS = 30.0
_ENFORCED_WAIT_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class DependencyState:
    """The outcome of a dependency's last check."""

    ready: bool
    error: str | None  # the error code (never a message: /readyz?verbose is unauthenticated)
    since: float  # unix time of the last change
    reason: str | None = None  # what exactly failed, when the check says (UnavailableError.reason)


class Readiness:
    """The dependencies of one process and their last known states."""

    def __init__(
        self,
        checks: Mapping[str, ReadinessCheck],
        registry: CollectorRegistry,
        *,
        enforced: Collection[str] = (),
        interval: float = CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``enforced``: the names of ``checks`` that are conditions of the process itself."""
        unknown = set(enforced) - set(checks)
        if unknown:
            raise ValueError(f"enforced readiness checks without a check: {sorted(unknown)}")
        self.enforced = frozenset(enforced)
        # The process's own conditions first: a remote dependency that hangs must not delay them.
        self._checks = dict(sorted(checks.items(), key=lambda item: item[0] not in self.enforced))
        self._interval = interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._idle = threading.Event()  # clear while a check is running
        self._idle.set()
        self._enforced_done = threading.Event()  # clear while enforced checks are running
        self._enforced_done.set()
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

        With ``wait``, the states once the check running now (if any) has ended; without, once
        its enforced checks have (or half a second has passed).
        """
        with self._lock:
            due = self._idle.is_set() and self._clock() - self._checked_at >= self._interval
            if due:
                self._idle.clear()
                if self.enforced:
                    self._enforced_done.clear()
        if due:
            threading.Thread(target=self._check_all, name="kamus-readiness", daemon=True).start()
        if wait:
            self._idle.wait(_VERBOSE_WAIT_SECONDS)
        else:
            self._enforced_done.wait(_ENFORCED_WAIT_SECONDS)
        with self._lock:
            return dict(self._states)

    def ready(self, states: Mapping[str, DependencyState]) -> bool:
        """Whether the process should get requests: no enforced check failed its last run."""
        return all(states[name].ready for name in self.enforced if name in states)

    def _check_all(self) -> None:
        try:
            for name, check in self._checks.items():
                if name not in self.enforced:
                    self._enforced_done.set()  # they come first
                self._check(name, check)
        finally:
            with self._lock:
                self._checked_at = self._clock()
            self._enforced_done.set()
            self._idle.set()

    def _check(self, name: str, check: ReadinessCheck) -> None:
        reason = None
        try:
            check()
        except KamusError as exc:
            error: str | None = exc.code
            if isinstance(exc, UnavailableError):
                reason = exc.reason
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
        self._record(name, error, reason)

    def _record(self, name: str, error: str | None, reason: str | None) -> None:
        with self._lock:
            previous = self._states.get(name)
            if previous is not None and (previous.error, previous.reason) == (error, reason):
                return
            self._states[name] = DependencyState(error is None, error, self._wall_clock(), reason)
        if error is not None:
            log.warning(
                "dependency unavailable",
                extra={"dependency": name, "error": error, "reason": reason,
                       "enforced": name in self.enforced},
            )  # fmt: skip
        elif previous is not None:
            log.info("dependency available again", extra={"dependency": name})
