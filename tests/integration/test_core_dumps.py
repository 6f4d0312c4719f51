"""No core dump of a Kamus process: every program, and every gunicorn worker, starts with a core
size limit of 0 and without the dumpable flag (issue 22, item 17).

Each program runs as it is installed, from a core size limit made as large as allowed, and is
looked at while it holds its secrets (a decryptor answer it waits for, or serving). Linux shows
the limit in ``/proc/<pid>/limits``; the dumpable flag only through what it guards: an
unprivileged process of the same user may read ``/proc/<pid>/environ`` of a dumpable process and
not of another. When the tests run as root, the programs and that probe run as ``nobody``
(65534) in a folder of its own, as root reads anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from canned_server import CannedServer, Recorded, Reply, json_reply, serve
from gunicorn_process import GUNICORN_CONF, base_environment, free_port
from gunicorn_process import serve as serve_gunicorn

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc"),
    pytest.mark.skipif(
        os.geteuid() == 0 and shutil.which("setpriv") is None, reason="as root: needs setpriv"
    ),
]

BIN = Path(sys.executable).parent
NOBODY = 65534
SETPRIV = shutil.which("setpriv")
# Run argv[1:] with the largest core size allowed (setpriv then runs it as nobody, as root).
UNPRIVILEGED = """
import os, resource, sys
try:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
except (OSError, ValueError):
    resource.setrlimit(resource.RLIMIT_CORE, (resource.getrlimit(resource.RLIMIT_CORE)[1],) * 2)
os.execv(sys.argv[1], sys.argv[1:])
"""
PROBE = """
import sys
for pid in sys.argv[1:]:
    try:
        open(f"/proc/{pid}/environ", "rb").read()
        print(pid, "dumpable")
    except PermissionError:
        print(pid, "not-dumpable")
"""


def unprivileged(command: list[str]) -> list[str]:
    """``command`` with the largest core size allowed and, as root, as nobody."""
    if os.geteuid() == 0:
        assert SETPRIV is not None
        user = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        command = [*user, *command]
    return [sys.executable, "-c", UNPRIVILEGED, *command]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder the programs own (as root: nobody's, outside root's private pytest folder)."""
    folder = Path(tempfile.mkdtemp(prefix="kamus-core-"))
    try:
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)
        yield folder
    finally:
        shutil.rmtree(folder)


def owned(path: Path) -> Path:
    """``path``, given to nobody when the tests run as root."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    return path


def core_limit(pid: int) -> tuple[str, str]:
    """The soft and hard core file size limits of ``pid``, as /proc shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError(f"no core limit for {pid}")


