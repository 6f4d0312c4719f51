"""The decryptor's audit writer: appends chained records to the audit file.

The chain format, its key and its verification are in :mod:`kamus_kms.auditchain` (the HMAC
chain), :mod:`kamus_kms.auditsign` (the public hash chain and signed checkpoints) and
:mod:`kamus_kms.auditverify`, shared with ``kamus-audit``; this module only writes, safely across
threads and gunicorn workers.

**The writer trusts only itself.** It keeps the chain's head (sequence, MAC, public hash and where
the file ends) in memory and chains and signs from that, never from what it reads back. Before a
checkpoint it checks that the bytes since the last one are still those it wrote. A file that is
not where it left it (cut, edited, appended to by another writer, or ending in a torn line), or an
existing file that does not verify when a process first takes it up, is never continued or
countersigned: the writer leaves it as it is (evidence) and starts the next chain,
``<name>.<k>.jsonl``, whose first record (``chain_start``) names the chain it replaces, the head
this process last trusted and why; the next checkpoint signs that link.

With a signing key every new chain is signed before its first record (a checkpoint of 0 records),
then every N records or T seconds and when the process exits; each checkpoint and chain start goes
to a witness too (the decryptor prints them on stdout), as every audit event does with its chain,
seq and MAC. ``AuditDirectory`` gives every worker process start a chain file of its own
(``<pod>-<pid>-<start>.jsonl``), so replicas on several nodes share no file; a file shared by
several processes (KAMUS_AUDIT_FILE) takes the other processes' records after checking their MACs.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kamus_kms.auditchain import GENESIS, canonical, chain_key, json_line, record_mac
from kamus_kms.auditsign import checkpoint_valid, record_hash, sign_checkpoint
from kamus_kms.auditwitness import CHAIN_START_EVENT, CHECKPOINT_EVENT
from kamus_kms.errors import AuditWriteError

# Receives every record the writer adds by itself (checkpoints, chain starts) with its chain.
WitnessCallback = Callable[[str, dict[str, Any]], None]

log = logging.getLogger("kamus.audit")

_NAMES = 64  # names tried for a new chain, or broken chains passed, before the writer gives up
_OPEN = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# What opening a name that holds no chain file says (a symbolic link, a folder, a device...), as
# opposed to a file system that refuses writes.
_NOT_A_FILE = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV, errno.ETXTBSY})


@dataclass(frozen=True, slots=True)
class Placed:
    """A record as written, and the chain it was written to."""

    chain: str
    record: dict[str, Any]


@dataclass(slots=True)
class _Head:
    """Where this process knows its chain to stand."""

    seq: int = 0
    mac: str = GENESIS
    hash: str = GENESIS
    end: int = 0  # bytes of the file written or verified by this process
    signed_seq: int = 0  # seq of the last checkpoint record
    signed_end: int = 0  # where that record ends
    # SHA-256 of the bytes [signed_end, end): what the next checkpoint must find still there
    unsigned: Any = field(default_factory=hashlib.sha256)

    def link(self, chain: str) -> dict[str, Any]:
        return {"chain": chain, "seq": self.seq, "hash": self.hash, "mac": self.mac}


class _ChainBroken(Exception):
    """The chain file cannot be continued; ``head`` is the last state this process trusts."""

    def __init__(self, reason: str, head: _Head) -> None:
        super().__init__(reason)
        self.reason, self.head = reason, head


def _canonical_lossy(event: dict[str, Any]) -> bytes:
    text = json.dumps(event, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "replace")


def _fsync_directory(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc() -> datetime:
    return datetime.now(UTC)


def _now() -> str:
    return _utc().isoformat(timespec="milliseconds")


def successor(path: Path) -> Path:
    """The chain file that follows ``path``: ``a.jsonl`` -> ``a.1.jsonl`` -> ``a.2.jsonl``."""
    stem, _, number = path.stem.rpartition(".")
    if stem and number.isdigit():
        return path.with_name(f"{stem}.{int(number) + 1}{path.suffix}")
    return path.with_name(f"{path.stem}.1{path.suffix}")


class AuditFile:
    """Appends chained records to one chain; safe across threads and worker processes.

    The file is opened anew for every append: a descriptor inherited across ``fork`` would share
    one ``flock`` between gunicorn workers and exclude nobody. ``shared``: other processes append
    to the same file (their records are taken after their MACs are checked); otherwise any byte
    this process did not write breaks the chain.
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
        witness: WitnessCallback | None = None,
        origin: str = "kamus-decryptor",
        shared: bool = True,
    ) -> None:
        self._chain = chain_key(key)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._signer = signer
        self._public = signer.public_key() if signer is not None else None
        self._checkpoint_records = checkpoint_records
        self._checkpoint_seconds = checkpoint_seconds
        self._witness = witness
        self._origin = origin
        self._shared = shared
        self.path = path
        while shared and successor(self.path).exists():  # replaced before a restart: the last
            self.path = successor(self.path)
        self._head: _Head | None = None
        self._link: dict[str, Any] | None = None  # what the next chain start names
        self._broken: str | None = None  # why the current chain must not be continued
        self._last_checkpoint = time.monotonic()
        self._timer_pid = -1

    def append(self, event: dict[str, Any]) -> Placed:
        """Write ``event`` as the next record and return it with its chain.

        Raises AuditWriteError when the file cannot take the record (nothing usable was written),
        TypeError or ValueError when ``event`` is not JSON data.
        """
        # A JSON round trip gives a plain copy equal to what a reader will parse back, and turns
        # lone surrogates (possible in request-supplied names) into "?" instead of failing.
        fields = json.loads(_canonical_lossy(event))
        with self._lock, self._locked() as (fd, head):
            placed = self._write(fd, head, fields)
            if self._signer is not None:
                due = time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds
                if head.seq - head.signed_seq >= self._checkpoint_records or due:
                    self._checkpoint(fd, head)
        if self._signer is not None:
            self._start_timer()
        return placed

    def checkpoint(self, *, replace: bool = True) -> Placed | None:
        """Sign the chain's head now, if records were written since its last checkpoint.

        ``replace=False`` (a process stopping): a chain that cannot be continued is left for
        the next start to replace, and AuditWriteError raised.
        """
        if self._signer is None:
            return None
        with self._lock:
            if self._head is None and not replace:
                return None  # a process stopping starts no chain
            if self._head is not None and self._head.seq == self._head.signed_seq:
                return None
            with self._locked(replace=replace) as (fd, head):
                return self._checkpoint(fd, head) if head.seq > head.signed_seq else None

    @contextlib.contextmanager
    def _locked(self, *, replace: bool = True) -> Iterator[tuple[int, _Head]]:
        """The chain file, locked, with this process's head brought to its end.

        Called with the thread lock held. A chain that cannot be continued is left as it is and
        the next one started (unless not ``replace``).
        """
        for _ in range(_NAMES):  # each turn moves to a new file
            fd = -1
            try:
                fd = self._open()
                fcntl.flock(fd, fcntl.LOCK_EX)
                head = self._catch_up(fd)
            except _ChainBroken as broken:
                if fd >= 0:
                    os.close(fd)
                if not replace:
                    raise AuditWriteError(f"audit chain {self.path.name}: not continued") from None
                self._replace(broken)
                continue
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
            try:
                yield fd, head
            finally:
                os.close(fd)  # also releases the flock
            return
        raise AuditWriteError(f"cannot start a new audit chain beside {self.path}")

    def _replace(self, broken: _ChainBroken) -> None:
        old = self.path
        self.path = successor(old)
        log.error(
            "audit chain %s cannot be continued (%s); its records stay as they are and this "
            "process continues in %s", old.name, broken.reason, self.path.name,
        )  # fmt: skip
        if self._head is not None or self._link is None:
            self._link = {"previous": broken.head.link(old.name), "reason": broken.reason}
        # else: this process never took `old` up (a successor someone else had filled): the link
        # still names the chain it left, with the head it held there.
        self._head, self._broken = None, None

    def _catch_up(self, fd: int) -> _Head:
        size = os.fstat(fd).st_size
        head = self._head
        if head is None:
            head = self._scan(fd, _Head(), size, first=True) if size else _Head()
            if head.seq and self._signer is not None and not head.signed_seq:
                raise _ChainBroken("a chain that does not begin signed", head)
        elif self._broken is not None:
            raise _ChainBroken(self._broken, head)
        elif self._shared and successor(self.path).exists():
            raise _ChainBroken("another process replaced it", head)
        elif size < head.end:
            raise _ChainBroken(
                f"the file is {head.end - size} bytes shorter than this process left it", head
            )
        elif size > head.end and not self._shared:
            raise _ChainBroken(
                f"{size - head.end} bytes follow the last record this process wrote (another "
                "writer, or a write of its own cut short)", head,
            )  # fmt: skip
        elif size > head.end:
            head = self._scan(fd, head, size, first=False)
        self._head = head
        if head.seq == 0 or (self._signer is not None and not head.signed_seq):
            self._start(fd, head)  # again after a failed write, until the chain begins signed
        return head

    def _start(self, fd: int, head: _Head) -> None:
        """Begin a new chain: the link to the chain it replaces, then a signature."""
        if head.seq == 0 and self._link is not None:
            start = {"event": CHAIN_START_EVENT, "time": _now(), "origin": self._origin,
                     **self._link}  # fmt: skip
            self._report(self._write(fd, head, start))
            self._link = None
        if self._signer is not None:
            self._checkpoint(fd, head)

    def _scan(self, fd: int, known: _Head, size: int, *, first: bool) -> _Head:
        """Check the records between ``known.end`` and ``size`` and return the head after them."""
        head = copy.copy(known)
        head.unsigned = known.unsigned.copy()
        with open(os.dup(fd), "rb") as stream:
            stream.seek(head.end)
            while head.end < size:
                raw = stream.readline(size - head.end)
                problem = self._problem(raw, head) or self._unsigned_problem(raw, head)
                if problem is not None:
                    what = "it does not verify" if first else "a record another process added"
                    raise _ChainBroken(f"{what}: after seq {head.seq}, {problem}", head)
                self._advance(head, raw, json.loads(raw))
        return head

    def _unsigned_problem(self, raw: bytes, head: _Head) -> str | None:
        """With a signing key, what no writer of ours leaves: a chain that does not begin signed
        (after its chain start, if any), or more unsigned records than the interval allows."""
        if self._signer is None:
            return None
        event = json.loads(raw).get("event")
        if event == CHECKPOINT_EVENT or (head.seq == 0 and event == CHAIN_START_EVENT):
            return None
        if head.signed_seq == 0:
            return "a chain that does not begin signed"
        if head.seq - head.signed_seq >= self._checkpoint_records:
            return "more unsigned records than a writer leaves"
        return None

    def _problem(self, raw: bytes, head: _Head) -> str | None:
        """What is wrong with ``raw`` as the record after ``head``, if anything."""
        if not raw.endswith(b"\n"):
            return "a torn last line"
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            return "a line that is not JSON"
        if not isinstance(record, dict):
            return "a line that is not a record"
        seq, prev = record.get("seq"), record.get("prev")
        if seq != head.seq + 1 or isinstance(seq, bool) or not isinstance(prev, str):
            return "a record out of sequence"
        try:
            return self._record_problem(raw, record, head)
        except (ValueError, RecursionError):  # NaN, a lone surrogate, deep nesting
            return "a line no writer wrote"

    def _record_problem(self, raw: bytes, record: dict[str, Any], head: _Head) -> str | None:
        mac, prev = record.get("mac"), record["prev"]
        if not (isinstance(mac, str) and hmac.compare_digest(mac, record_mac(self._chain, record))):
            return "a record whose MAC is wrong"
        if not hmac.compare_digest(prev, head.mac):
            return "a record that does not chain"
        stored = record.get("hash")
        if stored is None and self._signer is None:
            pass  # written before the public chain existed (docs/AUDIT.md): HMAC only
        elif stored != record_hash(head.hash, record):
            return "a record whose public hash is wrong"
        # Records of the public chain were always written escaped (the raw canonical form is of
        # lines older than both).
        written = {(json_line(record) + "\n").encode()}
        if stored is None:
            written.add(canonical(record) + b"\n")
        if raw not in written:
            return "a rewritten line"
        if record.get("event") == CHECKPOINT_EVENT and self._public is not None:
            checkpoint = record.get("checkpoint")
            if not (
                isinstance(checkpoint, dict)
                and checkpoint_valid(checkpoint, self._public)
                and checkpoint["chain"] == self.path.name
                # A chain of another log, or of a writer before origins, is not continued: its
                # checkpoints and ours would not verify as one log.
                and checkpoint.get("origin") == self._origin
                and checkpoint["seq"] == head.seq
                and checkpoint["hash"] == head.hash
            ):
                return "a checkpoint that does not sign its place"
        return None

    @staticmethod
    def _advance(head: _Head, raw: bytes, record: dict[str, Any]) -> None:
        head.seq, head.mac, head.end = record["seq"], record["mac"], head.end + len(raw)
        stored = record.get("hash")
        head.hash = stored if isinstance(stored, str) else GENESIS
        if record.get("event") == CHECKPOINT_EVENT:
            head.signed_seq, head.signed_end, head.unsigned = head.seq, head.end, hashlib.sha256()
        else:
            head.unsigned.update(raw)

    def _write(self, fd: int, head: _Head, fields: dict[str, Any]) -> Placed:
        record = {**fields, "seq": head.seq + 1, "prev": head.mac}
        record["hash"] = record_hash(head.hash, record)
        record["mac"] = record_mac(self._chain, record)
        line = (json_line(record) + "\n").encode("utf-8")
        try:
            # One write of the whole line: with O_APPEND it lands at the end in one piece.
            if os.write(fd, line) != len(line):
                raise AuditWriteError(
                    f"short write to audit file {self.path}; it now ends with a partial line"
                )
            if self._fsync:
                os.fsync(fd)
                if head.seq == 0:  # a new file: its directory entry must survive a crash too
                    _fsync_directory(self.path)
        except OSError as exc:
            raise AuditWriteError(f"cannot write audit file {self.path}: {exc.strerror}") from exc
        self._advance(head, line, record)
        return Placed(self.path.name, record)

    def _checkpoint(self, fd: int, head: _Head) -> Placed | None:
        """Sign ``head`` (called with both locks held) after checking the bytes it covers."""
        assert self._signer is not None
        length = head.end - head.signed_end
        if hashlib.sha256(os.pread(fd, length, head.signed_end)).digest() != head.unsigned.digest():
            # Not signed: the next write starts a new chain from the head held in memory.
            self._broken = f"records after seq {head.signed_seq} were changed in the file"
            log.error("audit chain %s: %s; not signing it", self.path.name, self._broken)
            return None
        signed = sign_checkpoint(self._signer, chain=self.path.name, origin=self._origin,
                                 seq=head.seq, hash_=head.hash, time=_now())  # fmt: skip
        placed = self._write(fd, head, {"event": CHECKPOINT_EVENT, "checkpoint": signed})
        self._last_checkpoint = time.monotonic()
        self._report(placed)
        return placed

    def _report(self, placed: Placed) -> None:
        if self._witness is not None:
            self._witness(placed.chain, placed.record)

    def _open(self) -> int:
        """The chain file: a regular file, never reached through a symbolic link. A per-process
        chain is made by its process alone (:meth:`_create`), and once made, a file gone or
        replaced by anything else is a broken chain, not one to make again."""
        if not self._shared and self._head is None:
            return self._create()
        head = self._head or _Head()
        create = os.O_CREAT if self._shared else 0
        try:
            fd = os.open(self.path, _OPEN | create, 0o600)
        except FileNotFoundError as exc:
            if self._shared:  # with O_CREAT: the folder is missing, not the chain
                raise AuditWriteError(
                    f"cannot open audit file {self.path}: {exc.strerror}"
                ) from exc
            raise _ChainBroken("the file is gone", head) from exc
        except OSError as exc:
            if exc.errno in _NOT_A_FILE:
                raise _ChainBroken(f"its name holds no chain file ({exc.strerror})", head) from exc
            raise AuditWriteError(f"cannot open audit file {self.path}: {exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _ChainBroken("its name holds no chain file", head)
        return fd

    def _create(self) -> int:
        """A new per-process chain, under a name nobody took: after a taken one (planted, as the
        next names of a chain are known in advance), under a name nobody can know."""
        stem = self.path.stem
        for attempt in range(_NAMES):
            try:
                return os.open(self.path, _OPEN | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                if attempt == 0:
                    log.error("audit chain %s: the name is taken; using another", self.path.name)
                self.path = self.path.with_name(f"{stem}.{secrets.token_hex(4)}{self.path.suffix}")
            except OSError as exc:
                raise AuditWriteError(
                    f"cannot create audit file {self.path}: {exc.strerror}"
                ) from exc
        raise AuditWriteError(f"no free name for an audit chain beside {self.path}")

    def _start_timer(self) -> None:
        # Per process: a thread does not survive gunicorn's fork, and each worker has its chain.
        if self._timer_pid == os.getpid():
            return
        self._timer_pid = os.getpid()

        # Weak: neither the thread nor the exit hook keeps a writer alive that nothing uses.
        writer = weakref.ref(self)

        def sign(*, replace: bool = True) -> bool:
            current = writer()
            if current is None:
                return False
            # The next append reports the file's trouble, with its request.
            with contextlib.suppress(AuditWriteError):
                current.checkpoint(replace=replace)
            return True

        def tick() -> None:
            while True:
                time.sleep(self._checkpoint_seconds)
                if not sign():
                    return

        threading.Thread(target=tick, name="audit-checkpoints", daemon=True).start()
        atexit.register(sign, replace=False)  # a worker that stops leaves its records signed


class AuditDirectory:
    """A chain file per worker process in ``directory``: ``<pod>-<pid>-<start>.jsonl``.

    Replicas on several nodes then share no file (a lock across nodes on a shared volume is not
    reliable), and ``kamus-audit verify`` checks the folder, one chain per file.
    """

    def __init__(
        self, directory: Path, key: bytes, *, clock: Callable[[], datetime] = _utc, **options: Any
    ) -> None:
        self.directory = directory
        self._clock = clock
        self._key = key
        self._options = options
        self._pod = "".join(ch if ch.isalnum() or ch in "-" else "-"
                            for ch in os.environ.get("HOSTNAME", "decryptor"))[:63]  # fmt: skip
        self._file: AuditFile | None = None
        self._pid = -1
        # Two writers of one chain in one process would each take the other's records for an
        # intruder's: the first request and the readiness check must get the same one.
        self._lock = threading.Lock()

    @property
    def current(self) -> AuditFile:
        """This process's chain file."""
        with self._lock:
            if self._file is None or self._pid != os.getpid():
                self._pid = os.getpid()
                # A name of its own for each process start: a restarted container keeps its
                # pod name and likely its pids, and must not pass for the chain it replaces.
                started = self._clock().strftime("%Y%m%dT%H%M%S")
                path = self.directory / f"{self._pod}-{self._pid}-{started}.jsonl"
                self._file = AuditFile(path, self._key, shared=False, **self._options)
            return self._file

    @property
    def path(self) -> Path:
        return self.current.path

    def append(self, event: dict[str, Any]) -> Placed:
        """Append to this process's chain."""
        return self.current.append(event)

    def checkpoint(self) -> Placed | None:
        """Sign this process's chain now (see AuditFile.checkpoint)."""
        return self.current.checkpoint()
