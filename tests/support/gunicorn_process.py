"""Real gunicorn processes on 127.0.0.1 for integration tests, stopped by themselves."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
# What every gunicorn command of Kamus loads (service/kamus_service/gunicorn_conf.py).
GUNICORN_CONF = "python:kamus_service.gunicorn_conf"
_LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")
# The child sees only these from the test runner's environment, so no KAMUS_* leaks in.
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


@dataclass
class Service:
    """A running gunicorn service: its URL and where its output goes."""

    url: str
    stdout: Path
    stderr: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        """Everything the service printed so far, stdout and stderr."""
        return self.stdout.read_text("utf-8", "replace") + self.stderr.read_text("utf-8", "replace")


def base_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment plus `extra`."""
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextmanager
def gunicorn(
    app: str,
    env: Mapping[str, str],
    logs: Path,
    *,
    workers: int = 2,
    threads: int = 4,
    worker_class: str = "kamus_service.worker.BufferingWorker",
    reuse_port: bool = False,
    ready_path: str = "/healthz",
    graceful_timeout: float = 2,
) -> Iterator[Service]:
    """Run `gunicorn app` on a free loopback port until the block ends.

    With `reuse_port`, every worker listens on a socket of its own (SO_REUSEPORT) and the kernel
    spreads connections over them; the port is then chosen here, as each worker binding port 0
    would get a different one.
    """
    port = free_port() if reuse_port else 0
    # The services' own configuration (kamus_service/gunicorn_conf.py), with what a test sets.
    command = [
        sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--worker-class", worker_class,
        "--graceful-timeout", str(graceful_timeout), app,
    ]  # fmt: skip
    name = app.split(":", maxsplit=1)[0]
    env = {**env, "KAMUS_REUSE_PORT": "true" if reuse_port else "false"}
    with serve(command, env, logs / name, port=port, ready_path=ready_path) as service:
        yield service


@contextmanager
def serve(
    command: list[str],
    env: Mapping[str, str],
    logs: Path,
    *,
    port: int = 0,
    ready_path: str = "/healthz",
) -> Iterator[Service]:
    """Run a gunicorn `command` until the block ends, once it answers `ready_path` with 200.

    `port` is where it listens on 127.0.0.1; 0 when gunicorn picks it (read from its log).
    Its output goes to `logs`.out and `logs`.err.
    """
    logs.parent.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs.parent / f"{logs.name}.out", logs.parent / f"{logs.name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, env=base_environment(env), stdout=out, stderr=err)
    try:
        url = f"http://127.0.0.1:{port}" if port else _wait_for_url(process, stderr)
        service = Service(url, stdout, stderr, process)
        _wait_until_serving(service, ready_path)
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve_image_command(component: str, env: Mapping[str, str], logs: Path) -> Iterator[Service]:
    """Run ``component``'s image command (its Dockerfile's CMD) as it is, but on a free loopback
    port."""
    dockerfile = (ROOT / component / "Dockerfile").read_text("utf-8")
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    argv = json.loads(cmd.group(1))
    assert argv[:3] == ["gunicorn", "-c", GUNICORN_CONF]
    assert "GUNICORN_CMD_ARGS" not in dockerfile
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", *argv[1:]]
    # As a deployment overrides the configuration: through GUNICORN_CMD_ARGS.
    options = f"--bind=127.0.0.1:{port}"
    with serve(command, {**env, "GUNICORN_CMD_ARGS": options}, logs, port=port) as service:
        yield service


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_url(process: subprocess.Popen[bytes], stderr: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = _LISTENING.search(stderr.read_text("utf-8", "replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {stderr.read_text('utf-8', 'replace')}")
        time.sleep(0.05)
    raise RuntimeError("gunicorn did not start listening within 30 s")


def _wait_until_serving(service: Service, path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {service.output()}")
        try:
            if requests.get(service.url + path, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # not up yet, or slow to answer under load: try again until the deadline
        time.sleep(0.05)
    raise RuntimeError(f"{service.url}{path} not ready within 30 s: {service.output()}")
