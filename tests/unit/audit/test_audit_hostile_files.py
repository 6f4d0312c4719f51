"""What a red team did to the audit files, the witnesses and the writer, each now a test: planted
chains and names, symbolic links, values JSON takes but no writer writes, bytes rewritten raw."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audit_deployment import ORIGIN, Deployment, records
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kamus_cli.audit import main
from kamus_client.exitcodes import ExitCode
from kamus_decryptor.auditfile import AuditFile
from kamus_kms.auditchain import GENESIS, canonical, chain_key, json_line, record_mac, verify
from kamus_kms.auditsign import key_id, public_text, record_hash
from kamus_kms.auditverify import verify_chains
from kamus_kms.auditwitness import Witness
from kamus_kms.errors import AuditWriteError, ConfigurationError
from kamus_service.settings import load_settings

SampleEvent = Callable[[int], dict[str, Any]]
SIGNER = Ed25519PrivateKey.generate()
# Values json.loads takes but canonical() refuses: a lone surrogate, NaN.
HOSTILE = pytest.mark.parametrize("value", ['"\\ud800"', "NaN"], ids=["surrogate", "nan"])


class SharedFile(Deployment):
    """The processes of one pod appending to one KAMUS_AUDIT_FILE."""

    def process(self, pid: int) -> AuditFile:
        if pid not in self.processes:
            self.processes[pid] = AuditFile(
                self.folder / "audit.jsonl", self.key, fsync=False, signer=self.signer,
                checkpoint_records=self.policy.records, checkpoint_seconds=self.policy.seconds,
                witness=self._witnessed, origin=ORIGIN, shared=True,
            )  # fmt: skip
        return self.processes[pid]


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> Callable[..., int]:
    """kamus-audit in this process; its exit code (its output is captured)."""
    return lambda *argv: main(list(argv), {})


@pytest.fixture
def deployment(tmp_path: Path, key: bytes, sample_event: SampleEvent) -> Deployment:
    """Per-process chains signed every 3 records."""
    folder = tmp_path / "audit"
    folder.mkdir()
    return Deployment(folder, key, Ed25519PrivateKey.generate(), sample_event)


def test_a_forged_chain_start_planted_as_a_shared_files_successor_is_never_signed(
    tmp_path: Path, key: bytes, sample_event: SampleEvent
) -> None:
    folder = tmp_path / "audit"
    folder.mkdir()
    deployment = SharedFile(folder, key, Ed25519PrivateKey.generate(), sample_event)
    deployment.decrypt(1, 3)
    head = records(folder / "audit.jsonl")[-1]
    forged = {
        "event": "chain_start", "time": "2026-12-06T10:00:00.000+00:00", "origin": ORIGIN,
        "previous": {"chain": "audit.jsonl", "seq": head["seq"], "hash": head["hash"],
                     "mac": head["mac"]},
        "reason": "rotated by the operator", "note": "anything the insider wants signed",
        "seq": 1, "prev": GENESIS,
    }  # fmt: skip
    forged["hash"] = record_hash(GENESIS, forged)
    forged["mac"] = record_mac(chain_key(key), forged)
    (folder / "audit.1.jsonl").write_text(json_line(forged) + "\n")

    placed = deployment.decrypt(1, 3)

    assert records(folder / "audit.1.jsonl") == [forged]  # not taken up, nothing signed after it
    assert {p.chain for p in placed} == {"audit.2.jsonl"}
    start = records(folder / "audit.2.jsonl")[0]
    assert start["previous"]["chain"] == "audit.jsonl"  # the link names the chain it left
    problems = deployment.problems()
    assert problems == ["unsigned: no checkpoint signed by this key (checkpoints removed, or"
                        " another key)"]  # fmt: skip


def _cut_the_unsigned_tail(deployment: Deployment) -> Path:
    deployment.decrypt(1, 5)  # cp0 r1 r2 r3 cp r4 r5: seq 6 and 7 unsigned
    path = deployment.processes[1].path
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    return path


def test_a_name_taken_beforehand_neither_diverts_the_link_nor_hides_a_cut(
    deployment: Deployment,
) -> None:
    path = _cut_the_unsigned_tail(deployment)
    planted = path.with_name("decryptor-1.1.jsonl")
    planted.write_text("x\n")
    deployment.decrypt(1, 1)

    assert planted.read_text() == "x\n"
    start = records(deployment.processes[1].path)[0]
    assert re.fullmatch(r"decryptor-1\.1\.[0-9a-f]{8}\.jsonl", deployment.processes[1].path.name)
    assert (start["previous"]["chain"], start["previous"]["seq"]) == ("decryptor-1.jsonl", 7)
    planted.unlink()
    for logs in (False, True):
        problems = deployment.problems(logs=logs, cluster=True)
        assert any(p.startswith("deleted: seq 7..7 missing at the end") for p in problems)


def test_names_taken_beforehand_do_not_stop_a_per_process_writer(
    tmp_path: Path, key: bytes
) -> None:
    path = tmp_path / "x.jsonl"
    writer = AuditFile(path, key, fsync=False, signer=SIGNER, shared=False)
    writer.append({"n": 1})
    for number in range(1, 40):
        path.with_name(f"x.{number}.jsonl").write_text("x\n")
    with path.open("a") as stream:
        stream.write("\n")
    # Past a taken name, one nobody can know in advance.
    assert re.fullmatch(r"x\.1\.[0-9a-f]{8}\.jsonl", writer.append({"n": 2}).chain)


def test_a_symbolic_link_at_a_chains_name_is_never_followed(tmp_path: Path, key: bytes) -> None:
    folder, outside = tmp_path / "audit", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    victim = outside / "victim.log"
    victim.touch()
    os.symlink(victim, folder / "x.jsonl")
    os.symlink(victim, folder / "x.1.jsonl")
    writer = AuditFile(folder / "x.jsonl", key, fsync=False, signer=SIGNER, shared=False)
    assert re.fullmatch(r"x\.[0-9a-f]{8}\.jsonl", writer.append({"n": 1}).chain)
    assert victim.read_text() == ""


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-process"])
@pytest.mark.parametrize("what", ["link", "folder", "fifo"])
def test_a_live_chain_replaced_by_something_else_is_left_for_the_next(
    tmp_path: Path, key: bytes, shared: bool, what: str
) -> None:
    # Not a file system that refuses writes: a name that no longer holds the chain. Decrypts go
    # on, in a chain linked to the head the writer held.
    path = tmp_path / "x.jsonl"
    writer = AuditFile(path, key, fsync=False, signer=SIGNER, shared=shared)
    first = writer.append({"n": 1}).record
    path.rename(tmp_path / "moved")
    if what == "link":
        os.symlink(tmp_path / "moved", path)
    elif what == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    if shared:  # its next name, known in advance to every process, held by a folder too
        (tmp_path / "x.1.jsonl").mkdir()
    placed = writer.append({"n": 2})
    assert placed.chain != "x.jsonl"
    start = records(tmp_path / placed.chain)[0]
    assert start["previous"] == {"chain": "x.jsonl", "seq": first["seq"],
                                 "hash": first["hash"], "mac": first["mac"]}  # fmt: skip


def _chain_with_a_hostile_line(folder: Path, key: bytes, value: str) -> Path:
    """A signed chain of one record, then a line holding ``value`` (file write access only)."""
    path = folder / "x.jsonl"
    AuditFile(path, key, fsync=False, signer=SIGNER, shared=False).append({"n": 1})
    last = json.loads(path.read_text().splitlines()[-1])
    hostile = f'{{"a":{value},"hash":"{"0" * 64}","mac":"{"0" * 64}","prev":"{last["mac"]}",'
    with path.open("a") as stream:
        stream.write(hostile + f'"seq":{last["seq"] + 1}}}\n')
    return path


@HOSTILE
def test_a_value_no_writer_writes_is_reported_not_raised(
    tmp_path: Path, key: bytes, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "audit"
    folder.mkdir()
    path = _chain_with_a_hostile_line(folder, key, value)
    (report,) = verify_chains([path], SIGNER.public_key())
    assert report.problems == ["line 3: edited: seq 3 is a line no writer wrote"]
    assert not verify(path, key).ok
    (tmp_path / "signing.pub").write_text(public_text(SIGNER.public_key()))
    code = main(["verify", str(folder), "--public-key", str(tmp_path / "signing.pub")], {})
    assert code == ExitCode.TAMPERED
    assert "this is a bug" not in capsys.readouterr().err


@HOSTILE
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-process"])
def test_a_writer_taking_up_a_chain_with_such_a_value_goes_on_in_the_next(
    tmp_path: Path, key: bytes, value: str, shared: bool
) -> None:
    path = _chain_with_a_hostile_line(tmp_path, key, value)
    if shared:
        assert AuditFile(path, key, fsync=False, signer=SIGNER).append({"n": 2}).chain == (
            "x.1.jsonl"
        )
    else:  # a live writer, its next name planted with such a line, then one foreign byte
        writer = AuditFile(tmp_path / "y.jsonl", key, fsync=False, signer=SIGNER, shared=False)
        writer.append({"n": 1})
        (tmp_path / "y.1.jsonl").write_text(f'{{"a":{value},"mac":"","prev":"","seq":1}}\n')
        with (tmp_path / "y.jsonl").open("a") as stream:
            stream.write("\n")
        assert re.fullmatch(r"y\.1\.[0-9a-f]{8}\.jsonl", writer.append({"n": 2}).chain)


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_deep_nesting_in_a_file_or_a_witness_is_reported_not_raised(
    tmp_path: Path, key: bytes
) -> None:
    path = tmp_path / "x.jsonl"
    AuditFile(path, key, fsync=False, signer=SIGNER, shared=False).append({"n": 1})
    nested = tmp_path / "nested.jsonl"
    for depth in range(sys.getrecursionlimit() - 300, sys.getrecursionlimit() + 10, 20):
        nested.write_text(f'{{"a":{_nested(depth)},"mac":"","prev":"{GENESIS}","seq":1}}\n')
        assert not verify(nested, key).ok
        checkpoint = (f'{{"chain":"x.jsonl","seq":0,"hash":"{GENESIS}","time":"t","key":"k",'
                      f'"sig":"","z":{_nested(depth)}}}')  # fmt: skip
        witness = Witness()
        witness.add_log([f'{{"chain":"x.jsonl","seq":1,"mac":"m","checkpoint":{checkpoint}}}'])
        # Too deep to parse, the line is no witness; shallower, it names another MAC for seq 1.
        (report,) = verify_chains([path], SIGNER.public_key(), witness)
        assert report.ok == (not witness.seen)


@pytest.mark.parametrize("value", ["1e999", "1..2", "-3", "NaN", "2.5"])
def test_reconcile_refuses_a_scrape_whose_count_is_not_one(
    tmp_path: Path, key: bytes, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.jsonl"
    AuditFile(path, key, fsync=False, signer=SIGNER, shared=False).append({"n": 1})
    scrape = tmp_path / "scrape.txt"
    scrape.write_text(f'kamus_decrypt_total{{action="decrypt",reason="ok"}} {value}\n')
    assert main(["reconcile", str(path), "--metrics", str(scrape)], {}) == ExitCode.INPUT
    assert "is not a count" in capsys.readouterr().err


def test_an_escaped_line_rewritten_raw_does_not_verify(
    tmp_path: Path, key: bytes, sample_event: SampleEvent
) -> None:
    # The writer escaped a client's right-to-left override and C1 CSI; the file's owner writes
    # them back raw, for whoever `cat`s the file.
    def event(number: int) -> dict[str, Any]:
        return {**sample_event(number), "user_agent": "kamus-init \u202edeinied\u202c \u009b2J"}

    folder = tmp_path / "audit"
    folder.mkdir()
    deployment = Deployment(folder, key, Ed25519PrivateKey.generate(), event)
    deployment.decrypt(1, 4)
    path = deployment.processes[1].path
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = canonical(json.loads(lines[2])) + b"\n"
    path.write_bytes(b"".join(lines))

    (problem,) = deployment.problems()
    assert problem == "line 3: edited: the record was rewritten (same content, new bytes)"
    assert verify(path, key).problem == "edited: the record was rewritten (same content, new bytes)"


def test_the_cluster_witness_is_refused_for_a_file_several_replicas_would_name_alike(
    tmp_path: Path,
) -> None:
    environ = {
        "KAMUS_KEYRING_FILE": "/k", "KAMUS_AUDIT_KEY": base64.b64encode(b"k" * 32).decode(),
        "KAMUS_AUDIT_SIGNING_KEY": "x", "KAMUS_AUDIT_FILE": str(tmp_path / "audit.jsonl"),
        "KAMUS_AUDIT_WITNESS_CONFIGMAP": "kamus/kamus-decryptor-audit-heads",
    }  # fmt: skip
    with pytest.raises(ConfigurationError, match="and KAMUS_AUDIT_DIR"):
        load_settings("decryptor", environ)


def _run_audit(*argv: str) -> subprocess.CompletedProcess[str]:
    """kamus-audit in a process of its own, within 1 GiB: a hang or a runaway read shows."""
    code = ("import resource, sys; from kamus_cli.audit import main;"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
            "sys.exit(main(sys.argv[1:], {}))")  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=20,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["verify", "reconcile"])
@pytest.mark.parametrize("plant", ["fifo", "link to /dev/zero"])
def test_a_name_in_the_folder_that_holds_no_file_is_tampering_not_a_hang_or_a_crash(
    deployment: Deployment, tmp_path: Path, command: str, plant: str
) -> None:
    deployment.decrypt(1, 2)
    planted = deployment.folder / "planted.jsonl"
    if plant == "fifo":
        os.mkfifo(planted)
    else:
        os.symlink("/dev/zero", planted)
    (tmp_path / "signing.pub").write_text(public_text(deployment.signer.public_key()))
    (tmp_path / "stdout.log").write_text("\n".join(deployment.logs) + "\n")
    extra = ["--public-key", str(tmp_path / "signing.pub")] if command == "verify" else []
    done = _run_audit(command, str(deployment.folder), "--witness", str(tmp_path / "stdout.log"),
                      *extra)  # fmt: skip
    assert done.returncode == ExitCode.TAMPERED, done.stderr
    assert f"{planted}: " in done.stdout
    assert "not a regular file" in done.stdout


def test_an_endless_line_in_a_chain_file_is_read_in_bounded_pieces(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.decrypt(1, 2)
    path = deployment.processes[1].path
    os.truncate(path, path.stat().st_size + (2 << 30))  # 2 GiB of zeros, no newline (sparse)
    (tmp_path / "signing.pub").write_text(public_text(deployment.signer.public_key()))
    done = _run_audit("verify", str(deployment.folder), "--public-key",
                      str(tmp_path / "signing.pub"))  # fmt: skip
    assert done.returncode == ExitCode.TAMPERED, done.stderr
    assert "truncated or not a JSON record" in done.stdout


def test_files_named_one_by_one_are_held_to_every_chain_the_witnesses_saw(
    deployment: Deployment, tmp_path: Path, run_main: Callable[..., int]
) -> None:
    deployment.decrypt(1, 4)
    deployment.decrypt(2, 4)
    (deployment.folder / "decryptor-2.jsonl").unlink()
    public, log = tmp_path / "signing.pub", tmp_path / "stdout.log"
    public.write_text(public_text(deployment.signer.public_key()))
    log.write_text("\n".join(deployment.logs) + "\n")
    files = [str(path) for path in sorted(deployment.folder.glob("*.jsonl"))]  # a shell glob
    argv = ["verify", *files, "--public-key", str(public), "--witness", str(log)]
    assert run_main(*argv) == ExitCode.TAMPERED
    # Unless the auditor says the files are a part of the chains.
    assert run_main(*argv, "--partial") == ExitCode.OK


def test_a_shared_chain_of_writers_before_origins_is_left_for_a_linked_one(
    tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def first_version(
        private: Ed25519PrivateKey, *, chain: str, origin: str, seq: int, hash_: str, time: str
    ) -> dict[str, Any]:
        checkpoint = {"chain": chain, "seq": seq, "hash": hash_, "time": time,
                      "key": key_id(private.public_key())}  # fmt: skip
        return checkpoint | {"sig": base64.b64encode(private.sign(canonical(checkpoint))).decode()}

    path = tmp_path / "audit.jsonl"
    with monkeypatch.context() as old:
        old.setattr("kamus_decryptor.auditfile.sign_checkpoint", first_version)
        before = AuditFile(path, key, fsync=False, signer=SIGNER, checkpoint_records=2)
        for number in range(3):
            before.append({"n": number})
    legacy = path.read_bytes()

    after = AuditFile(path, key, fsync=False, signer=SIGNER, checkpoint_records=2)
    assert after.append({"n": 3}).chain == "audit.1.jsonl"
    assert path.read_bytes() == legacy
    reports = verify_chains([path, tmp_path / "audit.1.jsonl"], SIGNER.public_key())
    assert [report.problems for report in reports] == [[], []]


def test_a_stopping_process_starts_no_chain(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "x.jsonl"
    writer = AuditFile(path, key, fsync=False, signer=SIGNER, shared=False)
    writer.append({"n": 1})
    with path.open("a") as stream:
        stream.write("\n")  # broken: the next append would start x.1.jsonl
    with pytest.raises(AuditWriteError, match="not continued"):
        writer.checkpoint(replace=False)  # what the exit hook calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]
