from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kamus_kms.errors import InvalidCiphertextError, UnavailableError
from kamus_kms.singleflight import SingleFlight


def test_waiters_time_out_closed_when_the_leader_hangs() -> None:
    flights: SingleFlight[bytes] = SingleFlight(wait_timeout=0.2)
    release = threading.Event()

    def hang() -> bytes:
        release.wait(5)
        return b"late"

    with ThreadPoolExecutor(max_workers=2) as pool:
        leader = pool.submit(flights.do, "k", hang)
        time.sleep(0.05)
        waiter = pool.submit(flights.do, "k", hang)
        with pytest.raises(UnavailableError):
            waiter.result()
        release.set()
        assert leader.result() == b"late"


def test_each_waiter_gets_its_own_exception_of_the_leaders_type() -> None:
    flights: SingleFlight[bytes] = SingleFlight()
    started = threading.Event()

    def refuse() -> bytes:
        started.set()
        time.sleep(0.2)
        raise InvalidCiphertextError

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(flights.do, "k", refuse)]
        started.wait(5)
        futures += [pool.submit(flights.do, "k", refuse) for _ in range(3)]
        errors = []
        for future in futures:
            with pytest.raises(InvalidCiphertextError) as caught:
                future.result()
            errors.append(caught.value)
    assert len({id(error) for error in errors}) == 4
