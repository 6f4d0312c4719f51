"""What the file's owner cannot rewrite: the chain positions a decryptor published elsewhere.

Every record the decryptor appends to a chain is also printed on stdout with its place,
``{"chain": NAME, "seq": N, "hash": HEX, "mac": HEX, ...}`` (audit events, checkpoints and chain
starts alike), so the cluster's log pipeline keeps a second copy of every chain's shape: the
public hash covers the record and every one before it. The latest signed
checkpoint of each chain is also kept in the Kubernetes API (a ConfigMap per decryptor
Deployment, one key per chain, whose value is that checkpoint's stdout line). A :class:`Witness`
gathers both for ``kamus-audit verify`` and ``reconcile``: what they saw must be in the files,
and one (chain, seq) seen with two different MACs means a chain was cut and written again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kamus_kms.auditsign import checkpoint_valid

CHECKPOINT_EVENT = "checkpoint"
CHAIN_START_EVENT = "chain_start"


def placed(line: str) -> dict[str, Any] | None:
    """The JSON object of a log line that names a chain position, if it is one.

    A line may carry a prefix (``kubectl logs --timestamps``, a collector's fields) before the
    object.
    """
    start = line.find("{")
    if start < 0 or '"chain"' not in line:
        return None
    try:
        event = json.loads(line[start:])
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict):
        return None
    chain, seq, mac = event.get("chain"), event.get("seq"), event.get("mac")
    if not (isinstance(chain, str) and isinstance(mac, str)):
        return None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None
    return event


@dataclass
class Witness:
    """Chain positions and signed checkpoints seen outside the audit files."""

    # chain -> seq -> every (mac, hash) seen for that record (the hash is missing in lines of
    # decryptors before it was printed); more than one MAC: the chain was cut and rewritten
    seen: dict[str, dict[int, set[tuple[str, str | None]]]] = field(default_factory=dict)
    # chain -> signed checkpoints seen for it (not yet checked against a key)
    checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # chains whose every record since their start should be in ``seen`` (from stdout logs)
    logged: set[str] = field(default_factory=set)

    def add(self, event: Mapping[str, Any], *, from_log: bool) -> None:
        """Take one placed event (see :func:`placed`)."""
        chain = str(event["chain"])
        stored = event.get("hash")
        self.seen.setdefault(chain, {}).setdefault(int(event["seq"]), set()).add(
            (str(event["mac"]), stored if isinstance(stored, str) else None)
        )
        if from_log:
            self.logged.add(chain)
        checkpoint = event.get("checkpoint")
        if isinstance(checkpoint, dict) and checkpoint.get("chain") == chain:
            self.checkpoints.setdefault(chain, []).append(checkpoint)

    def add_log(self, lines: Iterable[str]) -> None:
        """Take the decryptor's stdout lines (other lines are skipped)."""
        for line in lines:
            event = placed(line)
            if event is not None:
                self.add(event, from_log=True)

    def add_heads(self, heads: Mapping[str, str]) -> list[str]:
        """Take the cluster witness: chain name -> that chain's latest checkpoint line.

        Returns what could not be read (an entry that is not a checkpoint of its chain).
        """
        unreadable = []
        for name, value in heads.items():
            event = placed(value)
            if event is None or event.get("chain") != name or "checkpoint" not in event:
                unreadable.append(name)
                continue
            self.add(event, from_log=False)
        return unreadable

    @property
    def chains(self) -> set[str]:
        return set(self.seen)

    def signed(self, chain: str, public: Ed25519PublicKey) -> list[dict[str, Any]]:
        """The checkpoints seen for ``chain`` that ``public`` signed."""
        return [cp for cp in self.checkpoints.get(chain, []) if checkpoint_valid(cp, public)]

    def replays(self, chain: str) -> list[int]:
        """Sequence numbers of ``chain`` seen with more than one MAC."""
        return sorted(
            seq for seq, entries in self.seen.get(chain, {}).items()
            if len({mac for mac, _ in entries}) > 1
        )  # fmt: skip

    def vouches(self, chain: str, seq: int, mac: object, stored: object) -> bool | None:
        """Whether the witness saw record ``seq`` of ``chain`` with this MAC and public hash
        (None: it did not see that record)."""
        entries = self.seen.get(chain, {}).get(seq)
        if entries is None:
            return None
        return any(mac == seen and hash_ in (None, stored) for seen, hash_ in entries)
