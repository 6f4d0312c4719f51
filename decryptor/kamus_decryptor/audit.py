"""Audit events: exactly one per decrypt attempt, allowed or denied, never a secret.

An event names who asked (from TokenReview), what they asked for (the scope and key id in each
ciphertext header plus a keyed fingerprint of the ciphertext, so the same ciphertext can be
recognised across events without the audit log revealing it), and the outcome with its reason code.
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from kamus_decryptor.auditfile import AuditDirectory, AuditFile, Placed
from kamus_decryptor.tokenreview import Caller
from kamus_kms.auditchain import escape_unsafe
from kamus_kms.auditwitness import CHECKPOINT_EVENT
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import AuditWriteError, KamusError, UnavailableError
from kamus_kms.legacy import PROVIDER_NAME as LEGACY_PROVIDER
from kamus_kms.legacy import LegacyCiphertext
from kamus_kms.scope import Scope
from kamus_service.logs import timestamp, write_event

_MAX_USER_AGENT = 256
_MAX_ITEM_NAME = 253
# Bounds of the cache of ciphertext descriptions (AuditTrail.record_item).
_DESCRIBED_TEXTS = 4096
_DESCRIBED_MAX_CHARS = 4096
# Free space under which a volume whose file refused the last record still counts as full: room
# for a few hundred records. Consulted only after a refusal: a nearly full volume that still takes
# records never makes a pod NotReady.
FULL_BELOW_BYTES = 1 << 20


def bounded(text: str, limit: int) -> str:
    """``text`` cut to what the audit file holds in at most ``limit`` characters once escaped.

    Request-supplied text: a control character is written as a 6-character escape, so a cut by
    characters alone let an anonymous caller make every record several times larger.
    """
    text = text[:limit]
    if len(escape_unsafe(text)) <= limit:
        return text
    kept, size = [], 0
    for char in text:
        size += len(escape_unsafe(char))
        if size > limit:
            break
        kept.append(char)
    return "".join(kept)


@dataclass
class AuditEvent:
    """The record of one attempt, filled in as the request proceeds."""

    action: str
    request_id: str
    source_ip: str | None
    user_agent: str | None
    outcome: str = "error"  # set from how the attempt ended (outcome_of) as it is emitted
    reason: str = "internal_error"
    caller: dict[str, str | None] | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    client_request_id: str | None = None
    time: str = ""  # when the attempt ended: set as the event is emitted
    # The verified caller's scope, for metrics (the record itself holds the caller's fields).
    scope: Scope | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Request-supplied and unbounded otherwise.
        self.user_agent = bounded(self.user_agent or "", _MAX_USER_AGENT)

    def set_caller(self, caller: Caller) -> None:
        """Record who the token proved the caller to be."""
        self.caller = caller.audit_fields()
        self.scope = caller.scope

    def as_fields(self) -> dict[str, Any]:
        """The event as log fields."""
        return {
            "audit": True,
            "time": self.time,
            "action": self.action,
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "caller": self.caller,
            "items": self.items,
            "source_ip": self.source_ip,
            "user_agent": self.user_agent,
        }


def place_of(placed: Placed) -> dict[str, Any]:
    """A record's place in its chain, as stdout carries it: the chain, seq, public hash (which
    covers the record and all before it) and MAC."""
    record = placed.record
    return {"chain": placed.chain, "seq": record["seq"], "hash": record["hash"],
            "mac": record["mac"]}  # fmt: skip


def witness_fields(chain: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The stdout event of a record the audit writer added by itself (a checkpoint, a chain
    start): its place, so the log pipeline witnesses it like every audit event, and its content."""
    kind = "audit_checkpoint" if record.get("event") == CHECKPOINT_EVENT else "audit_chain_start"
    fields = {name: value for name, value in record.items()
              if name not in ("event", "prev")}  # fmt: skip
    return kind, {**fields, "chain": chain}


def print_witnessed(chain: str, record: dict[str, Any]) -> None:
    """Print :func:`witness_fields` on stdout: the log pipeline keeps what the file's owner
    cannot rewrite."""
    write_event("kamus.audit", *witness_fields(chain, record))


def outcome_of(error: BaseException | None) -> tuple[str, str]:
    """The one place an attempt's ending becomes its (outcome, reason) for audit and metrics."""
    if error is None:
        return "allowed", "ok"
    if isinstance(error, UnavailableError):
        return "unavailable", error.code
    if isinstance(error, KamusError):
        return "denied", error.code
    return "error", "internal_error"


