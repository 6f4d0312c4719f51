"""The decryptor's audit writer: appends chained records to the audit file.

The chain format, its key and its verification are in :mod:`kamus_kms.auditchain`, shared with
``kamus-audit``; this module only writes, safely across threads and gunicorn workers.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

from kamus_kms.auditchain import GENESIS, chain_key, json_line, record_mac
from kamus_kms.errors import AuditWriteError

_TAIL_CHUNK = 8192


def _canonical_lossy(event: dict[str, Any]) -> bytes:
    text = json.dumps(event, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "replace")


def _fsync_directory(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditFile:
    """Appends chained records to one file; safe across threads and worker processes.

    The file is opened anew for every append: a descriptor inherited across ``fork`` would share
    one ``flock`` between gunicorn workers and exclude nobody.
    """

    def __init__(self, path: Path, key: bytes, *, fsync: bool = True) -> None:
        self.path = path
        self._chain = chain_key(key)
        self._fsync = fsync
        self._lock = threading.Lock()

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write ``event`` as the next record and return the record as written.

        Raises AuditWriteError when the file cannot take the record (nothing usable was written),
        TypeError or ValueError when ``event`` is not JSON data.
        """
        # A JSON round trip gives a plain copy equal to what a reader will parse back, and turns
        # lone surrogates (possible in request-supplied names) into "?" instead of failing.
        fields = json.loads(_canonical_lossy(event))
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise AuditWriteError(
                    f"cannot open audit file {self.path}: {exc.strerror}"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                seq, prev = self._last(fd)
                record = {**fields, "seq": seq + 1, "prev": prev}
                record["mac"] = record_mac(self._chain, record)
                line = (json_line(record) + "\n").encode("utf-8")
                # One write of the whole line: with O_APPEND it lands at the end in one piece.
                if os.write(fd, line) != len(line):
                    raise AuditWriteError(
                        f"short write to audit file {self.path}; it now ends with a partial line"
                    )
                if self._fsync:
                    os.fsync(fd)
                    if seq == 0:  # a new file: its directory entry must survive a crash too
                        _fsync_directory(self.path)
            except OSError as exc:
                raise AuditWriteError(
                    f"cannot write audit file {self.path}: {exc.strerror}"
                ) from exc
            finally:
                os.close(fd)  # also releases the flock
        return record

    def _last(self, fd: int) -> tuple[int, str]:
        """Sequence number and MAC of the last record, read backwards from the end."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS
        if os.pread(fd, 1, size - 1) != b"\n":
            raise AuditWriteError(
                f"audit file {self.path} ends with an incomplete line (a write was cut off by a "
                f"crash or a full disk); run `kamus-audit verify {self.path}`, keep a copy, then "
                "remove the partial last line to resume auditing"
            )
        line = _last_line(fd, size)
        try:
            record = json.loads(line)
            seq, mac = record["seq"], record["mac"]
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise AuditWriteError(
                f"the last line of audit file {self.path} is not an audit record; "
                f"run `kamus-audit verify {self.path}` and repair the file"
            ) from exc
        if not isinstance(seq, int) or not isinstance(mac, str):
            raise AuditWriteError(
                f"the last record of audit file {self.path} has no valid seq and mac; "
                f"run `kamus-audit verify {self.path}` and repair the file"
            )
        return seq, mac


def _last_line(fd: int, size: int) -> bytes:
    """The last line, without its newline, of a file of ``size`` bytes that ends in a newline."""
    start, tail = size - 1, b""
    while start > 0:
        step = min(_TAIL_CHUNK, start)
        start -= step
        tail = os.pread(fd, step, start) + tail
        cut = tail.rfind(b"\n")
        if cut >= 0:
            return tail[cut + 1 :]
    return tail
