"""The decryptor's audit writer: appends chained records to the audit file.

The chain format, its key and its verification are in :mod:`kamus_kms.auditchain` (the HMAC
chain) and :mod:`kamus_kms.auditsign` (the public hash chain and signed checkpoints), shared with
``kamus-audit``; this module only writes, safely across threads and gunicorn workers. With a
signing key it appends a signed checkpoint every N records or T seconds and hands each one to a
witness (the decryptor prints it on stdout). ``AuditDirectory`` gives every worker process a
chain file of its own (``<pod>-<pid>.jsonl``), so replicas on several nodes share no file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kamus_kms.auditchain import GENESIS, chain_key, json_line, record_mac
from kamus_kms.auditsign import CHECKPOINT_EVENT, record_hash, sign_checkpoint
from kamus_kms.errors import AuditWriteError

Witness = Callable[[dict[str, Any]], None]

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

    def __init__(
        self,
        path: Path,
        key: bytes,
        *,
        fsync: bool = True,
        signer: Ed25519PrivateKey | None = None,
        checkpoint_records: int = 100,
        checkpoint_seconds: float = 60.0,
        witness: Witness | None = None,
    ) -> None:
        self.path = path
        self._chain = chain_key(key)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._signer = signer
        self._checkpoint_records = checkpoint_records
        self._checkpoint_seconds = checkpoint_seconds
        self._witness = witness
        self._uncovered = 0  # records this process wrote since its last checkpoint
        self._last_checkpoint = time.monotonic()
        self._timer_pid = -1

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write ``event`` as the next record and return the record as written.

        Raises AuditWriteError when the file cannot take the record (nothing usable was written),
        TypeError or ValueError when ``event`` is not JSON data.
        """
        # A JSON round trip gives a plain copy equal to what a reader will parse back, and turns
        # lone surrogates (possible in request-supplied names) into "?" instead of failing.
        fields = json.loads(_canonical_lossy(event))
        with self._lock:
            record = self._write(fields)
            self._uncovered += 1
            if self._signer is not None:
                self._start_timer()
                due = time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds
                if self._uncovered >= self._checkpoint_records or due:
                    self._checkpoint()
        return record

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the chain's head now, if this process wrote records since its last checkpoint."""
        with self._lock:
            return self._checkpoint() if self._signer is not None and self._uncovered else None

    def _checkpoint(self) -> dict[str, Any]:
        # Called with the lock held. The statement covers the record just before it.
        assert self._signer is not None
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, _, head = self._last(fd)
        finally:
            os.close(fd)
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        signed = sign_checkpoint(self._signer, chain=self.path.name, seq=seq, hash_=head,
                                 time=stamp)  # fmt: skip
        self._write({"event": CHECKPOINT_EVENT, "checkpoint": signed})
        self._uncovered, self._last_checkpoint = 0, time.monotonic()
        if self._witness is not None:
            self._witness(signed)
        return signed

    def _start_timer(self) -> None:
        # Per process: a thread does not survive gunicorn's fork, and each worker has its chain.
        if self._timer_pid == os.getpid():
            return
        self._timer_pid = os.getpid()

        def tick() -> None:
            while True:
                time.sleep(self._checkpoint_seconds)
                # The next append reports the file's trouble, with its request.
                with contextlib.suppress(AuditWriteError):
                    self.checkpoint()

        threading.Thread(target=tick, name="audit-checkpoints", daemon=True).start()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditWriteError(f"cannot open audit file {self.path}: {exc.strerror}") from exc

    def _write(self, fields: dict[str, Any]) -> dict[str, Any]:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev, head = self._last(fd)
            record = {**fields, "seq": seq + 1, "prev": prev}
            record["hash"] = record_hash(head, record)
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
            raise AuditWriteError(f"cannot write audit file {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)  # also releases the flock
        return record

    def _last(self, fd: int) -> tuple[int, str, str]:
        """Sequence number, MAC and public hash of the last record, read from the end."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS, GENESIS
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
        # A record written before the public hash chain existed starts it afresh (docs/AUDIT.md).
        head = record.get("hash")
        return seq, mac, head if isinstance(head, str) and len(head) == 64 else GENESIS


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


class AuditDirectory:
    """A chain file per worker process in ``directory``: ``<pod>-<pid>.jsonl``.

    Replicas on several nodes then share no file (a lock across nodes on a shared volume is not
    reliable), and ``kamus-audit verify`` checks the folder, one chain per file.
    """

    def __init__(self, directory: Path, key: bytes, **options: Any) -> None:
        self.directory = directory
        self._key = key
        self._options = options
        self._pod = "".join(ch if ch.isalnum() or ch in "-." else "-"
                            for ch in os.environ.get("HOSTNAME", "decryptor"))[:63]  # fmt: skip
        self._file: AuditFile | None = None
        self._pid = -1

    @property
    def current(self) -> AuditFile:
        """This process's chain file."""
        if self._file is None or self._pid != os.getpid():
            self._pid = os.getpid()
            path = self.directory / f"{self._pod}-{self._pid}.jsonl"
            self._file = AuditFile(path, self._key, **self._options)
        return self._file

    @property
    def path(self) -> Path:
        return self.current.path

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append to this process's chain."""
        return self.current.append(event)
