from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import assume, given
from hypothesis import strategies as st

from kamus_decryptor.auditfile import AuditFile
from kamus_kms.auditchain import verify

COUNT = 12
Lines = list[bytes]


@dataclass(frozen=True)
class Log:
    """A pristine chained log, its key and a scratch file for tampered copies."""

    key: bytes
    lines: Lines
    scratch: Path

    def record(self, number: int) -> dict[str, Any]:
        return dict(json.loads(self.lines[number - 1]))

    def write(self, lines: Lines) -> Path:
        self.scratch.write_bytes(b"".join(lines))
        return self.scratch


def _sample(number: int) -> dict[str, Any]:
    return {
        "time": f"2026-11-27T10:00:{number:02d}.000+00:00",
        "audit": True,
        "action": "decrypt",
        "request_id": f"req-{number}",
        "outcome": "allowed",
        "reason": "ok",
        "caller": {"username": "system:serviceaccount:team-a:app", "pod": "app-1"},
        "items": [{"name": "pw", "fingerprint": "ab", "namespace": "team-a"}],
        "source_ip": "10.0.3.7",
        "user_agent": "kamus-init",
    }


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    """A pristine log of COUNT records, built once per module."""
    folder = tmp_path_factory.mktemp("tampering")
    key = os.urandom(32)
    audit = AuditFile(folder / "pristine.jsonl", key, fsync=False)
    for number in range(1, COUNT + 1):
        audit.append(_sample(number))
    lines = (folder / "pristine.jsonl").read_bytes().splitlines(keepends=True)
    return Log(key, lines, folder / "tampered.jsonl")


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _forge(record: dict[str, Any], prev: str, key: bytes) -> dict[str, Any]:
    """What an attacker holding ``key`` writes: the record re-chained onto ``prev``."""
    chain = HKDF(hashes.SHA256(), 32, None, b"kamus audit chain v1").derive(key)
    body = {k: v for k, v in record.items() if k != "mac"} | {"prev": prev}
    mac = hmac.new(chain, _line(body)[:-1], hashlib.sha256).hexdigest()
    return body | {"mac": mac}


def _rechain_from(log: Log, start: int, key: bytes, edit: dict[str, Any]) -> Lines:
    """Edit record ``start`` and recompute the chain from there on with ``key``."""
    lines = log.lines[: start - 1]
    prev = log.record(start - 1)["mac"] if start > 1 else "0" * 64
    for number in range(start, COUNT + 1):
        changes = edit if number == start else {}
        forged = _forge(log.record(number) | changes, prev, key)
        lines.append(_line(forged))
        prev = forged["mac"]
    return lines


def _edited(log: Log, number: int, **fields: Any) -> Lines:
    lines = list(log.lines)
    lines[number - 1] = _line(log.record(number) | fields)
    return lines


def _without(log: Log, *numbers: int) -> Lines:
    return [line for index, line in enumerate(log.lines, start=1) if index not in numbers]


def _insert_after(log: Log, number: int, line: bytes) -> Lines:
    return [*log.lines[:number], line, *log.lines[number:]]


def _forged_after(log: Log, number: int) -> bytes:
    prev = log.record(number)["mac"] if number else "0" * 64
    return _line(_sample(99) | {"seq": number + 1, "prev": prev, "mac": "f" * 64})


def _swapped(log: Log, first: int, second: int) -> Lines:
    lines = list(log.lines)
    lines[first - 1], lines[second - 1] = lines[second - 1], lines[first - 1]
    return lines


def _moved_to_end(log: Log, number: int) -> Lines:
    return [*_without(log, number), log.lines[number - 1]]


