"""A decryptor's audit as its attackers and auditors see it: signed chains in a folder, one per
worker process, the stdout lines the log pipeline keeps, and the heads the cluster witness keeps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kamus_decryptor.audit import place_of, witness_fields
from kamus_decryptor.auditfile import AuditFile, Placed
from kamus_kms.auditchain import GENESIS, chain_key, json_line, record_mac
from kamus_kms.auditsign import record_hash
from kamus_kms.auditverify import ChainReport, CheckpointPolicy, verify_chains
from kamus_kms.auditwitness import Witness

ORIGIN = "kamus/kamus-decryptor"


class Deployment:
    """Worker processes of one decryptor writing into ``folder``, and what the witnesses saw."""

    def __init__(
        self, folder: Path, key: bytes, signer: Ed25519PrivateKey,
        event: Callable[[int], dict[str, Any]], *, records: int = 3, seconds: float = 3600,
    ) -> None:  # fmt: skip
        self.folder, self.key, self.signer, self.event = folder, key, signer, event
        self.policy = CheckpointPolicy(records, seconds)
        self.logs: list[str] = []  # the decryptor's stdout, as the log pipeline keeps it
        self.heads: dict[str, str] = {}  # the cluster witness: chain -> latest checkpoint line
        self.processes: dict[int, AuditFile] = {}
        self.starts: dict[int, int] = {}
        self.count = 0

    def process(self, pid: int) -> AuditFile:
        if pid not in self.processes:
            # As AuditDirectory names them: a process start, a chain of its own.
            start = self.starts[pid] = self.starts.get(pid, 0) + 1
            name = f"decryptor-{pid}.jsonl" if start == 1 else f"decryptor-{pid}-{start}.jsonl"
            self.processes[pid] = AuditFile(
                self.folder / name, self.key, fsync=False,
                signer=self.signer, checkpoint_records=self.policy.records,
                checkpoint_seconds=self.policy.seconds, witness=self._witnessed, origin=ORIGIN,
                shared=False,
            )  # fmt: skip
        return self.processes[pid]

    def restart(self, pid: int) -> None:
        """Process ``pid`` starts again (a restarted container reuses its pid): a new writer,
        with a chain of its own."""
        self.processes.pop(pid, None)

    def _witnessed(self, chain: str, record: dict[str, Any]) -> None:
        kind, fields = witness_fields(chain, record)
        line = json.dumps({"event": kind, **fields})
        self.logs.append(line)
        if kind == "audit_checkpoint":
            self.heads[chain] = line

    def decrypt(self, pid: int, times: int = 1) -> list[Placed]:
        """``times`` audited attempts in process ``pid``, printed on stdout as the trail does."""
        placed = []
        for _ in range(times):
            self.count += 1
            event = self.event(self.count)
            done = self.process(pid).append(event)
            self.logs.append(json.dumps({"event": "audit", **event, **place_of(done)}))
            placed.append(done)
        return placed

    def witness(self, *, logs: bool = True, cluster: bool = True) -> Witness:
        witness = Witness()
        if logs:
            witness.add_log(self.logs)
        if cluster:
            assert witness.add_heads(self.heads) == []
        return witness

    def verify(
        self, *, logs: bool = True, cluster: bool = True, public: Ed25519PublicKey | None = None
    ) -> list[ChainReport]:
        return verify_chains(
            sorted(self.folder.glob("*.jsonl")), public or self.signer.public_key(),
            self.witness(logs=logs, cluster=cluster), self.policy, complete=True,
        )  # fmt: skip

    def problems(self, **options: Any) -> list[str]:
        return [problem for report in self.verify(**options) for problem in report.problems]


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, chain: list[dict[str, Any]], key: bytes | None) -> None:
    """Write ``chain`` renumbered, every public hash recomputed, and every MAC with ``key`` too
    (the insider who holds the audit key); without it the MACs are left as they are."""
    mac, previous = GENESIS, GENESIS
    lines = []
    for seq, original in enumerate(chain, start=1):
        record = {name: value for name, value in original.items() if name not in ("hash", "mac")}
        record |= {"seq": seq, "prev": mac}
        record["hash"] = previous = record_hash(previous, record)
        mac = record_mac(chain_key(key), record) if key is not None else original["mac"]
        record["mac"] = mac
        lines.append(json_line(record) + "\n")
    path.write_text("".join(lines))
