"""The whole flow with real processes: kamus-cli → encryptor, kamus-init → decryptor → files."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn_process import Service, base_environment

TokenFactory = Callable[..., str]
SECRETS = {
    "db-password": "correct horse battery staple",
    "api-key": "sk_live_0123456789abcdef",
    "unicode": "pässwörd ✓",
}


def _run(module: str, *args: str, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, input=stdin, env=base_environment(env or {}), timeout=60,
        check=False,
    )  # fmt: skip


def _encrypt_folder(encryptor: Service, folder: Path, namespace: str, sa: str) -> dict[str, str]:
    folder.mkdir()
    ciphertexts = {}
    for name, value in SECRETS.items():
        result = _run(
            "kamus_cli.main", "encrypt", "-n", namespace, "-a", sa, "-u", encryptor.url,
            "--allow-insecure-url", stdin=value,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        ciphertexts[name] = result.stdout.strip()
        (folder / name).write_text(result.stdout)
    return ciphertexts


@pytest.fixture
def encrypted(encryptor: Service, tmp_path: Path) -> Path:
    """A folder of ciphertexts for team-a/app, made with kamus-cli, laid out like a ConfigMap."""
    folder = tmp_path / "encrypted"
    _encrypt_folder(encryptor, folder, "team-a", "app")
    # ConfigMap volumes hold hidden bookkeeping entries that are not secrets.
    (folder / "..data").mkdir()
    (folder / ".hidden").write_text("not a ciphertext")
    return folder


def _kamus_init(
    decryptor: Service, token: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    token_file = tmp_path / "token"
    token_file.write_text(token)
    env = {"KAMUS_URL": decryptor.url, "TOKEN_FILE_PATH": str(token_file)}
    return _run("kamus_init.main", *args, env=env)


def test_the_pod_of_the_right_service_account_gets_its_files(
    encrypted: Path, decryptor: Service, token: TokenFactory, tmp_path: Path
) -> None:
    out = tmp_path / "decrypted"
    out.mkdir()
    result = _kamus_init(decryptor, token("team-a", "app", pod="app-1"), tmp_path,
                         "-e", str(encrypted), "-d", str(out), "-f", "files")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == SECRETS
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o400}
    for value in SECRETS.values():
        assert value not in result.stdout + result.stderr


def test_json_output_holds_every_secret(
    encrypted: Path, decryptor: Service, token: TokenFactory, tmp_path: Path
) -> None:
    out = tmp_path / "decrypted"
    out.mkdir()
    result = _kamus_init(decryptor, token("team-a", "app"), tmp_path, "-e", str(encrypted),
                         "-d", str(out), "-f", "json", "-n", "secrets.json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "secrets.json").read_text()) == SECRETS


@pytest.mark.parametrize(
    ("namespace", "service_account", "audiences", "code"),
    [
        ("team-a", "other", ("kamus",), 403),
        ("team-b", "app", ("kamus",), 403),
        ("team-a", "default", ("kamus",), 403),
        ("team-a", "app", ("not-kamus",), 401),
    ],
)
def test_any_other_pod_gets_nothing_written_and_a_non_zero_exit(
    encrypted: Path,
    decryptor: Service,
    token: TokenFactory,
    tmp_path: Path,
    namespace: str,
    service_account: str,
    audiences: tuple[str, ...],
    code: int,
) -> None:
    out = tmp_path / "decrypted"
    out.mkdir()
    minted = token(namespace, service_account, audiences)
    result = _kamus_init(decryptor, minted, tmp_path,
                         "-e", str(encrypted), "-d", str(out), "-f", "files")  # fmt: skip
    assert result.returncode != 0
    assert list(out.iterdir()) == []
    assert str(code) in result.stderr
    assert minted not in result.stderr
    for value in SECRETS.values():
        assert value not in result.stdout + result.stderr


def test_audit_has_one_event_per_attempt_and_no_secret_in_any_log(
    encryptor: Service, decryptor: Service, token: TokenFactory, tmp_path: Path
) -> None:
    sentinel = "SENTINEL-d41d8cd98f00b204e9800998ecf8427e"
    ciphertext = requests.post(
        f"{encryptor.url}/api/v1/encrypt",
        json={"data": sentinel, "namespace": "audit-ns", "service-account": "app"},
        timeout=10,
    ).text
    tokens = {
        "allowed": token("audit-ns", "app", pod="audit-pod"),
        "scope_mismatch": token("audit-ns", "intruder"),
        "unauthorized": token("audit-ns", "app", ("elsewhere",)),
    }
    before = _audit_events(decryptor)
    expected = []
    for reason, minted in tokens.items():
        for route, body in (
            ("/api/v1/decrypt", {"data": ciphertext}),
            ("/api/v1/decrypt/batch", {"items": {"s": ciphertext}}),
        ):
            response = requests.post(decryptor.url + route, json=body, timeout=10,
                                     headers={"Authorization": f"Bearer {minted}"})  # fmt: skip
            assert (response.status_code == 200) == (reason == "allowed")
            expected.append(("allowed", "ok") if reason == "allowed" else ("denied", reason))
    events = _audit_events(decryptor)[len(before) :]
    assert [(e["outcome"], e["reason"]) for e in events] == expected
    allowed = events[0]
    assert allowed["caller"]["username"] == "system:serviceaccount:audit-ns:app"
    assert allowed["caller"]["pod"] == "audit-pod"
    assert allowed["caller"]["credential_id"].startswith("JTI=")
    assert allowed["items"][0]["namespace"] == "audit-ns"

    logs = encryptor.output() + decryptor.output()
    assert sentinel not in logs
    assert ciphertext not in logs
    for minted in tokens.values():
        assert minted not in logs


def _audit_events(service: Service) -> list[dict[str, Any]]:
    lines = service.stdout.read_text("utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [event for event in events if event.get("audit")]