def dumpable(pids: list[int]) -> dict[int, bool]:
    """Whether each of ``pids`` is dumpable, as a process of the same user sees it."""
    finished = subprocess.run(
        unprivileged([sys.executable, "-c", PROBE, *map(str, pids)]),
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return {
        int(pid): state == "dumpable"
        for pid, state in (line.split() for line in finished.stdout.splitlines())
    }


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue  # ended meanwhile
            ppid = next(line for line in status.splitlines() if line.startswith("PPid:"))
            parents[int(entry.name)] = int(ppid.split()[1])
    found = [pid]
    for member in found:
        found += [child for child, parent in parents.items() if parent == member]
    return found


def assert_no_core_dumps(pids: list[int]) -> None:
    assert {pid: core_limit(pid) for pid in pids} == dict.fromkeys(pids, ("0", "0"))
    assert dumpable(pids) == dict.fromkeys(pids, False)


def test_the_probe_tells_a_dumpable_process_from_one_that_is_not() -> None:
    sleeper = subprocess.Popen(unprivileged(["/bin/sleep", "30"]))
    try:
        time.sleep(0.2)
        assert core_limit(sleeper.pid) != ("0", "0")  # so "0 0" below is the program's doing
        assert dumpable([sleeper.pid]) == {sleeper.pid: True}
    finally:
        sleeper.kill()
        sleeper.wait()


@contextmanager
def holding_server(answer: Reply) -> Iterator[tuple[CannedServer, threading.Event]]:
    """A canned server that keeps every request waiting until the block ends; the event is set
    when the first request arrives."""
    arrived, release = threading.Event(), threading.Event()

    def hold(recorded: Recorded) -> Reply:
        arrived.set()
        release.wait(30)
        return answer

    server = CannedServer()
    server.otherwise = hold
    with serve(server):
        try:
            yield server, arrived
        finally:
            release.set()


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running unprivileged until the block ends, then killed: it waits for a held
    answer, which a graceful stop would wait for too."""
    process = subprocess.Popen(
        unprivileged(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_kamus_init_holding_a_token_and_plaintexts_cannot_dump_core(workdir: Path) -> None:
    encrypted, token = workdir / "encrypted", workdir / "token"
    encrypted.mkdir()
    (encrypted / "password").write_text("kamus:v2:ciphertext")
    token.write_text("header.payload.signature")
    for path in (encrypted, encrypted / "password", token):
        owned(path)
    with holding_server(json_reply(200, {"items": {"password": "s3cr3t"}})) as (server, arrived):
        env = {**os.environ, "KAMUS_URL": server.url, "TOKEN_FILE_PATH": str(token),
               "NO_PROXY": "127.0.0.1"}  # fmt: skip
        argv = [str(BIN / "kamus-init"), "-e", str(encrypted), "-d", str(workdir / "out"),
                "-f", "files", "--watch"]  # fmt: skip
        with running(argv, env) as process:
            assert arrived.wait(30)
            assert_no_core_dumps([process.pid])


def test_kamus_cli_holding_a_plaintext_cannot_dump_core() -> None:
    with holding_server(Reply(200, "kamus:v2:sealed")) as (server, arrived):
        argv = [str(BIN / "kamus-cli"), "encrypt", "-s", "s3cr3t", "-n", "team", "-a", "app",
                "-u", server.url, "--allow-insecure-url"]  # fmt: skip
        with running(argv, {**os.environ, "NO_PROXY": "127.0.0.1"}) as process:
            assert arrived.wait(30)
            assert_no_core_dumps([process.pid])


@pytest.mark.parametrize("app", ["kamus_encryptor:create_app()", "kamus_decryptor:create_app()"])
def test_a_service_and_every_gunicorn_worker_cannot_dump_core(
    app: str, service_env: dict[str, str], cluster_dir: Path, workdir: Path
) -> None:
    port = free_port()
    command = unprivileged([
        sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, "--bind", f"127.0.0.1:{port}",
        "--workers", "2", app,
    ])  # fmt: skip
    env = {"KAMUS_REUSE_PORT": "false"}
    for name, value in service_env.items():  # the files the services read, made nobody's
        is_file = name.endswith("_FILE") or name == "KAMUS_KUBECONFIG"
        env[name] = str(owned(Path(shutil.copy(value, workdir)))) if is_file else value
    logs = cluster_dir / "logs" / f"core-dumps-{app.split(':', maxsplit=1)[0]}"
    with serve_gunicorn(command, env, logs, port=port) as service:
        processes = family(service.process.pid)
        assert len(processes) == 3  # the master and its two workers
        assert_no_core_dumps(processes)


def test_kamus_dev_holding_the_authority_key_cannot_dump_core(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    argv = [str(BIN / "kamus-dev"), "up", "--dir", str(tmp_path / "state"), "--workers", "1",
            "--authority-port", str(ports[0]), "--encryptor-port", str(ports[1]),
            "--decryptor-port", str(ports[2])]  # fmt: skip
    # As itself, not as nobody: kamus-dev does not start as nobody here (so, as root, only the
    # limit is looked at; the dumpable flag is set by the same call).
    command = [sys.executable, "-c", UNPRIVILEGED, *argv]
    process = subprocess.Popen(command, env=base_environment({}), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{ports[2]}/healthz", timeout=2).ok:
                    break
            time.sleep(0.1)
        processes = family(process.pid)
        assert len(processes) == 5  # kamus-dev, two gunicorn masters, a worker each
        assert {pid: core_limit(pid) for pid in processes} == dict.fromkeys(processes, ("0", "0"))
        if os.geteuid() != 0:
            assert dumpable(processes) == dict.fromkeys(processes, False)
    finally:
        process.terminate()  # kamus-dev stops its services
        process.wait(timeout=30)
