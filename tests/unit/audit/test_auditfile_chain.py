from __future__ import annotations

import errno
import hashlib
import hmac
import itertools
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kamus_decryptor.auditfile import AuditFile
from kamus_kms.auditchain import GENESIS, read_records, verify
from kamus_kms.errors import AuditWriteError, ConfigurationError


def test_appending_continues_the_chain_across_a_restart(
    tmp_path: Path, key: bytes, sample_event: Callable[[int], dict[str, Any]]
) -> None:
    path = tmp_path / "audit.jsonl"
    first = [AuditFile(path, key).append(sample_event(n)).record for n in range(1, 4)]
    restarted = AuditFile(path, key)
    second = [restarted.append(sample_event(n)).record for n in range(4, 6)]

    records = list(read_records(path))
    assert records == first + second
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["mac"] for a, b in itertools.pairwise(records))
    assert verify(path, key).ok
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_record_mac_is_hmac_of_the_canonical_record_under_the_hkdf_derived_key(
    tmp_path: Path, key: bytes, sample_event: Callable[[int], dict[str, Any]]
) -> None:
    path = tmp_path / "audit.jsonl"
    record = AuditFile(path, key).append({**sample_event(1), "name": "pässwörd"}).record

    chain = HKDF(hashes.SHA256(), 32, None, b"kamus audit chain v1").derive(key)
    body = {k: v for k, v in record.items() if k != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert record["mac"] == hmac.new(chain, canonical.encode(), hashlib.sha256).hexdigest()
    assert chain != key
    line = path.read_bytes()
    assert line.count(b"\n") == 1
    assert "pässwörd".encode() in line
    assert json.loads(line) == record


def test_event_fields_named_seq_prev_or_mac_are_replaced_by_the_chain(
    tmp_path: Path, key: bytes
) -> None:
    log = AuditFile(tmp_path / "audit.jsonl", key)
    record = log.append({"seq": 99, "prev": "x", "mac": "y"}).record
    assert record["seq"] == 1
    assert record["prev"] == GENESIS
    assert record["mac"] != "y"


def test_lone_surrogates_from_request_data_are_replaced_not_fatal(
    tmp_path: Path, key: bytes
) -> None:
    path = tmp_path / "audit.jsonl"
    record = AuditFile(path, key).append({"items": [{"name": "pw\ud800"}]}).record
    assert record["items"] == [{"name": "pw?"}]
    assert verify(path, key).ok


def test_records_longer_than_the_tail_read_chunk_still_chain(
    tmp_path: Path, key: bytes, sample_event: Callable[[int], dict[str, Any]]
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditFile(path, key, fsync=False)
    log.append(sample_event(1))
    log.append({**sample_event(2), "items": [{"name": "n" * 50_000}]})
    assert log.append(sample_event(3)).record["seq"] == 3
    assert verify(path, key).records == 3


def test_an_untouched_log_of_ten_thousand_events_verifies(
    make_log: Callable[[int], Path], key: bytes
) -> None:
    path = make_log(10_000)
    result = verify(path, key)
    assert result.ok, result.problem
    assert (result.records, result.last_seq) == (10_000, 10_000)
    assert result.last_mac == list(read_records(path))[-1]["mac"]


def test_an_empty_or_new_log_verifies_with_no_records(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    path.touch()
    assert verify(path, key) == verify(path, key, head=(0, GENESIS))
    assert verify(path, key).records == 0
    assert verify(path, key).last_mac == GENESIS


@pytest.mark.parametrize("tail", [b'{"seq": 3, "pr', b"\n", b"not json\n"])
def test_a_torn_or_unreadable_last_line_is_kept_and_the_next_chain_links_to_it(
    make_log: Callable[[int], Path], key: bytes, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_log(2)
    good = list(read_records(path))
    with path.open("ab") as stream:
        stream.write(tail)
    before = path.read_bytes()

    placed = AuditFile(path, key).append({"outcome": "allowed"})

    # The damaged chain is evidence: left byte for byte. The record went to the next chain,
    # which starts by naming the last record of the old one it could verify, and why.
    assert path.read_bytes() == before
    assert placed.chain == "audit.1.jsonl"
    start, record = read_records(path.with_name("audit.1.jsonl"))
    assert start["event"] == "chain_start"
    assert start["previous"] == {"chain": "audit.jsonl", "seq": 2, "hash": good[-1]["hash"],
                                 "mac": good[-1]["mac"]}  # fmt: skip
    assert "after seq 2" in start["reason"]
    assert record == placed.record
    assert "audit chain audit.jsonl cannot be continued" in caplog.text
    assert verify(path.with_name("audit.1.jsonl"), key).ok
    # A restarted writer goes on in the newest chain.
    assert AuditFile(path, key).append({"outcome": "allowed"}).chain == "audit.1.jsonl"


def test_an_unwritable_log_raises_audit_write_error_without_the_key(
    tmp_path: Path, key: bytes
) -> None:
    with pytest.raises(AuditWriteError) as caught:
        AuditFile(tmp_path / "missing-dir" / "audit.jsonl", key).append({"outcome": "allowed"})
    assert isinstance(caught.value.__cause__, OSError)
    assert key.hex() not in str(caught.value)


def _disk_full(fd: int, data: bytes) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def _short_write(fd: int, data: bytes) -> int:
    return real_write(fd, data[:10])


real_write = os.write


@pytest.mark.parametrize(("write", "message"), [(_disk_full, "No space"), (_short_write, "short")])
def test_a_failed_or_short_write_raises_audit_write_error(
    make_log: Callable[[int], Path],
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
    write: Callable[[int, bytes], int],
    message: str,
) -> None:
    path = make_log(1)
    log = AuditFile(path, key)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", write)
        with pytest.raises(AuditWriteError, match=message):
            log.append({"outcome": "allowed"})


def test_a_key_shorter_than_32_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        AuditFile(tmp_path / "audit.jsonl", b"short")
