"""The audit trail against its insider: the six attacks of issue 21 that `verify --public-key`
accepted, each written as the attacker worked, and what catches each now.

The attacker holds the audit HMAC key and write access to the files (or only the files), but not
the signing key, the log pipeline or the Kubernetes API (docs/AUDIT.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audit_deployment import Deployment, records, rewrite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kamus_decryptor.audit import place_of
from kamus_decryptor.auditfile import AuditFile
from kamus_kms.auditchain import json_line
from kamus_kms.auditsign import record_hash

SampleEvent = Callable[[int], dict[str, Any]]


@pytest.fixture
def deployment(tmp_path: Path, key: bytes, sample_event: SampleEvent) -> Deployment:
    """Two worker processes of a decryptor signing every 3 records."""
    folder = tmp_path / "audit"
    folder.mkdir()
    return Deployment(folder, key, Ed25519PrivateKey.generate(), sample_event)


def chain_of(deployment: Deployment, pid: int) -> Path:
    return deployment.processes[pid].path


def test_an_intact_deployment_verifies_with_every_witness(deployment: Deployment) -> None:
    deployment.decrypt(1, 7)
    deployment.decrypt(2, 4)
    for logs, cluster in [(False, False), (True, False), (False, True), (True, True)]:
        reports = deployment.verify(logs=logs, cluster=cluster)
        assert [report.problems for report in reports] == [[], []]
    # Every chain begins signed (a checkpoint of 0 records) and has at most N unsigned at its end.
    first = records(chain_of(deployment, 1))[0]
    assert first["event"] == "checkpoint"
    assert first["checkpoint"]["seq"] == 0
    assert first["checkpoint"]["origin"] == "kamus/kamus-decryptor"


def test_attack_1_a_genuine_checkpoint_copied_after_forged_records(
    deployment: Deployment, key: bytes
) -> None:
    deployment.decrypt(1, 8)
    path = chain_of(deployment, 1)
    chain = records(path)
    last = max(i for i, record in enumerate(chain) if record.get("event") == "checkpoint")
    forged = [{**record, "outcome": "denied", "request_id": "x"} for record in chain[last + 1 :]]
    rewrite(path, [*chain[: last + 1], *forged, chain[last]], key)

    for logs, cluster in [(False, False), (True, True)]:
        (problem,) = deployment.problems(logs=logs, cluster=cluster)
        assert "replayed checkpoint" in problem or "edited" in problem


def test_attack_2_a_record_deleted_in_the_middle_and_an_earlier_checkpoint_appended(
    deployment: Deployment, key: bytes
) -> None:
    deployment.decrypt(1, 9)
    path = chain_of(deployment, 1)
    chain = records(path)
    denied = next(i for i, record in enumerate(chain) if record.get("outcome") == "denied")
    earlier = next(record for record in chain if record.get("event") == "checkpoint")
    rewrite(path, [*chain[:denied], *chain[denied + 1 :], earlier], key)

    (problem,) = deployment.problems(logs=False, cluster=False)
    assert "edited" in problem or "replayed" in problem


def test_attack_3_a_whole_replica_chain_deleted(deployment: Deployment) -> None:
    deployment.decrypt(1, 4)
    deployment.decrypt(2, 4)
    chain_of(deployment, 2).unlink()

    for logs, cluster in [(True, False), (False, True)]:
        (problem,) = deployment.problems(logs=logs, cluster=cluster)
        assert problem.startswith("missing: the chain decryptor-2.jsonl is not among the files")


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
def test_attack_4_the_writer_does_not_sign_what_the_file_says(
    deployment: Deployment, caplog: pytest.LogCaptureFixture, same_size: bool
) -> None:
    # Write access to the file only, no key: edit a record after the last checkpoint and
    # recompute only its public hash.
    deployment.decrypt(1, 4)  # checkpoint(0), 1, 2, 3, checkpoint(4), 4: seq 6 is unsigned
    path = chain_of(deployment, 1)
    chain = records(path)
    victim = chain[-1]
    assert victim.get("event") != "checkpoint"
    edited = {**victim, "request_id": "req-X" if same_size else "req-edited-by-hand"}
    assert same_size == (len(json_line(edited)) == len(json_line(victim)))
    edited["hash"] = record_hash(chain[-2]["hash"], edited)
    path.write_text("".join(json_line(record) + "\n" for record in [*chain[:-1], edited]))

    with caplog.at_level(logging.ERROR, "kamus.audit"):
        deployment.decrypt(1, 3)  # enough for the next checkpoint

    # The edited record was never countersigned: the writer left that chain and went on in a
    # new one, linked to the head it held in memory.
    assert "decryptor-1.jsonl cannot be continued" in caplog.text
    successor = chain_of(deployment, 1)
    assert successor.name == "decryptor-1.1.jsonl"
    start = records(successor)[0]
    assert start["event"] == "chain_start"
    # A different size shows at the next append; the same size at the next checkpoint, which
    # compares the bytes it would sign with those the writer wrote (records 7 and 8 went on).
    head = records(path)[-1] if same_size else victim
    assert head["seq"] == (8 if same_size else 6)
    assert start["previous"] == {"chain": "decryptor-1.jsonl", "seq": head["seq"],
                                 "hash": head["hash"], "mac": head["mac"]}  # fmt: skip
    assert all(r["checkpoint"]["seq"] < 6 for r in records(path) if r.get("event") == "checkpoint")
    for logs, cluster in [(False, False), (True, True)]:
        problems = deployment.problems(logs=logs, cluster=cluster)
        assert len(problems) == 1
        assert "decryptor-1.1.jsonl" in problems[0] or "edited" in problems[0]


def test_attack_5_all_checkpoints_stripped_and_a_record_removed(
    deployment: Deployment, key: bytes
) -> None:
    deployment.decrypt(1, 7)
    path = chain_of(deployment, 1)
    chain = [record for record in records(path) if record.get("event") != "checkpoint"]
    rewrite(path, chain[:2] + chain[3:], key)

    (problem,) = deployment.problems(logs=False, cluster=False)
    assert problem.startswith("unsigned: no checkpoint signed by this key")
    # Against an unrelated public key, even an untouched chain does not verify.
    deployment.decrypt(2, 2)
    unrelated = Ed25519PrivateKey.generate().public_key()
    reports = deployment.verify(logs=False, cluster=False, public=unrelated)
    assert all(not report.ok for report in reports)


def test_attack_6_a_live_chain_cut_at_the_end(deployment: Deployment) -> None:
    deployment.decrypt(1, 8)
    path = chain_of(deployment, 1)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))  # the last 3 records of the running process: gone

    after = deployment.decrypt(1, 2)
    # The writer did not chain onto the shortened file: no sequence number is used twice.
    assert {placed.chain for placed in after} == {"decryptor-1.1.jsonl"}
    assert records(path) == [json.loads(line) for line in lines[:-3]]
    for logs, cluster in [(False, False), (True, False), (False, True), (True, True)]:
        (problem,) = deployment.problems(logs=logs, cluster=cluster)
        assert problem.startswith("deleted: seq") or "replayed" in problem, problem


def test_checkpoints_removed_from_the_middle_leave_more_unsigned_records_than_the_writer_does(
    deployment: Deployment, key: bytes
) -> None:
    # Without any witness: the chain keeps its first checkpoint, but the writer signs every 3
    # records, so 8 records after it cannot be what it wrote.
    deployment.decrypt(1, 8)
    path = chain_of(deployment, 1)
    chain = records(path)
    rewrite(path, [chain[0], *(r for r in chain[1:] if r.get("event") != "checkpoint")], key)

    (problem,) = deployment.problems(logs=False, cluster=False)
    assert problem == (
        "unsigned: 8 records after the last checkpoint, more than the 3 after which the writer"
        " signs (checkpoints removed)"
    )


def test_unsigned_records_spanning_more_than_the_writers_interval_are_refused(
    tmp_path: Path, key: bytes, sample_event: SampleEvent
) -> None:
    # The writer signs at least every T seconds while it writes: records after the last
    # checkpoint that span far more than T mean checkpoints were taken out.
    folder = tmp_path / "audit"
    folder.mkdir()
    deployment = Deployment(folder, key, Ed25519PrivateKey.generate(), sample_event,
                            records=100, seconds=60)  # fmt: skip
    deployment.decrypt(1, 2)
    path = chain_of(deployment, 1)
    chain = records(path)
    assert [r["time"][11:19] for r in chain[1:]] == ["10:00:01", "10:00:02"]
    chain[2]["time"] = "2026-11-27T10:02:02.000+00:00"  # 121 s after the first: > 60 + 60
    rewrite(path, chain, key)

    (problem,) = deployment.problems(logs=False, cluster=False)
    assert problem.startswith("unsigned: the records after the last checkpoint span 121 s")


def test_one_record_printed_twice_with_different_macs_is_a_replay(deployment: Deployment) -> None:
    # What the old writer did after a cut (attack 6): the log holds two records for one place.
    deployment.decrypt(1, 2)
    second = json.loads(deployment.logs[-1])
    deployment.logs.append(json.dumps({**second, "mac": "0" * 64, "hash": "1" * 64}))

    (problem,) = deployment.problems(cluster=False)
    assert problem.startswith(f"replayed: seq {second['seq']} printed twice with different MACs")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda line: json.dumps(json.loads(line)), "edited: the record was rewritten"),
        (lambda line: json_line({**json.loads(line), "mac": "f" * 64}), "does not name the MAC"),
    ],
    ids=["re-serialized", "mac-replaced"],
)
def test_what_no_hash_covers_is_still_checked_without_the_key_or_a_witness(
    deployment: Deployment, change: Callable[[str], str], expected: str
) -> None:
    deployment.decrypt(1, 4)
    path = chain_of(deployment, 1)
    lines = path.read_text().splitlines()
    lines[2] = change(lines[2])  # the line's bytes, or the MAC the next record names as prev
    path.write_text("".join(line + "\n" for line in lines))

    (problem,) = deployment.problems(logs=False, cluster=False)
    assert expected in problem


@pytest.mark.parametrize("shared", [True, False], ids=["shared-file", "per-process"])
def test_a_chain_forged_with_the_hmac_key_is_never_countersigned(
    tmp_path: Path, key: bytes, sample_event: SampleEvent, shared: bool
) -> None:
    # The insider plants a chain of their own (every MAC and hash right, no checkpoint they could
    # sign) where the writer will take it up: as a successor of its file.
    signer = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    forged_path = tmp_path / "audit.1.jsonl"
    rewrite(forged_path, [{**sample_event(n), "request_id": "forged"} for n in (1, 2)], key)
    forged = forged_path.read_bytes()

    writer = AuditFile(path, key, fsync=False, signer=signer, checkpoint_records=3, shared=shared)
    placed = writer.append(sample_event(3))

    assert forged_path.read_bytes() == forged  # not continued, nothing signed after it
    if not shared:  # a per-process writer never takes up a file it did not make
        assert placed.chain == "audit.jsonl"
        return
    assert placed.chain == "audit.2.jsonl"
    start = records(tmp_path / "audit.2.jsonl")[0]
    assert start["previous"]["chain"] == "audit.1.jsonl"
    assert "does not begin signed" in start["reason"]


def test_a_shared_chain_with_more_unsigned_records_than_the_interval_is_not_continued(
    tmp_path: Path, key: bytes, sample_event: SampleEvent
) -> None:
    signer = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.jsonl"
    first = AuditFile(path, key, fsync=False, signer=signer, checkpoint_records=3)
    first.append(sample_event(1))  # checkpoint(0), event
    chain = records(path)
    # Records appended by the key holder, in the writers' names: four unsigned in a row.
    rewrite(path, [*chain, *({**sample_event(n), "request_id": "x"} for n in range(2, 6))], key)

    placed = AuditFile(path, key, fsync=False, signer=signer, checkpoint_records=3).append(
        sample_event(9)
    )
    assert placed.chain == "audit.1.jsonl"
    assert (
        "more unsigned records than a writer leaves"
        in records(tmp_path / "audit.1.jsonl")[0]["reason"]
    )


def test_records_a_key_holder_slips_into_a_shared_file_are_not_in_the_logs(
    tmp_path: Path, key: bytes, sample_event: SampleEvent
) -> None:
    # The shared file's one gap: another process takes the forged records (their MACs are right)
    # and signs them. The logs, which saw the records around them, did not see them.
    folder = tmp_path / "audit"
    folder.mkdir()
    deployment = Deployment(folder, key, Ed25519PrivateKey.generate(), sample_event, records=5)
    deployment.decrypt(1, 2)
    path = chain_of(deployment, 1)
    rewrite(path, [*records(path), {**sample_event(50), "request_id": "forged"}], key)
    other = AuditFile(path, key, fsync=False, signer=deployment.signer, checkpoint_records=5,
                      witness=deployment._witnessed, origin="kamus/kamus-decryptor")  # fmt: skip
    done = other.append(sample_event(51))
    deployment.logs.append(json.dumps({"event": "audit", **place_of(done)}))
    for _ in range(3):
        done = other.append(sample_event(52))
        deployment.logs.append(json.dumps({"event": "audit", **place_of(done)}))
    assert done.chain == path.name  # taken up, and signed: the gap
    assert any(r.get("event") == "checkpoint" and r["seq"] > 4 for r in records(path))

    (problem,) = deployment.problems(cluster=False)
    assert problem.startswith("unvouched: seq 4: not in the witness logs")
