"""Fault injection on the whole path, and a short bounded load test with flat memory."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from gunicorn_process import Service, base_environment

from kamus_dev.authority import TokenAuthority

TokenFactory = Callable[..., str]
BODY = {"data": "load-secret", "namespace": "load", "service-account": "app"}


@pytest.fixture
def folder(encryptor: Service, tmp_path: Path) -> Path:
    """A folder with one ciphertext for load/app."""
    path = tmp_path / "encrypted"
    path.mkdir()
    text = requests.post(f"{encryptor.url}/api/v1/encrypt", json=BODY, timeout=10).text
    (path / "secret").write_text(text)
    return path


def _kamus_init(
    url: str, token: str, folder: Path, out: Path, deadline: float
) -> subprocess.Popen[str]:
    token_file = out.parent / "token"
    token_file.write_text(token)
    env = base_environment({"KAMUS_URL": url, "TOKEN_FILE_PATH": str(token_file)})
    command = [sys.executable, "-m", "kamus_init.main", "-e", str(folder), "-d", str(out),
               "-f", "files", "--timeout", str(deadline)]  # fmt: skip
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


def test_init_retries_through_a_token_review_outage_then_fails_writing_nothing(
    decryptor: Service, authority: TokenAuthority, token: TokenFactory, folder: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    minted = token("load", "app")
    before = authority.tokenreview_calls
    authority.fault = "error500"
    try:
        process = _kamus_init(decryptor.url, minted, folder, out, deadline=8)
        _, stderr = process.communicate(timeout=60)
    finally:
        authority.fault = None
    assert process.returncode == 6, stderr
    assert list(out.iterdir()) == []
    assert authority.tokenreview_calls - before >= 2  # it retried; each try asked again
    assert minted not in stderr


def test_init_rides_out_a_short_outage(
    decryptor: Service, authority: TokenAuthority, token: TokenFactory, folder: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    authority.fault = "error500"
    try:
        process = _kamus_init(decryptor.url, token("load", "app"), folder, out, deadline=30)
        time.sleep(1.5)
    finally:
        authority.fault = None
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert (out / "secret").read_text() == "load-secret"


def _worker_rss_kib(service: Service) -> int:
    master = service.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    total = 0
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def test_a_short_load_has_no_errors_and_flat_memory(
    decryptor: Service, encryptor: Service, token: TokenFactory
) -> None:
    ciphertext = requests.post(f"{encryptor.url}/api/v1/encrypt", json=BODY, timeout=10).text
    headers = {"Authorization": f"Bearer {token('load', 'app')}"}
    failures: list[str] = []
    done = threading.Event()

    def hammer(seconds: float) -> int:
        count = 0
        with requests.Session() as session:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                response = session.post(f"{decryptor.url}/api/v1/decrypt", timeout=30,
                                        json={"data": ciphertext}, headers=headers)  # fmt: skip
                if response.status_code != 200 or response.text != "load-secret":
                    failures.append(f"{response.status_code} {response.text[:80]}")
                count += 1
        return count

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(hammer, [1.0] * 8))  # warm-up: caches, imports, allocator
        baseline = _worker_rss_kib(decryptor)
        counts = list(pool.map(hammer, [4.0] * 8))
    done.set()
    grown = _worker_rss_kib(decryptor) - baseline
    assert failures == []
    assert sum(counts) > 100
    assert grown < 20 * 1024, f"workers grew by {grown} KiB over {sum(counts)} requests"
