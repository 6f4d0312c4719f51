"""Encryptor, decryptor and kamus-init end to end over each remote KMS backend."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from gunicorn_process import Service, base_environment, gunicorn
from kms_backend import REMOTE_BACKENDS, Backend

from kamus_kms.provider import KeyMode

TokenFactory = Callable[..., str]
CASES = [(b, m) for b in REMOTE_BACKENDS for m in KeyMode]
SECRETS = {"db-password": "hunter2-over-kms", "api-key": "sk_kms_0123"}
READINESS_CHECK_SECONDS = 0.5


@pytest.fixture(params=CASES, ids=lambda case: f"{case[0]}-{case[1].value}")
def stack(
    request: pytest.FixtureRequest,
    backends: dict[str, Backend],
    service_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[tuple[Service, Service, Backend]]:
    """Encryptor and decryptor (one worker each) over one backend and key mode."""
    name, mode = request.param
    backend = backends[name]
    env = {k: v for k, v in service_env.items() if k != "KAMUS_KEYRING_FILE"}
    env |= backend.service_env(mode)
    env["KAMUS_READINESS_CHECK_SECONDS"] = str(READINESS_CHECK_SECONDS)
    with ExitStack() as services:
        encryptor = services.enter_context(
            gunicorn("kamus_encryptor:create_app()", env, tmp_path / "enc", workers=1)
        )
        decryptor = services.enter_context(
            gunicorn("kamus_decryptor:create_app()", env, tmp_path / "dec", workers=1)
        )
        yield encryptor, decryptor, backend


def _run(
    module: str, *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True,
        env=base_environment(env), timeout=60, check=False,
    )  # fmt: skip


def test_secrets_flow_from_kamus_cli_to_pod_files_over_the_kms(
    stack: tuple[Service, Service, Backend], token: TokenFactory, tmp_path: Path
) -> None:
    encryptor, decryptor, backend = stack
    encrypted, out = tmp_path / "encrypted", tmp_path / "out"
    encrypted.mkdir()
    out.mkdir()
    for name, value in SECRETS.items():
        result = _run("kamus_cli.main", "encrypt", "-n", "team-k", "-a", "app", "-u",
                      encryptor.url, "--allow-insecure-url", env={}, stdin=value)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"kamus:v1:{backend.name}:team-k:app:")
        (encrypted / name).write_text(result.stdout)

    def kamus_init(namespace: str, service_account: str) -> subprocess.CompletedProcess[str]:
        token_file = tmp_path / f"token-{service_account}"
        token_file.write_text(token(namespace, service_account))
        env = {"KAMUS_URL": decryptor.url, "TOKEN_FILE_PATH": str(token_file)}
        return _run("kamus_init.main", "-e", str(encrypted), "-d", str(out), "-f", "files",
                    "--timeout", "20", env=env)  # fmt: skip

    denied = kamus_init("team-k", "intruder")
    assert denied.returncode != 0
    assert list(out.iterdir()) == []
    allowed = kamus_init("team-k", "app")
    assert allowed.returncode == 0, allowed.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == SECRETS
    logs = encryptor.output() + decryptor.output()
    for value in SECRETS.values():
        assert value not in logs


def _kms_state(service: Service) -> tuple[int, dict[str, object]]:
    response = requests.get(f"{service.url}/readyz?verbose", timeout=30)
    return response.status_code, response.json()["dependencies"]["kms"]


def test_readiness_reports_the_kms_without_emptying_the_service(
    stack: tuple[Service, Service, Backend], token: TokenFactory
) -> None:
    encryptor, decryptor, backend = stack
    assert _kms_state(decryptor)[1]["ready"] is True
    with backend.outage():
        time.sleep(READINESS_CHECK_SECONDS)  # the last check expires
        status, kms = _kms_state(encryptor)
        assert (status, kms["ready"], kms["error"]) == (200, False, "unavailable")
        body = {"data": "x", "namespace": "team-k", "service-account": "app"}
        response = requests.post(f"{encryptor.url}/api/v1/encrypt", json=body, timeout=30)
        assert (response.status_code, response.json()["error"]) == (503, "unavailable")
    time.sleep(READINESS_CHECK_SECONDS)
    status, kms = _kms_state(encryptor)
    assert (status, kms["ready"], kms["error"]) == (200, True, None)
