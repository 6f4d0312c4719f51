"""The audit chain format: canonical records, the chain key, line escaping and verification.

Record format (docs/AUDIT.md)::

    {<event fields>..., "seq": N, "prev": <mac of record N-1, 64 zeros for N=1>, "mac": <hex>}

``mac`` is HMAC-SHA256 over the canonical JSON (sorted keys, no spaces, UTF-8) of the record
without ``mac``; ``prev`` is inside what it covers, so every record vouches for all records before
it. The HMAC key is derived from the audit key with HKDF-SHA256 (info ``kamus audit chain v1``), so
the chain key differs from the key of the ciphertext fingerprints in the same events. Without the
key an edit cannot be hidden by recomputing the chain; deleting records at the very end can only
be noticed against an anchor ``(seq, mac)`` kept elsewhere.

The line on disk is that canonical JSON with every control, format and line/paragraph separator
character written as a ``\\uXXXX`` escape (:func:`escape_unsafe`): values come partly from
requests (a user agent, item names), and a raw U+2028, U+0085 or C1 CSI would split the line for
some readers or drive the terminal of whoever ``cat``s the file. The escaped line parses to the
same record, so the MAC is unchanged; lines written before the escaping verify as they are.

It lives in the core because two programs share it: the decryptor writes the chain
(``kamus_decryptor.auditfile``) and ``kamus-audit`` verifies it without the decryptor installed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kamus_kms.errors import ConfigurationError

GENESIS = "0" * 64
_INFO = b"kamus audit chain v1"
_MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of :func:`verify`: the good prefix of the chain and the first problem, if any.

    ``records``, ``last_seq`` and ``last_mac`` describe the records verified before the problem
    (all of them when ``ok``); ``line`` is the 1-based line of the problem.
    """

    ok: bool
    records: int
    last_seq: int
    last_mac: str
    problem: str | None = None
    line: int | None = None


