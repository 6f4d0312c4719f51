"""`kamus-audit verify` anchors and witnesses, and `kamus-audit reconcile`, as an auditor runs
them over a folder of per-process chains."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audit_deployment import Deployment
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kamus_cli.audit import main
from kamus_client.exitcodes import ExitCode
from kamus_kms.auditsign import public_text

SampleEvent = Callable[[int], dict[str, Any]]
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run kamus-audit; its exit code, stdout and stderr."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv), {})
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def deployment(tmp_path: Path, key: bytes, sample_event: SampleEvent) -> Deployment:
    """Two decryptor processes that served 5 and 4 attempts, and what the witnesses saw."""
    folder = tmp_path / "audit"
    folder.mkdir()
    deployment = Deployment(folder, key, Ed25519PrivateKey.generate(), sample_event)
    deployment.decrypt(1, 5)
    deployment.decrypt(2, 4)
    (tmp_path / "audit.key").write_text(base64.b64encode(key).decode())
    (tmp_path / "signing.pub").write_text(public_text(deployment.signer.public_key()))
    (tmp_path / "stdout.log").write_text("\n".join(deployment.logs) + "\n")
    return deployment


def _placed(deployment: Deployment, pid: int) -> dict[str, Any]:
    """The last audit event process ``pid`` printed on stdout."""
    chain = deployment.processes[pid].path.name
    events = (json.loads(line) for line in reversed(deployment.logs))
    return next(e for e in events if e.get("chain") == chain and e["event"] == "audit")


def test_an_anchor_names_its_chain_and_only_that_chain_is_held_to_it(
    deployment: Deployment, run: Run, tmp_path: Path
) -> None:
    folder, key = deployment.folder, ["--key-file", str(tmp_path / "audit.key")]
    event = _placed(deployment, 1)
    anchor = f"{event['chain']}:{event['seq']}:{event['mac']}"
    code, out, _ = run("verify", str(folder), *key, "--head", anchor)
    assert code == ExitCode.OK, out
    assert out.count(": OK: ") == 2

    # Cut the anchored chain's end: that chain is tampered, the other is not judged by it.
    path = folder / event["chain"]
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))
    code, out, _ = run("verify", str(folder), *key, "--head", anchor)
    assert code == ExitCode.TAMPERED
    assert f"{path}: TAMPERED" in out
    assert "decryptor-2.jsonl: OK" in out


def test_an_unnamed_anchor_over_several_chains_is_refused_not_applied_to_each(
    deployment: Deployment, run: Run, tmp_path: Path
) -> None:
    event = _placed(deployment, 1)
    key = ["--key-file", str(tmp_path / "audit.key")]
    code, _, err = run(
        "verify", str(deployment.folder), *key, "--head", f"{event['seq']}:{event['mac']}"
    )
    assert code == ExitCode.INPUT
    assert "--head CHAIN:SEQ:MAC" in err


def test_an_anchor_of_a_chain_that_is_gone_is_tampering(
    deployment: Deployment, run: Run, tmp_path: Path
) -> None:
    event = _placed(deployment, 2)
    (deployment.folder / event["chain"]).unlink()
    code, out, _ = run("verify", str(deployment.folder), "--key-file", str(tmp_path / "audit.key"),
                       "--head", f"{event['chain']}:{event['seq']}:{event['mac']}")  # fmt: skip
    assert code == ExitCode.TAMPERED
    assert "decryptor-2.jsonl: TAMPERED: missing" in out


def test_verify_with_the_public_key_and_the_logs(
    deployment: Deployment, run: Run, tmp_path: Path
) -> None:
    argv = ["verify", str(deployment.folder), "--public-key", str(tmp_path / "signing.pub"),
            "--witness", str(tmp_path / "stdout.log"), "--checkpoint-records", "3"]  # fmt: skip
    code, out, _ = run(*argv)
    assert code == ExitCode.OK, out
    assert (
        "decryptor-1.jsonl: OK: 7 records, 2 signed checkpoint(s), origin kamus/kamus-decryptor;"
        in out
    )

    path = deployment.folder / "decryptor-1.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    code, out, _ = run(*argv)
    assert code == ExitCode.TAMPERED
    assert "decryptor-1.jsonl: TAMPERED: deleted: seq 7..7 missing at the end" in out


def test_witnesses_need_the_public_key(deployment: Deployment, run: Run, tmp_path: Path) -> None:
    code, _, err = run("verify", str(deployment.folder), "--key-file", str(tmp_path / "audit.key"),
                       "--witness", str(tmp_path / "stdout.log"))  # fmt: skip
    assert code == ExitCode.INPUT
    assert "need --public-key" in err


def test_reconcile_of_an_intact_folder_finds_nothing_missing(
    deployment: Deployment, run: Run, tmp_path: Path
) -> None:
    code, out, _ = run(
        "reconcile", str(deployment.folder), "--witness", str(tmp_path / "stdout.log")
    )
    assert code == ExitCode.OK
    assert out == "OK: every record the witnesses saw is in the 2 file(s)\n"


def test_reconcile_names_what_is_missing_where(
    deployment: Deployment, run: Run, tmp_path: Path
) -> None:
    # The attack the reviewers ran: records cut from one chain, another chain deleted; the
    # metrics counted the attempts all the same.
    first = deployment.folder / "decryptor-1.jsonl"
    first.write_text("".join(first.read_text().splitlines(keepends=True)[:-2]))
    (deployment.folder / "decryptor-2.jsonl").unlink()
    scrape = tmp_path / "metrics.txt"
    scrape.write_text(
        "# TYPE kamus_decrypt_total counter\n"
        'kamus_decrypt_total{action="decrypt_batch",reason="ok"} 6.0\n'
        'kamus_decrypt_total{action="decrypt_batch",reason="scope_mismatch"} 3.0\n'
    )
    code, out, _ = run("reconcile", str(deployment.folder), "--witness",
                       str(tmp_path / "stdout.log"), "--metrics", str(scrape))  # fmt: skip
    assert code == ExitCode.TAMPERED
    lines = out.splitlines()
    assert f"{first}: in the logs, not in the file: seq 6..7" in lines
    assert "decryptor-2.jsonl: no such file, yet the witnesses saw seq 1..6" in lines
    assert (
        "metrics: decrypt_batch ok: 6 counted, 2 in the files (4 attempts without a record)"
        in lines
    )
    denied = "scope_mismatch: 3 counted, 1 in the files (2 attempts without a record)"
    assert f"metrics: decrypt_batch {denied}" in lines


def test_reconcile_needs_something_to_compare_with(deployment: Deployment, run: Run) -> None:
    code, _, err = run("reconcile", str(deployment.folder))
    assert code == ExitCode.INPUT
    assert "nothing to compare with" in err
