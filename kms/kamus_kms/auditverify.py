"""Verify audit chains with the public signing key only, against what witnesses saw.

The adversary (docs/AUDIT.md, "What each verification proves"): whoever holds the audit HMAC key
and can write, delete or replace the audit files, but holds neither the signing key, nor the log
pipeline, nor the Kubernetes API. Against them, a chain verifies only if:

- every record hashes to its stored ``hash`` and links to the record before it, with sequence
  numbers 1, 2, 3, ... and every line in its canonical bytes;
- every checkpoint record is signed by the key, names this chain, and covers **exactly** the
  record right before it (its ``seq`` and ``hash``): a checkpoint copied elsewhere, replayed after
  forged records or kept after a deletion no longer matches its place;
- the chain begins with a checkpoint (the writer signs a new chain before its first record, after
  the link to the chain it replaces), all of one origin, and the records after the last one stay
  within the writer's interval (at most ``records`` of them, spanning at most ``seconds`` plus a
  margin): stripping checkpoints shows. What those last records are, only a witness can tell: a
  chain cut back to an old checkpoint and written on for less than the interval passes without
  one;
- what the witnesses saw is there: every (chain, seq, mac) the decryptor printed, every witnessed
  checkpoint's hash, every chain they name (a replica's folder deleted whole), with no (chain, seq)
  printed twice with different MACs (a chain cut and written again); with stdout logs, every
  record after a chain's last checkpoint, and every record between two the logs saw, must be in
  them too;
- a chain started because its predecessor did not verify (``chain_start`` naming ``previous``)
  finds that predecessor with at least the records and the hash it names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kamus_kms.auditchain import GENESIS, chain_lines, json_line, open_chain
from kamus_kms.auditsign import checkpoint_valid, record_hash
from kamus_kms.auditwitness import CHAIN_START_EVENT, CHECKPOINT_EVENT, Witness


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """How often the writer signs: the decryptor's KAMUS_AUDIT_CHECKPOINT_RECORDS and _SECONDS."""

    records: int = 100
    seconds: float = 60.0

    @property
    def margin_seconds(self) -> float:
        # The timer of a busy worker can run late; a whole extra interval is beyond any delay.
        return max(self.seconds, 10.0)


@dataclass
class ChainReport:
    """What the verification found in one chain."""

    chain: str
    path: Path | None
    records: int = 0
    checkpoints: int = 0
    covered_seq: int = 0  # the last seq a checkpoint signed
    signed_seq: int = 0  # the seq of the last checkpoint record
    origin: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def uncovered(self) -> int:
        """Records after the last checkpoint."""
        return self.records - self.signed_seq


@dataclass(frozen=True, slots=True)
class _Link:
    """What a successor chain says its predecessor held."""

    successor: str
    seq: int
    hash: str