def chain_key(key: bytes) -> bytes:
    """Derive the HMAC key of the chain from the audit key."""
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigurationError(f"the audit key must hold at least {_MIN_KEY_BYTES} bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key)


def canonical(record: dict[str, Any]) -> bytes:
    """The canonical JSON of ``record``: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_mac(chain: bytes, record: dict[str, Any]) -> str:
    body = {name: value for name, value in record.items() if name != "mac"}
    return hmac.new(chain, canonical(body), hashlib.sha256).hexdigest()


# A fixed set, not Unicode categories: what is escaped must not change with the Python (Unicode)
# version, or a line written by one would not match its canonical form under another. Controls
# (C0, DEL, C1), the format characters that hide or reorder text (soft hyphen, Arabic and Syriac
# marks, zero-width and bidirectional controls, invisible operators, BOM, annotation anchors,
# tags), line and paragraph separators, surrogates and private use.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\ue000-\uf8ff"
    "\U000e0000-\U000e007f\U000f0000-\U0010ffff]"
)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return json.dumps(char)[1:-1] if ord(char) > 0xFFFF else f"\\u{ord(char):04x}"


def escape_unsafe(text: str) -> str:
    """``text`` with control, format, separator and private characters as ``\\uXXXX``.

    For JSON text (the escapes keep it valid and equal) and for terminal output alike.
    """
    return _UNSAFE.sub(_escaped, text)


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one audit-file line (without the newline): canonical, unsafe characters
    escaped."""
    return escape_unsafe(canonical(record).decode("utf-8"))


# No writer writes a record near this long: a longer line is read in pieces, none a record, so a
# planted endless line never holds more than this in memory.
MAX_LINE = 4 * 1024 * 1024


@contextlib.contextmanager
def open_chain(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading as a chain file: a regular file, not through a symbolic link,
    without blocking (a FIFO planted among the chains). OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with os.fdopen(fd, "rb") as stream:
        yield stream


def chain_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a chain file, none longer than MAX_LINE (a longer one comes in pieces)."""
    return iter(lambda: stream.readline(MAX_LINE), b"")


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of an audit file in order, unverified; ValueError names a bad line."""
    with open_chain(path) as stream:
        for number, raw in enumerate(chain_lines(stream), start=1):
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise ValueError(f"line {number} is not a JSON record") from exc
            if not isinstance(record, dict):
                raise ValueError(f"line {number} is not a JSON object")  # noqa: TRY004 (bad data)
            yield record


@dataclass(slots=True)
class _Line:
    number: int
    record: dict[str, Any] | None = None
    problem: str = ""
    bad_mac: bool = False


def _same(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode("utf-8"), right.encode("utf-8"))


def _parse(number: int, raw: bytes, chain: bytes) -> _Line:
    """Parse one line and check it on its own: complete, JSON, fields, MAC, canonical bytes."""
    if not raw.endswith(b"\n"):
        return _Line(number, problem="truncated: the last line is incomplete (cut mid-record)")
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return _Line(number, problem="truncated: the line is not valid JSON (cut or corrupted)")
    if not isinstance(record, dict):
        return _Line(number, problem="edited: the line is not a JSON object")
    seq, prev, mac = record.get("seq"), record.get("prev"), record.get("mac")
    if isinstance(seq, bool) or not (
        isinstance(seq, int) and isinstance(prev, str) and isinstance(mac, str)
    ):
        return _Line(number, problem="edited: the record has no valid seq, prev and mac")
    try:
        genuine = _same(record_mac(chain, record), mac)
        # The escaped line, or the raw canonical bytes of lines written before escaping existed
        # (they have no public hash, which came later).
        written = {(json_line(record) + "\n").encode("utf-8")}
        if "hash" not in record:
            written.add(canonical(record) + b"\n")
        rewritten = raw not in written
    except (ValueError, RecursionError):  # NaN, a lone surrogate, deep nesting: never written
        genuine, rewritten = False, True
    if not genuine:
        return _Line(
            number,
            problem="edited: the MAC does not match the record's content (a field was changed, "
            "the record was forged without the key, or the key is not the one that wrote it)",
            bad_mac=True,
        )
    if rewritten:
        return _Line(number, problem="edited: the record was rewritten (same content, new bytes)")
    return _Line(number, record)


def _lines(path: Path, chain: bytes, start: int = 1) -> Iterator[_Line]:
    with open_chain(path) as stream:
        for number, raw in enumerate(chain_lines(stream), start=1):
            if number >= start:
                yield _parse(number, raw, chain)


def _follows(line: _Line, seq: int, mac: str) -> bool:
    record = line.record
    return record is not None and record["seq"] == seq + 1 and _same(record["prev"], mac)


def _seq_later(path: Path, chain: bytes, start: int, seq: int) -> int | None:
    """Line number of a genuine record with ``seq`` at or after line ``start``, if any."""
    for line in _lines(path, chain, start):
        if line.record is not None and line.record["seq"] == seq:
            return line.number
    return None


def _broken_link(path: Path, chain: bytes, number: int, found: int, expected: int) -> str:
    """Name what happened when the genuine record seq ``found`` stands where ``expected`` should."""
    if found > expected:
        later = _seq_later(path, chain, number + 1, expected)
        if later is not None:
            return f"reordered: record seq {found} comes before seq {expected} (line {later})"
        missing = f"seq {expected}" if found == expected + 1 else f"seq {expected}..{found - 1}"
        return f"deleted: {missing} missing before this record (seq {found})"
    if found < expected:
        return f"inserted: record seq {found} repeats an earlier sequence number (duplicate)"
    return f"inserted: record seq {found} does not chain to the record before it (prev differs)"


def verify(path: Path, key: bytes, *, head: tuple[int, str] | None = None) -> Verification:
    """Check the whole chain of ``path`` and report the first problem with its 1-based line.

    ``head`` is an anchor ``(seq, mac)`` kept elsewhere; with it, records deleted from the end
    are detected too. Raises OSError if the file cannot be read.
    """
    chain = chain_key(key)
    seq, mac, records = 0, GENESIS, 0
    suspect: _Line | None = None  # a line whose MAC failed, judged once its successor is known
    for line in _lines(path, chain):
        if suspect is not None:
            if _follows(line, seq, mac):
                problem = (
                    "inserted: this line is not part of the chain (its MAC is wrong and the "
                    "next record follows the one before it)"
                )
                return Verification(False, records, seq, mac, problem, suspect.number)
            break
        if line.bad_mac:
            suspect = line
            continue
        if line.record is None:
            return Verification(False, records, seq, mac, line.problem, line.number)
        if not _follows(line, seq, mac):
            problem = _broken_link(path, chain, line.number, line.record["seq"], seq + 1)
            return Verification(False, records, seq, mac, problem, line.number)
        record = line.record
        if head is not None and record["seq"] == head[0] and not _same(record["mac"], head[1]):
            problem = (
                f"edited: record seq {head[0]} differs from the anchor (the log was rewritten)"
            )
            return Verification(False, records, seq, mac, problem, line.number)
        seq, mac, records = record["seq"], record["mac"], records + 1
    if suspect is not None:
        return Verification(False, records, seq, mac, suspect.problem, suspect.number)
    if head is not None and head[0] > seq:
        missing = f"seq {seq + 1}" if head[0] == seq + 1 else f"seq {seq + 1}..{head[0]}"
        problem = f"deleted: {missing} missing at the end (the anchor is seq {head[0]})"
        return Verification(False, records, seq, mac, problem, records + 1)
    return Verification(True, records, seq, mac)
