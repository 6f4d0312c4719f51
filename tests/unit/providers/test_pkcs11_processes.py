"""The PKCS#11 adapter across threads and processes: forks, racing replicas, the PIN."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from backend_pkcs11 import SHARED_KEY, TOKEN_LABEL, USER_PIN, Pkcs11Backend
from kms_backend import Backend

from kamus_kms.providers import pkcs11 as adapter_module
from kamus_kms.providers.pkcs11 import WrappedKey

DATA_KEY = bytes(range(32))
KMS_SOURCES = Path(__file__).resolve().parents[3] / "kms"
FORK = multiprocessing.get_context("fork")
# Builds an adapter with a wrong PIN, then with the right one whose PIN the token later refuses.
_PIN_SCRIPT = """
import json, sys
from kamus_kms.errors import ConfigurationError, UnavailableError
from kamus_kms.providers import pkcs11 as module
library, label, right, wrong = sys.argv[1:]
messages = []
try:
    module.Pkcs11Kms(library=library, token_label=label, pin=wrong)
except ConfigurationError as exc:
    messages.append(str(exc))
module._forget_parent_state()
kms = module.Pkcs11Kms(library=library, token_label=label, pin=right)
token = module._process().token(library, label, right)
token._pin, token.module.needs_reset = wrong, True
for _ in range(2):
    try:
        kms.wrap("kamus-shared", bytes(32), b"header")
    except UnavailableError as exc:
        messages.append(str(exc))
print(json.dumps(messages))
"""


@pytest.fixture
def backend(backends: dict[str, Backend]) -> Pkcs11Backend:
    """The SoftHSM2 backend."""
    started = backends["pkcs11"]
    assert isinstance(started, Pkcs11Backend)
    return started


def _in_children(target: Callable[..., Any], count: int, *args: Any) -> list[Any]:
    """Run `target(results, *args)` in `count` forked children; what they put in `results`."""
    results = FORK.Queue()
    children = [FORK.Process(target=target, args=(results, *args)) for _ in range(count)]
    for child in children:
        child.start()
    collected = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    return collected


def test_a_forked_child_opens_its_own_session(backend: Pkcs11Backend) -> None:
    kms = backend.kms()
    parent_blob = kms.wrap(SHARED_KEY, DATA_KEY, b"parent")

    def child(results: Any) -> None:
        opened = kms.unwrap(SHARED_KEY, parent_blob, b"parent")
        own_state = adapter_module._process().pid == os.getpid()
        reinitialized = adapter_module._INITIALIZED_IN[backend.library] == os.getpid()
        results.put((opened, own_state, reinitialized, kms.wrap(SHARED_KEY, DATA_KEY, b"child")))

    ((opened, own_state, reinitialized, child_blob),) = _in_children(child, 1)
    assert (opened, own_state, reinitialized) == (DATA_KEY, True, True)
    assert kms.unwrap(SHARED_KEY, child_blob, b"child") == DATA_KEY
    assert kms.unwrap(SHARED_KEY, parent_blob, b"parent") == DATA_KEY


def test_a_lock_held_by_another_thread_at_fork_time_does_not_block_the_child(
    backend: Pkcs11Backend,
) -> None:
    kms = backend.kms()
    kms.check_ready()
    lock = adapter_module._process().modules[backend.library].lock

    def child(results: Any) -> None:
        results.put(kms.unwrap(SHARED_KEY, kms.wrap(SHARED_KEY, DATA_KEY, b"h"), b"h"))

    with lock:
        assert _in_children(child, 1) == [DATA_KEY]


def test_threads_share_one_adapter_safely(backend: Pkcs11Backend) -> None:
    kms = backend.kms()

    def round_trip(number: int) -> bool:
        data_key, header = os.urandom(32), f"header-{number}".encode()
        wrapped = kms.wrap(SHARED_KEY, data_key, header)
        return kms.unwrap(SHARED_KEY, wrapped, header) == data_key

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(round_trip, range(200)))


def test_replicas_racing_to_create_a_key_converge_on_one(
    backend: Pkcs11Backend, tmp_path: Path
) -> None:
    name = f"kamus-race-{uuid.uuid4().hex}"
    barrier = FORK.Barrier(2)

    def replica(results: Any) -> None:
        kms = backend.kms()
        barrier.wait(timeout=20)
        kms.ensure_key(name)
        barrier.wait(timeout=20)
        blob = kms.wrap(name, DATA_KEY, b"race")
        (tmp_path / f"{os.getpid()}.blob").write_bytes(blob)
        barrier.wait(timeout=20)
        # Each replica opens what the other one sealed.
        opened = [kms.unwrap(name, path.read_bytes(), b"race") for path in tmp_path.iterdir()]
        results.put((blob, opened))

    outcomes = _in_children(replica, 2)
    assert all(opened == [DATA_KEY, DATA_KEY] for _, opened in outcomes)
    key_ids = {WrappedKey.parse(blob).key_id for blob, _ in outcomes}
    assert len(key_ids) == 1
    assert WrappedKey.parse(backend.kms().wrap(name, DATA_KEY, b"race")).key_id in key_ids


def test_a_wrong_pin_is_a_clear_error_that_never_shows_the_pin(backend: Pkcs11Backend) -> None:
    wrong = "wrong-pin-31337"
    result = subprocess.run(
        [sys.executable, "-c", _PIN_SCRIPT, backend.library, TOKEN_LABEL, USER_PIN, wrong],
        env={**backend.env(), "PYTHONPATH": str(KMS_SOURCES)}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    at_build, at_runtime, afterwards = json.loads(result.stdout)
    assert "KAMUS_PKCS11_PIN" in at_build
    assert "PinIncorrect" in at_build
    assert "PinIncorrect" in at_runtime
    assert "not retried" in afterwards
    for text in (result.stdout, result.stderr):
        assert wrong not in text
        assert USER_PIN not in text