def _cut(log: Log, number: int, keep_newline: bool) -> Lines:
    lines = log.lines[:number]
    half = lines[-1][: len(lines[-1]) // 2]
    lines[-1] = half + b"\n" if keep_newline else half
    return [*lines, *log.lines[number:]] if keep_newline else lines


def _reformatted(log: Log, number: int) -> Lines:
    lines = list(log.lines)
    lines[number - 1] = json.dumps(log.record(number), sort_keys=True).encode() + b"\n"
    return lines


def _spliced(log: Log, number: int) -> Lines:
    """Replace record ``number`` by the same-numbered record of another log with the same key."""
    other = _forge(log.record(number) | {"request_id": "other"}, "e" * 64, log.key)
    lines = list(log.lines)
    lines[number - 1] = _line(other)
    return lines


Tamper = Callable[[Log], Lines]
WRONG_KEY = b"w" * 32

CASES: list[tuple[str, Tamper, int, str]] = [
    ("edit a field", lambda log: _edited(log, 5, outcome="denied"), 5, "edited"),
    ("edit the seq", lambda log: _edited(log, 5, seq=6), 5, "edited"),
    ("edit the prev", lambda log: _edited(log, 5, prev="0" * 64), 5, "edited"),
    ("edit the last", lambda log: _edited(log, COUNT, reason="x"), COUNT, "edited"),
    ("reformat a line", lambda log: _reformatted(log, 4), 4, "edited: the record was rewritten"),
    ("delete a middle record", lambda log: _without(log, 5), 5, "deleted: seq 5 missing"),
    ("delete a run", lambda log: _without(log, 5, 6, 7), 5, "deleted: seq 5..7 missing"),
    ("delete the first record", lambda log: _without(log, 1), 1, "deleted: seq 1 missing"),
    ("insert a forged record", lambda log: _insert_after(log, 5, _forged_after(log, 5)), 6,
     "inserted"),
    ("insert a forged first record", lambda log: _insert_after(log, 0, _forged_after(log, 0)), 1,
     "inserted"),
    ("append a forged record", lambda log: [*log.lines, _forged_after(log, COUNT)], COUNT + 1,
     "edited"),
    ("duplicate a record", lambda log: _insert_after(log, 5, log.lines[4]), 6,
     "inserted: record seq 5 repeats"),
    ("splice another log's record", lambda log: _spliced(log, 6), 6, "inserted"),
    ("swap two records", lambda log: _swapped(log, 5, 6), 5, "reordered"),
    ("move a record to the end", lambda log: _moved_to_end(log, 3), 3, "reordered"),
    ("truncate mid-line", lambda log: _cut(log, COUNT, keep_newline=False), COUNT, "truncated"),
    ("cut a middle line", lambda log: _cut(log, 7, keep_newline=True), 7, "truncated"),
    ("blank line", lambda log: _insert_after(log, 3, b"\n"), 4, "truncated"),
    ("recompute with the wrong key", lambda log: _rechain_from(log, 1, WRONG_KEY, {}), 1,
     "edited"),
    ("edit, then recompute the rest with the wrong key",
     lambda log: _rechain_from(log, 5, WRONG_KEY, {"outcome": "denied"}), 5, "edited"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tamper", "line", "kind"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_tampering_is_reported_at_the_first_altered_line_with_its_kind(
    log: Log, tamper: Tamper, line: int, kind: str
) -> None:
    result = verify(log.write(tamper(log)), log.key)
    assert not result.ok
    assert (result.line, result.records, result.last_seq) == (line, line - 1, line - 1)
    assert result.problem is not None
    assert result.problem.startswith(kind), result.problem


@pytest.mark.parametrize(
    ("deleted", "problem"),
    [(1, "deleted: seq 12 missing at the end"), (3, "deleted: seq 10..12 missing at the end")],
)
def test_deleting_the_last_records_is_reported_against_an_anchor(
    log: Log, deleted: int, problem: str
) -> None:
    head = (COUNT, log.record(COUNT)["mac"])
    path = log.write(log.lines[:-deleted])
    assert verify(path, log.key).ok  # without an anchor the chain cannot tell: documented
    result = verify(path, log.key, head=head)
    assert not result.ok
    assert result.line == COUNT - deleted + 1
    assert result.problem is not None
    assert result.problem.startswith(problem)


def test_a_chain_rewritten_with_the_key_is_caught_by_an_anchor(log: Log) -> None:
    head = (COUNT, log.record(COUNT)["mac"])
    path = log.write(_rechain_from(log, 5, log.key, {"outcome": "denied"}))
    assert verify(path, log.key).ok  # the key holder can rewrite history: anchors exist for this
    result = verify(path, log.key, head=head)
    assert (result.ok, result.line) == (False, COUNT)
    assert result.problem is not None
    assert "anchor" in result.problem


def test_a_matching_anchor_inside_the_log_verifies(log: Log) -> None:
    path = log.write(log.lines)
    assert verify(path, log.key, head=(4, log.record(4)["mac"])).ok
    assert verify(path, log.key, head=(COUNT, log.record(COUNT)["mac"])).ok


FIELDS = [
    ("outcome",),
    ("reason",),
    ("time",),
    ("request_id",),
    ("caller", "username"),
    ("caller", "pod"),
    ("items", 0, "namespace"),
    ("items", 0, "fingerprint"),
    ("seq",),
    ("prev",),
    ("mac",),
]


@given(
    number=st.integers(1, COUNT),
    field=st.sampled_from(FIELDS),
    value=st.one_of(st.text(max_size=20), st.integers(), st.none()),
)
def test_any_edit_of_any_field_is_reported_at_its_line(
    log: Log, number: int, field: tuple[str | int, ...], value: object
) -> None:
    record = log.record(number)
    holder: Any = record
    for step in field[:-1]:
        holder = holder[step]
    assume(holder[field[-1]] != value)
    holder[field[-1]] = value
    lines = list(log.lines)
    lines[number - 1] = _line(record)
    result = verify(log.write(lines), log.key)
    assert (result.ok, result.line) == (False, number)
    assert result.problem is not None
    assert result.problem.startswith("edited")


@given(number=st.integers(1, COUNT), position=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_any_changed_byte_is_reported_at_its_line(
    log: Log, number: int, position: int, byte: int
) -> None:
    line = bytearray(log.lines[number - 1])
    position %= len(line) - 1  # never the newline: that would merge two lines
    assume(byte not in (line[position], ord("\n")))
    line[position] = byte
    lines = list(log.lines)
    lines[number - 1] = bytes(line)
    result = verify(log.write(lines), log.key)
    assert (result.ok, result.line) == (False, number)
