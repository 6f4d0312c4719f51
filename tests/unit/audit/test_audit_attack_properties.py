"""Property: whatever an insider does to the audit files, `verify --public-key` with the witnesses
never says OK for files that differ from what the decryptor wrote.

Three adversaries (docs/AUDIT.md): (a) write access to the files only; (b) the audit HMAC key too,
so every MAC can be recomputed; (c) copies of the files taken earlier, to put back. Hypothesis
draws sequences of edits, deletions, truncations, reorders, duplications, checkpoint copies
within and across chains, chain deletions and renames, forged appends, and recomputation of the
public hashes (and, for b, the MACs) after each. None holds the signing key, the log pipeline or
the Kubernetes API: the witnesses (stdout logs, cluster heads) are as the decryptor left them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from audit_deployment import Deployment
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kamus_kms.auditchain import GENESIS, chain_key, json_line, record_mac
from kamus_kms.auditsign import record_hash

Files = dict[str, list[str]]  # chain file name -> its lines
SETTINGS = settings(
    max_examples=400, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip


def _event(number: int) -> dict[str, Any]:
    return {
        "time": f"2026-11-27T10:00:{number % 60:02d}.000+00:00",
        "audit": True, "action": "decrypt", "request_id": f"req-{number}",
        "outcome": "allowed" if number % 3 else "denied", "reason": "ok",
        "caller": {"username": "system:serviceaccount:team-a:app", "pod": "app-1"},
        "items": [{"name": "pw", "fingerprint": f"{number:032x}", "namespace": "team-a"}],
        "source_ip": "10.0.3.7", "user_agent": "kamus-init",
    }  # fmt: skip


@dataclass(repr=False)
class Written:
    """A deployment as the decryptor left it, and copies of its files taken along the way."""

    deployment: Deployment
    files: Files
    old_copies: list[Files]

    def __repr__(self) -> str:
        return f"Written({sorted(self.files)})"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Two worker processes signing every 3 records; one restarts and goes on in a chain of its
    own (its old one ends with records its writer never signed)."""
    folder = tmp_path_factory.mktemp("written")
    deployment = Deployment(folder, os.urandom(32), Ed25519PrivateKey.generate(), _event)
    old_copies = []
    for pid, times in [(1, 4), (2, 3), (1, 3), (2, 5), (1, 1), (1, 0), (1, 2), (2, 1)]:
        if times == 0:  # process 1 restarts with its chain's last records unsigned
            deployment.restart(pid)
            continue
        deployment.decrypt(pid, times)
        old_copies.append(_read(folder))
    files = _read(folder)
    assert "decryptor-1-2.jsonl" in files
    return Written(deployment, files, old_copies)


def _read(folder: Path) -> Files:
    return {path.name: path.read_text().splitlines(keepends=True)
            for path in sorted(folder.glob("*.jsonl"))}  # fmt: skip


def _recompute(lines: list[str], start: int, key: bytes | None) -> list[str]:
    """Renumber and re-hash every record from ``start``; re-MAC them too with the audit key."""
    out = lines[:start]
    previous_hash, previous_mac = GENESIS, GENESIS
    if start:
        try:
            last = json.loads(out[-1])
            previous_hash, previous_mac = last.get("hash", GENESIS), last.get("mac", GENESIS)
        except ValueError:
            return lines
    for number, line in enumerate(lines[start:], start=start + 1):
        try:
            record = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if not isinstance(record, dict):
            out.append(line)
            continue
        record = {k: v for k, v in record.items() if k not in ("hash", "mac")} | {
            "seq": number, "prev": previous_mac,
        }  # fmt: skip
        record["hash"] = previous_hash = record_hash(previous_hash, record)
        if key is not None:
            previous_mac = record_mac(chain_key(key), record)
        else:
            previous_mac = json.loads(line).get("mac", GENESIS)
        record["mac"] = previous_mac
        out.append(json_line(record) + "\n")
    return out


def _pick(files: Files, index: int) -> str | None:
    names = sorted(files)
    return names[index % len(names)] if names else None


KINDS = ("edit", "delete", "truncate", "swap", "duplicate", "copy_checkpoint", "drop_chain",
         "rename_chain", "append_forged", "old_copy", "strip_checkpoints")  # fmt: skip


