"""The README's quick start: `kamus-dev up` really serves encrypt and decrypt, and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests
from gunicorn_process import base_environment


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _kamus_dev(*args: str) -> list[str]:
    return [sys.executable, "-m", "kamus_dev.main", *args]


@dataclass
class Running:
    """A `kamus-dev up` in its own process group, as a terminal or a script starts it."""

    process: subprocess.Popen[bytes]
    ports: list[int]
    state: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(tmp_path: Path, state: Path, *extra: str, from_a_script: bool = False) -> Running:
    """``from_a_script``: started in the background by a shell script, which ignores SIGINT."""
    ports = _free_ports(3)
    log = tmp_path / f"up-{ports[0]}.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _kamus_dev("up", "--dir", str(state), "--authority-port", str(ports[0]),
                       "--encryptor-port", str(ports[1]), "--decryptor-port", str(ports[2]),
                       "--workers", "1", *extra),
            stdout=out, stderr=subprocess.STDOUT, env=base_environment({}), cwd=tmp_path,
            start_new_session=True, preexec_fn=_ignore_sigint if from_a_script else None,  # noqa: PLW1509
        )  # fmt: skip
    running = Running(process, ports, state, log)
    deadline = time.monotonic() + 60
    while "Ctrl-C stops everything" not in running.output():
        assert process.poll() is None, running.output()
        assert time.monotonic() < deadline, "kamus-dev up did not become ready"
        time.sleep(0.1)
    return running


def _ports_closed(ports: list[int], within: float = 20) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        open_ports = []
        for port in ports:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    open_ports.append(port)
        if not open_ports:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(
    ("stop", "from_a_script"),
    [
        pytest.param(lambda r: r.process.send_signal(signal.SIGHUP), False, id="terminal-closed"),
        pytest.param(lambda r: os.killpg(r.process.pid, signal.SIGINT), False,
                     id="ctrl-c-to-the-group"),
        pytest.param(lambda r: os.killpg(r.process.pid, signal.SIGINT), True,
                     id="ctrl-c-started-in-the-background-by-a-script"),
        pytest.param(lambda r: r.process.send_signal(signal.SIGTERM), False, id="sigterm"),
    ],
)  # fmt: skip
def test_kamus_dev_stops_every_service_cleanly_however_it_is_stopped(
    tmp_path: Path, stop: Callable[[Running], None], from_a_script: bool
) -> None:
    running = _start(tmp_path, tmp_path / "state", from_a_script=from_a_script)
    stop(running)
    assert running.process.wait(timeout=30) == 0
    assert _ports_closed(running.ports)
    output = running.output()
    assert "a service exited" not in output
    assert "SIGKILL" not in output


def test_a_second_run_says_once_that_it_uses_the_keys_of_the_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _start(tmp_path, state)
    os.killpg(first.process.pid, signal.SIGINT)
    first.process.wait(timeout=30)
    keyring = (state / "keyring.json").read_bytes()

    second = _start(tmp_path, state)
    try:
        assert second.output().count("DEVELOPMENT MODE") == 1
        assert "using the keys in" in second.output()
        assert "generated" not in second.output()
        assert (state / "keyring.json").read_bytes() == keyring
    finally:
        second.process.send_signal(signal.SIGINT)
        second.process.wait(timeout=30)


def test_killing_kamus_dev_leaves_no_service_behind(tmp_path: Path) -> None:
    running = _start(tmp_path, tmp_path / "state")
    running.process.kill()
    running.process.wait(timeout=10)
    assert _ports_closed(running.ports)


def test_a_second_kamus_dev_on_a_state_folder_in_use_refuses_and_changes_nothing(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = _start(tmp_path, state)
    try:
        before = {p.name: p.read_bytes() for p in state.iterdir()}
        ports = _free_ports(3)
        second = subprocess.run(
            _kamus_dev("up", "--dir", str(state), "--authority-port", str(ports[0]),
                       "--encryptor-port", str(ports[1]), "--decryptor-port", str(ports[2])),
            capture_output=True, text=True, env=base_environment({}), timeout=30, check=False,
        )  # fmt: skip
        assert second.returncode != 0
        assert f"in use by another `kamus-dev up` (pid {first.process.pid})" in second.stderr
        assert {p.name: p.read_bytes() for p in state.iterdir()} == before
        token = subprocess.run(
            _kamus_dev("token", "-n", "team-a", "-a", "app", "--dir", str(state)),
            capture_output=True, text=True, env=base_environment({}), check=True,
        ).stdout.strip()  # fmt: skip
        assert token.count(".") == 2  # the first instance still answers
    finally:
        first.process.send_signal(signal.SIGINT)
        first.process.wait(timeout=30)


def test_kamus_dev_up_encrypts_mints_tokens_decrypts_and_stops(tmp_path: Path) -> None:
    authority, encryptor, decryptor = _free_ports(3)
    state = tmp_path / "state"
    out = (tmp_path / "up.out").open("wb")
    process = subprocess.Popen(
        _kamus_dev("up", "--dir", str(state), "--authority-port", str(authority),
                   "--encryptor-port", str(encryptor), "--decryptor-port", str(decryptor),
                   "--workers", "1"),
        stdout=out, stderr=subprocess.STDOUT, env=base_environment({}), cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops everything" not in (tmp_path / "up.out").read_text():
            assert process.poll() is None, (tmp_path / "up.out").read_text()
            assert time.monotonic() < deadline, "kamus-dev up did not become ready"
            time.sleep(0.1)
        printed = (tmp_path / "up.out").read_text()
        # Said once, and truthfully: this first run generated the keys.
        assert printed.count("DEVELOPMENT MODE") == 1
        assert "generated a new keyring and audit key into" in printed
        assert f"http://127.0.0.1:{decryptor}" in printed

        ciphertext = requests.post(
            f"http://127.0.0.1:{encryptor}/api/v1/encrypt",
            json={"data": "quick-start-secret", "namespace": "team-a", "service-account": "app"},
            timeout=10,
        ).text
        token = subprocess.run(
            _kamus_dev("token", "-n", "team-a", "-a", "app", "--dir", str(state)),
            capture_output=True, text=True, check=True, env=base_environment({}),
        ).stdout.strip()  # fmt: skip
        response = requests.post(
            f"http://127.0.0.1:{decryptor}/api/v1/decrypt",
            json={"data": ciphertext},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert (response.status_code, response.text) == (200, "quick-start-secret")
        assert (state / "keyring.json").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=30)
        out.close()
    assert exit_code == 0
    for port in (authority, encryptor, decryptor):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


ROOT = Path(__file__).resolve().parents[2]


def _readme_quick_start() -> str:
    """The shell block the README shows after `./scripts/dev.sh` starts."""
    readme = (ROOT / "README.md").read_text("utf-8")
    after = readme.split("It then prints how to encrypt, mint a pod token and decrypt.", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readmes_quick_start_runs_as_written(tmp_path: Path) -> None:
    """Word for word but the ports, so a drift between the README and the tools fails here."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    running = _start(tmp_path, tmp_path / ".kamus-dev")  # the default --dir, seen from tmp_path
    try:
        script = _readme_quick_start()
        assert "127.0.0.1:8441" in script
        assert "127.0.0.1:8442" in script
        script = script.replace("127.0.0.1:8441", f"127.0.0.1:{running.ports[1]}")
        script = script.replace("127.0.0.1:8442", f"127.0.0.1:{running.ports[2]}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
            text=True, env=base_environment({}), timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "s3cr3t"
        assert (tmp_path / "out" / "password").stat().st_mode & 0o777 == 0o400
    finally:
        os.killpg(running.process.pid, signal.SIGINT)
        running.process.wait(timeout=30)


def test_kamus_dev_creates_and_deletes_pods_for_bound_tokens(tmp_path: Path) -> None:
    running = _start(tmp_path, tmp_path / "state")

    def dev(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _kamus_dev(*args, "--dir", str(running.state)), capture_output=True, text=True,
            env=base_environment({}), timeout=30, check=False,
        )  # fmt: skip

    try:
        missing = dev("token", "-n", "team-a", "-a", "app", "--pod", "web-1")
        created = dev("pod", "create", "web-1", "-n", "team-a")
        bound = dev("token", "-n", "team-a", "-a", "app", "--pod", "web-1")
        deleted = dev("pod", "delete", "web-1", "-n", "team-a")
        again = dev("pod", "delete", "web-1", "-n", "team-a")
    finally:
        os.killpg(running.process.pid, signal.SIGINT)
        running.process.wait(timeout=30)
    assert (missing.returncode, created.returncode, bound.returncode) == (1, 0, 0)
    assert 'pods "web-1" not found' in missing.stderr
    assert created.stdout.startswith("created pod team-a/web-1 (uid ")
    assert bound.stdout.count(".") == 2
    assert (deleted.returncode, again.returncode) == (0, 1)


def test_kamus_dev_can_shape_tokens_like_kubernetes_1_28(tmp_path: Path) -> None:
    running = _start(tmp_path, tmp_path / "state", "--kubernetes-version", "1.28")
    try:
        token = subprocess.run(
            _kamus_dev("token", "-n", "team-a", "-a", "app", "--dir", str(running.state)),
            capture_output=True, text=True, check=True, env=base_environment({}),
        ).stdout.strip()  # fmt: skip
    finally:
        os.killpg(running.process.pid, signal.SIGINT)
        running.process.wait(timeout=30)
    assert "jti" not in jwt.decode(token, options={"verify_signature": False})
