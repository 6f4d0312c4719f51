"""The README's quick start: `kamus-dev up` really serves encrypt and decrypt, and stops cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
        assert "DEVELOPMENT MODE" in printed
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
