"""Single flight: concurrent callers asking for the same key share one computation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kamus_kms.errors import KamusError, UnavailableError

_V = TypeVar("_V")


@dataclass
class _Flight(Generic[_V]):
    done: threading.Event = field(default_factory=threading.Event)
    value: _V | None = None
    error: BaseException | None = None


class SingleFlight(Generic[_V]):
    """The first caller for a key runs the call; callers arriving meanwhile wait for its result.

    Waiters get the leader's value, or a fresh exception of the leader's Kamus error type; they
    wait at most `wait_timeout` seconds, then fail closed with UnavailableError.
    """

    def __init__(self, wait_timeout: float = 30.0) -> None:
        self._wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight[_V]] = {}

    def do(self, key: Hashable, call: Callable[[], _V]) -> _V:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leader:
            try:
                flight.value = call()
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                with self._lock:
                    del self._flights[key]
                flight.done.set()
            return flight.value
        if not flight.done.wait(self._wait_timeout):
            raise UnavailableError("the key provider is busy; retry later")
        if flight.error is not None:
            if isinstance(flight.error, KamusError):
                # A fresh exception each: one instance raised in many threads shares a traceback.
                raise type(flight.error)(*flight.error.args)
            raise UnavailableError("the key provider failed; retry later")
        return flight.value  # type: ignore[return-value]