@dataclass(frozen=True)
class Mutation:
    """One thing the attacker does to the files (its repr is the counterexample)."""

    kind: str
    which: int
    where: int
    other: int
    recompute: bool
    field: str

    def apply(self, files: Files, written: Written, key: bytes | None) -> None:
        kind, other = self.kind, self.other
        name = _pick(files, self.which)
        if name is None:
            return
        lines = files[name]
        at = self.where % max(len(lines), 1)
        if kind == "drop_chain":
            del files[name]
            return
        if kind == "rename_chain":
            files[f"decryptor-{9 + other % 3}.jsonl"] = files.pop(name)
            return
        if kind == "old_copy":
            copy = written.old_copies[other % len(written.old_copies)]
            if name in copy:
                files[name] = list(copy[name])
            return
        if kind == "truncate":
            del lines[at:]
        elif kind == "delete" and lines:
            del lines[at]
        elif kind == "swap" and lines:
            there = other % len(lines)
            lines[at], lines[there] = lines[there], lines[at]
        elif kind == "duplicate" and lines:
            lines.insert(at, lines[at])
        elif kind == "edit" and lines:
            record = json.loads(lines[at])
            value = record.get(self.field)
            record[self.field] = value + 1 if isinstance(value, int) else f"x{other}"
            lines[at] = json_line(record) + "\n"
        elif kind == "copy_checkpoint":
            source = files[_pick(files, other) or name]
            checkpoints = [line for line in source if '"event":"checkpoint"' in line]
            if checkpoints:
                lines.insert(at, checkpoints[other % len(checkpoints)])
        elif kind == "strip_checkpoints":
            lines[:] = [line for line in lines if '"event":"checkpoint"' not in line]
        elif kind == "append_forged":
            lines.append(json_line({**_event(900 + other), "seq": 0, "prev": "", "hash": "",
                                    "mac": ""}) + "\n")  # fmt: skip
            files[name] = _recompute(lines, len(lines) - 1, key)
            return
        if self.recompute:
            files[name] = _recompute(lines, min(at, len(lines)), key)


mutations = st.builds(
    Mutation, st.sampled_from(KINDS), st.integers(0, 7), st.integers(0, 60), st.integers(0, 60),
    st.booleans(), st.sampled_from(["outcome", "request_id", "time", "mac", "seq", "prev"]),
)  # fmt: skip


def _write(folder: Path, files: Files) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name, lines in files.items():
        (folder / name).write_text("".join(lines))


def _check(
    written: Written, folder: Path, changes: list[Mutation], key: bytes | None, cluster: bool
) -> None:
    files = {name: list(lines) for name, lines in written.files.items()}
    for change in changes:
        change.apply(files, written, key)
    assume(files != written.files)
    _write(folder, files)
    deployment = written.deployment
    policy = deployment.policy
    tampered = Deployment(folder, deployment.key, deployment.signer, _event,
                          records=policy.records, seconds=policy.seconds)  # fmt: skip
    tampered.logs, tampered.heads = deployment.logs, deployment.heads
    reports = tampered.verify(cluster=cluster)
    changed = sorted(set(files) ^ set(written.files)
                     | {n for n in files if files[n] != written.files.get(n)})  # fmt: skip
    assert any(not report.ok for report in reports), f"accepted, with {changed} changed"


def test_the_written_deployment_verifies(written: Written, tmp_path: Path) -> None:
    _write(tmp_path / "copy", written.files)
    tampered = Deployment(tmp_path / "copy", written.deployment.key, written.deployment.signer,
                          _event)  # fmt: skip
    tampered.logs, tampered.heads = written.deployment.logs, written.deployment.heads
    assert [report.problems for report in tampered.verify()] == [[], [], []]


# The stdout logs hold every record's place, so they alone must suffice; the cluster heads add
# what a log pipeline that lost lines would miss.
WITNESSES = pytest.mark.parametrize("cluster", [True, False], ids=["logs+cluster", "logs"])


@WITNESSES
@SETTINGS
@given(changes=st.lists(mutations, min_size=1, max_size=4))
def test_with_file_access_no_change_passes(
    written: Written, tmp_path: Path, cluster: bool, changes: list[Mutation]
) -> None:
    _check(written, tmp_path / "files", changes, None, cluster)


@WITNESSES
@SETTINGS
@given(changes=st.lists(mutations, min_size=1, max_size=4))
def test_with_the_hmac_key_no_change_passes(
    written: Written, tmp_path: Path, cluster: bool, changes: list[Mutation]
) -> None:
    _check(written, tmp_path / "keyed", changes, written.deployment.key, cluster)