def _lines(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
    with open_chain(path) as stream:
        for number, raw in enumerate(chain_lines(stream), start=1):
            try:
                record = json.loads(raw) if raw.endswith(b"\n") else None
            except (ValueError, RecursionError):
                record = None
            yield number, raw, record if isinstance(record, dict) else None


def _link(path: Path) -> tuple[str, _Link] | None:
    """The predecessor a chain's first record names, if it starts a chain after another."""
    for _, _, record in _lines(path):
        previous = record.get("previous") if record is not None else None
        if (
            record is not None
            and record.get("event") == CHAIN_START_EVENT
            and isinstance(previous, dict)
            and isinstance(previous.get("chain"), str)
            and isinstance(previous.get("seq"), int)
            and isinstance(previous.get("hash"), str)
        ):
            return previous["chain"], _Link(path.name, previous["seq"], previous["hash"])
        return None
    return None


def _time(record: dict[str, Any]) -> datetime | None:
    value = record.get("time")
    if record.get("event") == CHECKPOINT_EVENT and isinstance(record.get("checkpoint"), dict):
        value = record["checkpoint"].get("time")
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def _canonical_line(raw: bytes, record: dict[str, Any]) -> bool:
    # Records of the public chain were always written escaped: the raw canonical form is only of
    # lines older than both, which carry no hash.
    return raw == (json_line(record) + "\n").encode("utf-8")


def _span(seqs: Sequence[int]) -> str:
    return f"seq {seqs[0]}" if len(seqs) == 1 else f"seq {seqs[0]}..{seqs[-1]}"


class _ChainCheck:
    """One pass over one chain file; stops at the first problem."""

    def __init__(
        self, path: Path, public: Ed25519PublicKey, policy: CheckpointPolicy, witness: Witness,
        links: list[_Link],
    ) -> None:  # fmt: skip
        self.path, self.public, self.policy = path, public, policy
        self.report = ChainReport(path.name, path)
        self.witness = witness
        self.seen = witness.seen.get(path.name, {})
        self.logged = path.name in witness.logged
        # seq -> (hash, who said so): witnessed checkpoints and successors' links
        self.hashes: dict[int, list[tuple[str, str]]] = {}
        for checkpoint in witness.signed(path.name, public):
            self.hashes.setdefault(checkpoint["seq"], []).append(
                (checkpoint["hash"], "a witnessed checkpoint")
            )
        for link in links:
            self.hashes.setdefault(link.seq, []).append(
                (link.hash, f"the chain that continues it ({link.successor})")
            )
        self.tail_first: datetime | None = None
        self.tail_last: datetime | None = None
        self.key: str | None = None
        self.linked = False  # the chain begins with a chain start
        self.mac: object = GENESIS  # the MAC of the record before: no key checks it, but it
        # is in the next record's hash (as prev), so an edit of it shows there

    def fail(self, problem: str) -> ChainReport:
        self.report.problems.append(problem)
        return self.report

    def run(self) -> ChainReport:
        previous, report = GENESIS, self.report
        for number, raw, record in _lines(self.path):
            where = f"line {number}"
            if record is None:
                return self.fail(f"{where}: truncated or not a JSON record")
            seq, stored = record.get("seq"), record.get("hash")
            if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(stored, str):
                return self.fail(
                    f"{where}: no public hash (written before signed checkpoints: verify it with"
                    " the audit key)"
                )
            if seq != report.records + 1:
                kind = (
                    "inserted: a repeated sequence number"
                    if seq <= report.records
                    else f"deleted or reordered: seq {report.records + 1} expected, seq {seq} found"
                )
                return self.fail(f"{where}: {kind}")
            try:
                problem = self.record(seq, raw, record, stored, previous)
            except (ValueError, RecursionError):  # NaN, a lone surrogate, deep nesting
                problem = f"edited: seq {seq} is a line no writer wrote"
            if problem is not None:
                return self.fail(f"{where}: {problem}")
            report.records, previous, self.mac = seq, stored, record.get("mac")
            self.tail(record)
        return self.finish()

    def record(
        self, seq: int, raw: bytes, record: dict[str, Any], stored: str, previous: str
    ) -> str | None:
        """What is wrong with record ``seq`` after a record of hash ``previous``, if anything."""
        if record.get("prev") != self.mac:
            return f"edited: seq {seq} does not name the MAC of the record before it"
        if record_hash(previous, record) != stored:
            return (f"edited: seq {seq} does not hash to its stored hash, or does not chain to"
                    " the record before it")  # fmt: skip
        if not _canonical_line(raw, record):
            return "edited: the record was rewritten (same content, new bytes)"
        problem = self.witnessed(seq, record, stored)
        if problem is None and record.get("event") == CHECKPOINT_EVENT:
            problem = self.checkpoint(seq, record.get("checkpoint"), previous)
        if seq == 1:
            self.linked = record.get("event") == CHAIN_START_EVENT
        return problem

    def witnessed(self, seq: int, record: dict[str, Any], stored: str) -> str | None:
        if self.witness.vouches(self.path.name, seq, record.get("mac"), stored) is False:
            return (f"edited: seq {seq} differs from the record the decryptor printed on stdout"
                    " (the witness logs)")  # fmt: skip
        for expected, source in self.hashes.get(seq, []):
            if expected != stored:
                return f"edited: the records up to seq {seq} differ from what {source} holds"
        return None

    def checkpoint(self, seq: int, checkpoint: object, previous: str) -> str | None:
        report = self.report
        if not isinstance(checkpoint, dict) or not checkpoint_valid(checkpoint, self.public):
            return "forged checkpoint: its signature does not verify with this key"
        if checkpoint["chain"] != self.path.name:
            return (f"edited: a checkpoint of the chain {checkpoint['chain']!r} copied into this"
                    " one")  # fmt: skip
        if checkpoint["seq"] != seq - 1:
            return (f"replayed checkpoint: it signs seq {checkpoint['seq']} but stands after seq"
                    f" {seq - 1} (a checkpoint covers exactly the record before it)")  # fmt: skip
        if checkpoint["hash"] != previous:
            return (f"edited: the records up to seq {seq - 1} differ from what the checkpoint"
                    " signed (the file was rewritten)")  # fmt: skip
        origin = checkpoint.get("origin")
        first = 2 if self.linked else 1
        if not report.checkpoints and "origin" in checkpoint and seq != first:
            # Writers that name their origin sign a chain before anything else (after the link
            # to the chain it replaces): only a removed checkpoint leaves records before it.
            return (f"unsigned: the chain does not begin with a checkpoint (its first is seq"
                    f" {seq})")  # fmt: skip
        if report.checkpoints and (origin != report.origin or checkpoint["key"] != self.key):
            return "edited: a checkpoint of another log (origin or key) in this chain"
        report.origin, self.key = origin, checkpoint["key"]
        report.checkpoints += 1
        report.covered_seq, report.signed_seq = seq - 1, seq
        self.tail_first = self.tail_last = None
        return None

    def tail(self, record: dict[str, Any]) -> None:
        if record.get("event") == CHECKPOINT_EVENT:
            return
        when = _time(record)
        if when is not None:
            self.tail_first = self.tail_first or when
            self.tail_last = when

    def finish(self) -> ChainReport:
        report, policy = self.report, self.policy
        replays = self.witness.replays(self.path.name)
        if replays:
            return self.fail(
                f"replayed: {_span(replays)} printed twice with different MACs (the chain was cut"
                " and written again)"
            )
        witnessed = [*self.seen, *self.hashes]
        if witnessed and max(witnessed) > report.records:
            missing = f"seq {report.records + 1}..{max(witnessed)}"
            return self.fail(
                f"deleted: {missing} missing at the end (the witnesses saw seq {max(witnessed)})"
            )
        if report.records and not report.checkpoints:
            return self.fail("unsigned: no checkpoint signed by this key (checkpoints removed,"
                             " or another key)")  # fmt: skip
        if report.uncovered > policy.records:
            return self.fail(
                f"unsigned: {report.uncovered} records after the last checkpoint, more than the"
                f" {policy.records} after which the writer signs (checkpoints removed)"
            )
        if self.tail_first is not None and self.tail_last is not None:
            span = (self.tail_last - self.tail_first).total_seconds()
            if span > policy.seconds + policy.margin_seconds:
                return self.fail(
                    f"unsigned: the records after the last checkpoint span {span:.0f} s, more"
                    f" than the {policy.seconds:g} s after which the writer signs (checkpoints"
                    " removed)"
                )
        if self.logged:
            # Logs may begin after a chain did (retention), never leave a hole in what they saw:
            # a record missing between two they saw was not printed by the decryptor.
            seen = [seq for seq in self.seen if seq <= report.records]
            # From the chain's beginning when the logs saw it (its first checkpoint is seq 1,
            # or 2 after a chain start).
            low = min(seen, default=1)
            holes = [seq for seq in range(1 if low <= 2 else low, max(seen, default=0))
                     if seq not in self.seen]  # fmt: skip
            if holes:
                return self.fail(
                    f"unvouched: {_span(holes)}: not in the witness logs, which saw the records"
                    " around it (forged, or the log pipeline lost lines)"
                )
            unvouched = [
                seq for seq in range(report.signed_seq + 1, report.records + 1)
                if seq not in self.seen
            ]  # fmt: skip
            if unvouched:
                return self.fail(
                    f"unvouched: {_span(unvouched)}: after the last checkpoint, neither signed"
                    " nor in the witness logs (forged, or the logs given end before the files)"
                )
        return report


def verify_chains(
    paths: Sequence[Path],
    public: Ed25519PublicKey,
    witness: Witness | None = None,
    policy: CheckpointPolicy | None = None,
    *,
    complete: bool = False,
) -> list[ChainReport]:
    """Check every chain of ``paths`` (see the module docstring), one report per chain.

    ``complete``: the paths hold every chain of the log (a whole KAMUS_AUDIT_DIR), so a chain the
    witness names that is not among them is missing; otherwise only the chains given are checked.
    Raises OSError when a file cannot be read.
    """
    witness = witness or Witness()
    policy = policy or CheckpointPolicy()
    reports: list[ChainReport] = []
    by_name: dict[str, Path] = {}
    for path in paths:
        if path.name in by_name:
            reports.append(ChainReport(path.name, path, problems=[
                f"two files hold a chain named {path.name} ({by_name[path.name]}, {path})"
            ]))  # fmt: skip
        by_name.setdefault(path.name, path)
    links: dict[str, list[_Link]] = {}
    for path in by_name.values():
        found = _link(path)
        if found is not None:
            links.setdefault(found[0], []).append(found[1])
    for name, path in by_name.items():
        reports.append(_ChainCheck(path, public, policy, witness, links.get(name, [])).run())
    expected = set(links) | (witness.chains if complete else set())
    for name in sorted(expected - set(by_name)):
        seen = max([*witness.seen.get(name, {}), *(link.seq for link in links.get(name, []))],
                   default=0)  # fmt: skip
        sources = [
            *(["the witnesses"] if name in witness.chains else []),
            *(f"the chain {link.successor}" for link in links.get(name, [])),
        ]
        reports.append(ChainReport(name, None, problems=[
            f"missing: the chain {name} is not among the files, yet {' and '.join(sources)}"
            f" saw it (up to seq {seen})"
        ]))  # fmt: skip
    return reports