class AuditTrail:
    """Emits audit events as JSON lines on stdout and, optionally, to a hash-chained file.

    With `fail_closed`, an allowed attempt whose event cannot be written to the file becomes a
    503: no plaintext leaves without its audit record. `check_ready` tells readiness whether the
    file can take records now.
    """

    def __init__(
        self,
        fingerprint_key: bytes,
        *,
        file: AuditFile | AuditDirectory | None = None,
        fail_closed: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._key = fingerprint_key
        self._file = file
        self.fail_closed = fail_closed
        # Every refused write, whatever the policy: under best-effort the attempt goes on, and this
        # (with the log line) is all that shows the file is missing records.
        self.write_failures = Counter(
            "kamus_audit_write_failures",
            "Audit records the audit file could not take (volume full or read-only)",
            registry=registry if registry is not None else CollectorRegistry(),
        )
        self._log = logging.getLogger("kamus.audit")
        self._refused = False  # the file refused the last record it was given
        # What the audit says about recent short ciphertexts (all of it derived from the text
        # alone): the pods of one deployment send the same ones again and again.
        self._described: dict[str, dict[str, str]] = {}

    def fingerprint(self, text: str) -> str:
        """Keyed fingerprint of a ciphertext text (HMAC-SHA256, 128 bits shown)."""
        digest = hmac.digest(self._key, text.strip().encode("utf-8", "replace"), "sha256")
        return digest[:16].hex()

    def record_item(
        self, event: AuditEvent, text: str, ciphertext: Ciphertext | LegacyCiphertext | None,
        name: str,
    ) -> None:  # fmt: skip
        """Add one ciphertext (parsed when it could be) to the event."""
        described = self._described.get(text)
        if described is None:
            described = self._describe(text, ciphertext)
            if len(text) <= _DESCRIBED_MAX_CHARS:
                if len(self._described) >= _DESCRIBED_TEXTS:
                    self._described.clear()  # simple and bounded; the next requests refill it
                self._described[text] = described
        event.items.append({"name": bounded(name, _MAX_ITEM_NAME), **described})

    def _describe(
        self, text: str, ciphertext: Ciphertext | LegacyCiphertext | None
    ) -> dict[str, str]:
        described = {"fingerprint": self.fingerprint(text)}
        if isinstance(ciphertext, LegacyCiphertext):
            # An original Kamus text names no scope: it is opened for the caller's own.
            described["provider"] = LEGACY_PROVIDER
        elif ciphertext is not None:
            described.update(
                namespace=ciphertext.scope.namespace,
                service_account=ciphertext.scope.service_account,
                provider=ciphertext.provider,
                key_id=ciphertext.key_id,
            )
        return described

    def emit(self, event: AuditEvent, error: BaseException | None) -> None:
        """Write the event of an attempt that ended with ``error`` (None: allowed).

        An allowed event the file refuses raises AuditWriteError under the fail-closed policy
        (after saying so on stdout); any other is written as well as it can be.
        """
        event.outcome, event.reason = outcome_of(error)
        required = error is None and self.fail_closed
        event.time = timestamp()
        fields = event.as_fields()
        if self._file is not None:
            try:
                placed = self._file.append(fields)
            except AuditWriteError as exc:
                self._refused = True
                self.write_failures.inc()
                self._log.error("audit file write failed", extra={"error": str(exc)})
                if required:
                    event.outcome, event.reason = "unavailable", exc.code
                    write_event("kamus.audit", "audit", event.as_fields())
                    raise
            else:
                self._refused = False
                # The record's place on stdout is what the log pipeline witnesses: `kamus-audit
                # verify --witness` finds every record it saw in the files.
                fields |= place_of(placed)
        write_event("kamus.audit", "audit", fields)

    def check_ready(self) -> None:
        """Raise AuditWriteError, with a reason, while the audit file looks unable to take records.

        Nothing is written: the path and its volume are looked at. A path that cannot be written
        (a read-only volume, permissions, a file where the folder should be) fails the check
        whatever happened before; free space below FULL_BELOW_BYTES only after the file refused
        the last record. A refusal the check cannot explain does not keep the pod out: out of the
        Service, it would get no decrypt whose record could succeed.
        """
        if self._file is None:
            return
        path = self._file.path
        reason = _unwritable(path, full_below=FULL_BELOW_BYTES if self._refused else 0)
        if reason is not None:
            raise AuditWriteError(f"audit file {path} cannot take records: {reason}", reason=reason)


def _unwritable(path: Path, *, full_below: int) -> str | None:
    """Why the audit file at ``path`` cannot take a record, judged without writing; else None."""
    try:
        if path.exists():
            # Read-only volumes too: access() answers EROFS, even to root.
            if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
                return "not_writable"
            target = path
        else:
            target = path.parent
            if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
                return "not_writable"
        if full_below:
            volume = os.statvfs(target)
            # Blocks kept for root are root's to write.
            blocks = volume.f_bfree if os.geteuid() == 0 else volume.f_bavail
            # A file system that reports no size (some network and FUSE ones) is not judged.
            if volume.f_blocks and blocks * volume.f_frsize < full_below:
                return "volume_full"
    except OSError:
        return "io_error"
    return None
