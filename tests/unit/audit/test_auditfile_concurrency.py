from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from kamus_decryptor.auditfile import AuditFile
from kamus_kms.auditchain import read_records, verify

PROCESSES = 4
THREADS = 2
PER_THREAD = 125

# Each worker process appends from several threads at once, like a gunicorn gthread worker. It
# announces itself and waits for the go file so that all processes really write at the same time.
WORKER = """
import base64, os, sys, threading, time
from pathlib import Path
from kamus_decryptor.auditfile import AuditFile

path, name, key, threads, count, folder = sys.argv[1:7]
log = AuditFile(Path(path), base64.b64decode(key), fsync=False)
(Path(folder) / f"ready-{name}").touch()
while not (Path(folder) / "go").exists():
    time.sleep(0.001)

def append(thread):
    for number in range(int(count)):
        log.append({"request_id": f"{name}-{thread}-{number}", "outcome": "allowed"})

workers = [threading.Thread(target=append, args=(t,)) for t in range(int(threads))]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
"""


def _assert_complete(path: Path, key: bytes, expected: set[str]) -> None:
    result = verify(path, key)
    assert result.ok, (result.line, result.problem)
    assert result.records == len(expected)
    records = list(read_records(path))
    assert [record["seq"] for record in records] == list(range(1, len(expected) + 1))
    ids = Counter(record["request_id"] for record in records)
    assert set(ids) == expected
    assert max(ids.values()) == 1


def test_processes_and_threads_appending_at_once_leave_one_intact_chain(
    tmp_path: Path, key: bytes
) -> None:
    path = tmp_path / "audit.jsonl"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path, ""])}
    arguments = [base64.b64encode(key).decode(), str(THREADS), str(PER_THREAD), str(tmp_path)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(name), *arguments], env=environment
        )
        for name in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < PROCESSES:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(worker.poll() is None for worker in workers), "a worker died"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        assert [worker.wait(timeout=60) for worker in workers] == [0] * PROCESSES
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    expected = {
        f"{name}-{thread}-{number}"
        for name in range(PROCESSES)
        for thread in range(THREADS)
        for number in range(PER_THREAD)
    }
    _assert_complete(path, key, expected)


def test_threads_sharing_one_audit_file_leave_one_intact_chain(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditFile(path, key, fsync=False)
    start = threading.Barrier(8)

    def append(thread: int) -> None:
        start.wait()
        for number in range(100):
            log.append({"request_id": f"{thread}-{number}", "outcome": "allowed"})

    threads = [threading.Thread(target=append, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _assert_complete(path, key, {f"{t}-{n}" for t in range(8) for n in range(100)})
