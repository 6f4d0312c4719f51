"""What ``kamus-audit report`` tells: the counts behind its text and its HTML charts.

Records are taken as they are (``kamus-audit verify`` says whether to trust them); fields an older
or damaged record lacks count under a placeholder rather than stopping the report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Record = dict[str, Any]
NO_CALLER = "(no authenticated caller)"
OUTCOMES = ("allowed", "denied", "unavailable", "error")
# Bucket widths for the timeline, the smallest giving at most MAX_BUCKETS columns is used.
_WIDTHS = tuple(
    timedelta(seconds=seconds)
    for seconds in (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
)
MAX_BUCKETS = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def items(record: Record) -> list[dict[str, Any]]:
    """The ciphertext descriptions of an event (none for a malformed one)."""
    found = record.get("items")
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def caller(record: Record) -> dict[str, Any]:
    """The verified caller of an event ({} when no token was verified)."""
    found = record.get("caller")
    return found if isinstance(found, dict) else {}


def scope(item: dict[str, Any]) -> str:
    """``namespace/service-account`` a ciphertext is bound to."""
    return f"{item.get('namespace', '?')}/{item.get('service_account', '?')}"


def event_time(record: Record) -> datetime | None:
    """When the event ended, in UTC; None when the record has no readable time."""
    text = record.get("time")
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # not a time, or one UTC cannot hold (year 1, +05:00)
        return None


@dataclass
class Summary:
    """Counts of the events of a period."""

    first: str | None = None
    last: str | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    # Ciphertexts opened (items of allowed events) per scope, per key, and when per namespace.
    decrypted: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    opened: list[tuple[datetime, str]] = field(default_factory=list)
    denials: Counter[str] = field(default_factory=Counter)
    callers: Counter[str] = field(default_factory=Counter)
    denied_callers: Counter[str] = field(default_factory=Counter)
    # For each caller refused at least once: the scopes its refused requests asked for.
    denied_scopes: defaultdict[str, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )

    @property
    def events(self) -> int:
        return sum(self.outcomes.values())

    def add(self, record: Record) -> None:
        """Count one audit event."""
        outcome = str(record.get("outcome", "?"))
        self.outcomes[outcome] += 1
        who = str(caller(record).get("username") or NO_CALLER)
        self.callers[who] += 1
        when = event_time(record)
        if outcome == "allowed":
            for item in items(record):
                self.decrypted[scope(item)] += 1
                self.keys[f"{item.get('provider', '?')}:{item.get('key_id', '?')}"] += 1
                if when is not None:
                    self.opened.append((when, str(item.get("namespace", "?"))))
        elif outcome == "denied":
            self.denials[str(record.get("reason", "?"))] += 1
            self.denied_callers[who] += 1
            self.denied_scopes[who].update(scope(item) for item in items(record))
        text = record.get("time")
        if isinstance(text, str):
            self.first = self.first or text
            self.last = text

    def timeline(self, top: int = 7) -> tuple[list[datetime], dict[str, list[int]]]:
        """Ciphertexts opened per time bucket, per namespace (the ``top`` busiest, then
        ``other``): the bucket starts and one count per bucket for each namespace."""
        if not self.opened:
            return [], {}
        start = min(when for when, _ in self.opened)
        end = max(when for when, _ in self.opened)
        width = next((w for w in _WIDTHS if (end - start) / w < MAX_BUCKETS), None)
        if width is None:
            # Over years (or a damaged time far off): MAX_BUCKETS equal columns, not calendar ones.
            width = (end - start) / (MAX_BUCKETS - 1)
            origin = start
        else:
            try:  # columns start at round times: whole hours, days, ...
                origin = start - (start - _EPOCH) % width
            except OverflowError:
                origin = start
        count = int((end - origin) / width) + 1
        busiest = [name for name, _ in Counter(ns for _, ns in self.opened).most_common(top)]
        series: dict[str, list[int]] = {name: [0] * count for name in busiest}
        for when, namespace in self.opened:
            name = namespace if namespace in series else "other"
            series.setdefault(name, [0] * count)[int((when - origin) / width)] += 1
        return [origin + width * index for index in range(count)], series


def summarise(records: Iterable[Record]) -> Summary:
    """The summary of these audit events."""
    summary = Summary()
    for record in records:
        summary.add(record)
    return summary
