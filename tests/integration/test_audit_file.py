"""The decryptor's hash-chained audit file, written by several gunicorn workers, read back by
kamus-audit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from audit_volume import DAMAGES, Damage, block_folder
from gunicorn_process import Service, base_environment, gunicorn

from kamus_kms.keyring import Keyring

TokenFactory = Callable[..., str]


@pytest.fixture
def ciphertext(encryptor: Service) -> str:
    """A ciphertext for audit-ns/app."""
    body = {"data": "audited-secret", "namespace": "audit-ns", "service-account": "app"}
    return requests.post(f"{encryptor.url}/api/v1/encrypt", json=body, timeout=10).text


def _decryptor(service_env: dict[str, str], tmp_path: Path, **extra: str) -> Any:
    env = {**service_env, "KAMUS_AUDIT_FILE": str(tmp_path / "audit.jsonl"), **extra}
    return gunicorn("kamus_decryptor:create_app()", env, tmp_path / "logs", workers=2)


def _kamus_audit(service_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = base_environment({"KAMUS_AUDIT_KEY_FILE": service_env["KAMUS_AUDIT_KEY_FILE"]})
    return subprocess.run(
        [sys.executable, "-m", "kamus_cli.audit", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def _post(service: Service, token: str, ciphertext: str) -> int:
    return requests.post(
        f"{service.url}/api/v1/decrypt", json={"data": ciphertext}, timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    ).status_code  # fmt: skip


def test_every_attempt_of_every_worker_lands_in_one_chain_that_survives_restarts(
    service_env: dict[str, str], tmp_path: Path, token: TokenFactory, ciphertext: str
) -> None:
    good, bad = token("audit-ns", "app"), token("audit-ns", "intruder")
    calls = [good, bad, "garbage"] * 20
    with _decryptor(service_env, tmp_path) as service, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda t: _post(service, t, ciphertext), calls))
    with _decryptor(service_env, tmp_path) as service:
        statuses.append(_post(service, good, ciphertext))
        stdout_events = [
            json.loads(line)
            for line in service.stdout.read_text().splitlines()
            if '"audit"' in line
        ]
    assert sorted(statuses) == sorted([200] * 21 + [403] * 20 + [401] * 20)
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(1, 62))
    outcomes = sorted((r["outcome"], r["reason"]) for r in records)
    assert outcomes == sorted(
        [("allowed", "ok")] * 21 + [("denied", "scope_mismatch")] * 20
        + [("denied", "unauthorized")] * 20
    )  # fmt: skip
    assert "audited-secret" not in "\n".join(lines)
    head = f"{records[-1]['seq']}:{records[-1]['mac']}"
    assert (stdout_events[-1]["seq"], stdout_events[-1]["mac"]) == (61, records[-1]["mac"])

    verified = _kamus_audit(service_env, "verify", str(tmp_path / "audit.jsonl"), "--head", head)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK: 61 records" in verified.stdout

    (tmp_path / "audit.jsonl").write_text("\n".join(lines[:30] + lines[31:]) + "\n")
    tampered = _kamus_audit(service_env, "verify", str(tmp_path / "audit.jsonl"))
    assert tampered.returncode != 0
    assert "line 31" in tampered.stdout


@pytest.mark.parametrize(("policy", "status"), [("fail-closed", 503), ("best-effort", 200)])
def test_an_unwritable_audit_file_follows_the_policy(
    service_env: dict[str, str],
    tmp_path: Path,
    token: TokenFactory,
    ciphertext: str,
    policy: str,
    status: int,
) -> None:
    chain = tmp_path / "audit" / "audit.jsonl"
    chain.parent.mkdir()
    env = {"KAMUS_AUDIT_FILE": str(chain), "KAMUS_AUDIT_POLICY": policy}
    with _decryptor(service_env, tmp_path, **env) as service:
        assert _post(service, token("audit-ns", "app"), ciphertext) == 200
        block_folder(chain)  # a file where the folder was: not even root writes
        response = requests.post(
            f"{service.url}/api/v1/decrypt", json={"data": ciphertext}, timeout=30,
            headers={"Authorization": f"Bearer {token('audit-ns', 'app')}"},
        )  # fmt: skip
        metrics = requests.get(f"{service.url}/metrics", timeout=10).text
    assert response.status_code == status
    # Under either policy the refused write is counted (the chart's KamusAuditWriteFailing).
    assert "kamus_audit_write_failures_total 1.0" in metrics
    if status == 503:
        assert response.json()["error"] == "audit_unavailable"
        assert "audited-secret" not in response.text
    else:
        assert response.text == "audited-secret"


def test_a_torn_chain_is_kept_as_evidence_and_decrypts_go_on_in_a_linked_chain(
    service_env: dict[str, str], tmp_path: Path, token: TokenFactory, ciphertext: str
) -> None:
    with _decryptor(service_env, tmp_path) as service:
        assert _post(service, token("audit-ns", "app"), ciphertext) == 200
        # A torn last line, as after a crash mid-write: never continued, never repaired.
        with (tmp_path / "audit.jsonl").open("a") as audit:
            audit.write('{"seq": 2, "torn')
        torn = (tmp_path / "audit.jsonl").read_bytes()
        assert _post(service, token("audit-ns", "app"), ciphertext) == 200
        stdout = service.stdout.read_text()
    assert (tmp_path / "audit.jsonl").read_bytes() == torn
    successor = tmp_path / "audit.1.jsonl"
    start, event = (json.loads(line) for line in successor.read_text().splitlines())
    assert start["event"] == "chain_start"
    assert start["previous"]["chain"] == "audit.jsonl"
    assert "torn last line" in start["reason"]
    assert event["outcome"] == "allowed"
    assert "audit chain audit.jsonl cannot be continued" in stdout
    key = ["--key-file", service_env["KAMUS_AUDIT_KEY_FILE"]]
    assert _kamus_audit(service_env, "verify", str(successor), *key).returncode == 0
    checked = _kamus_audit(service_env, "verify", str(tmp_path / "audit.jsonl"), *key)
    assert checked.returncode == 9
    assert "truncated" in checked.stdout


def _readyz_settles(service: Service, status: int) -> None:
    """Wait until plain /readyz answers ``status`` 6 times in a row, whichever worker answers."""
    deadline, streak = time.monotonic() + 30, 0
    while streak < 6:
        assert time.monotonic() < deadline, f"/readyz did not settle on {status}"
        answered = requests.get(f"{service.url}/readyz", timeout=10).status_code
        streak = streak + 1 if answered == status else 0
        time.sleep(0.1)


def _audit_gauge(service: Service) -> str:
    metrics = requests.get(f"{service.url}/metrics", timeout=10).text
    (line,) = [line for line in metrics.splitlines()
               if line.startswith('kamus_dependency_ready{dependency="audit"}')]  # fmt: skip
    return line.rsplit(" ", 1)[1]


@DAMAGES
def test_readyz_takes_a_worker_that_cannot_write_its_chain_out_of_the_service_until_repaired(
    service_env: dict[str, str],
    tmp_path: Path,
    token: TokenFactory,
    ciphertext: str,
    damage: Damage,
    repair: Damage,
) -> None:
    chain = tmp_path / "audit" / "audit.jsonl"
    chain.parent.mkdir()
    env = {"KAMUS_AUDIT_FILE": str(chain), "KAMUS_READINESS_CHECK_SECONDS": "0.2"}
    good = token("audit-ns", "app")
    with _decryptor(service_env, tmp_path, **env) as service:
        assert _post(service, good, ciphertext) == 200
        _readyz_settles(service, 200)
        assert _audit_gauge(service) == "1.0"

        damage(chain)
        assert _post(service, good, ciphertext) == 503
        # Every worker finds it (not only the one whose write was refused): the kubelet's probe
        # fails whichever answers, and the pod leaves the Service endpoints.
        _readyz_settles(service, 503)
        verbose = requests.get(f"{service.url}/readyz?verbose", timeout=10)
        assert verbose.status_code == 503
        entry = verbose.json()["dependencies"]["audit"]
        assert (entry["ready"], entry["error"], entry["reason"], entry["enforced"]) == (
            False, "audit_unavailable", "not_writable", True,
        )  # fmt: skip
        assert str(chain) not in verbose.text
        assert _audit_gauge(service) == "0.0"

        repair(chain)  # no restart
        _readyz_settles(service, 200)
        assert _audit_gauge(service) == "1.0"
        assert _post(service, good, ciphertext) == 200
    # The checks wrote nothing: two decrypts, two records, one chain.
    assert [json.loads(line)["seq"] for line in chain.read_text().splitlines()] == [1, 2]


def test_per_worker_chains_with_signed_checkpoints_verify_with_the_public_key_and_witness(
    service_env: dict[str, str], tmp_path: Path, token: TokenFactory, ciphertext: str
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    made = _kamus_audit(service_env, "signing-key", "new", str(keys / "signing.key"))
    assert made.returncode == 0, made.stderr
    (keys / "signing.pub").write_text(made.stdout)
    chains = tmp_path / "chains"
    chains.mkdir()
    env = {**service_env} | {
        "KAMUS_AUDIT_DIR": str(chains),
        "KAMUS_AUDIT_SIGNING_KEY_FILE": str(keys / "signing.key"),
        "KAMUS_AUDIT_CHECKPOINT_RECORDS": "3",
    }
    good = token("audit-ns", "app")
    with gunicorn("kamus_decryptor:create_app()", env, tmp_path / "logs", workers=2) as service:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: _post(service, good, ciphertext), range(24)))
        stdout = service.stdout.read_text()
    assert statuses == [200] * 24
    files = sorted(chains.glob("*.jsonl"))
    assert 1 <= len(files) <= 2  # one chain per worker process that served a request
    (tmp_path / "stdout.log").write_text(stdout)
    assert '"audit_checkpoint"' in stdout

    argv = ["verify", str(chains), "--public-key", str(keys / "signing.pub"),
            "--witness", str(tmp_path / "stdout.log")]  # fmt: skip
    checked = _kamus_audit(service_env, *argv)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK: ") == len(files)

    # Cut the end of one chain: the records on stdout show it.
    victim = files[0]
    victim.write_text("".join(victim.read_text().splitlines(keepends=True)[:2]))
    cut = _kamus_audit(service_env, *argv)
    assert cut.returncode == 9
    assert "missing at the end (the witnesses saw seq" in cut.stdout
    # Delete the other chain too: the logs name it.
    for path in files:
        path.unlink()
    gone = _kamus_audit(service_env, *argv)
    assert gone.returncode == 9
    assert gone.stdout.count("is not among the files") == len(files)


def _auditsigning(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kamus_service.auditsigning", *args],
        capture_output=True, text=True, env=base_environment(env), timeout=60, check=False,
    )  # fmt: skip


def test_a_signing_key_sealed_by_the_provider_signs_and_no_other_provider_opens_it(
    service_env: dict[str, str], tmp_path: Path, token: TokenFactory, ciphertext: str
) -> None:
    # Made where the encryptor's settings are (as with kubectl exec), kept in the Secret sealed.
    encryptor_env = {"KAMUS_KEYRING_FILE": service_env["KAMUS_KEYRING_FILE"]}
    made = _auditsigning(encryptor_env, "new", "--public-key-file", str(tmp_path / "signing.pub"))
    assert made.returncode == 0, made.stderr
    sealed = made.stdout.strip()
    assert sealed.startswith("kamus-audit-signing-key:v1:")
    (tmp_path / "signing.key").write_text(made.stdout)
    public = (tmp_path / "signing.pub").read_text().strip()
    assert public in made.stderr
    shown = _auditsigning(encryptor_env, "public", str(tmp_path / "signing.key"))
    assert shown.stdout.strip() == public

    chains = tmp_path / "chains"
    chains.mkdir()
    env = {**service_env} | {
        "KAMUS_AUDIT_DIR": str(chains),
        "KAMUS_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
        "KAMUS_AUDIT_CHECKPOINT_RECORDS": "2",
    }
    with gunicorn("kamus_decryptor:create_app()", env, tmp_path / "logs", workers=1) as service:
        statuses = [_post(service, token("audit-ns", "app"), ciphertext) for _ in range(4)]
    assert statuses == [200] * 4
    checked = _kamus_audit(service_env, "verify", str(chains), "--public-key",
                           str(tmp_path / "signing.pub"))  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ": OK: " in checked.stdout

    # Another cluster's keyring cannot open it: the decryptor says so and does not start.
    other = tmp_path / "other-keyring.json"
    other.write_text(Keyring.generate().to_json())
    started = subprocess.run(
        [sys.executable, "-c", "from kamus_decryptor import create_app; create_app()"],
        capture_output=True, text=True, timeout=60, check=False,
        env=base_environment(env | {"KAMUS_KEYRING_FILE": str(other)}),
    )  # fmt: skip
    assert started.returncode != 0
    assert "audit signing key" in started.stderr
    assert "does not open with this provider's keys" in started.stderr
