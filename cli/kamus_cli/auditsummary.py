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
_DAY = timedelta(days=1)


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


def _column_width(span: timedelta) -> timedelta | None:
    """The narrowest timeline column that shows ``span`` in at most MAX_BUCKETS columns."""
    return next((width for width in _WIDTHS if span / width < MAX_BUCKETS), None)


@dataclass
class OpenedOverTime:
    """Ciphertexts opened per namespace over time, counted per time step rather than kept one by
    one: memory grows with the namespaces and the span of time, never with the records.

    The step is the column width the span seen so far needs, a day at most. Every column width
    is a whole number of steps and every column starts on a step (both count from the Unix
    epoch), so a step never straddles two columns of the final timeline and the counts are
    exact; as the span grows, steps are merged into wider ones. A namespace thus holds at most
    MAX_BUCKETS + 1 steps while columns of a day or less do (spans below 60 days), then one per
    day with records. Beyond 60 columns of 30 days the columns are equal parts of the span, the
    first starting at the first record's day.
    """

    start: datetime | None = None
    end: datetime | None = None
    step: timedelta = _WIDTHS[0]
    # (steps since the epoch, namespace) -> ciphertexts opened.
    counts: Counter[tuple[int, str]] = field(default_factory=Counter)
    namespaces: Counter[str] = field(default_factory=Counter)

    def add(self, when: datetime, namespaces: Iterable[str]) -> None:
        """Count ciphertexts opened at ``when``, one per namespace named (repeats count again)."""
        if self.start is None or self.end is None:
            self.start = self.end = when
        elif when > self.end:
            self.end = when
        elif when < self.start:
            self.start = when
        if self.step < _DAY and self.end - self.start >= self.step * MAX_BUCKETS:
            self._widen(min(_column_width(self.end - self.start) or _DAY, _DAY))
        index = (when - _EPOCH) // self.step
        for namespace in namespaces:
            self.counts[index, namespace] += 1
            self.namespaces[namespace] += 1

    def _widen(self, step: timedelta) -> None:
        steps = step // self.step
        merged: Counter[tuple[int, str]] = Counter()
        for (index, namespace), count in self.counts.items():
            merged[index // steps, namespace] += count
        self.counts, self.step = merged, step

    def timeline(self, top: int) -> tuple[list[datetime], dict[str, list[int]]]:
        """The bucket starts, and one count per bucket for each of the ``top`` busiest
        namespaces, then ``other``."""
        if self.start is None or self.end is None:
            return [], {}
        first = _EPOCH + self.step * min(index for index, _ in self.counts)
        width = _column_width(self.end - self.start)
        if width is None:
            # Over years (or a damaged time far off): MAX_BUCKETS equal columns, not calendar ones.
            width = (self.end - self.start) / (MAX_BUCKETS - 1)
            origin = first
        else:
            try:  # columns start at round times: whole hours, days, ...
                origin = self.start - (self.start - _EPOCH) % width
            except OverflowError:
                origin = first
        columns = {
            (index, namespace): (_EPOCH + self.step * index - origin) // width
            for index, namespace in self.counts
        }
        count = max(columns.values()) + 1
        busiest = [name for name, _ in self.namespaces.most_common(top)]
        series: dict[str, list[int]] = {name: [0] * count for name in busiest}
        for (index, namespace), opened in self.counts.items():
            name = namespace if namespace in series else "other"
            series.setdefault(name, [0] * count)[columns[index, namespace]] += opened
        return [origin + width * index for index in range(count)], series


@dataclass
class Summary:
    """Counts of the events of a period."""

    first: str | None = None
    last: str | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    # Ciphertexts opened (items of allowed events) per scope, per key, and when per namespace.
    decrypted: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    opened: OpenedOverTime = field(default_factory=OpenedOverTime)
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
            opened = items(record)
            for item in opened:
                self.decrypted[scope(item)] += 1
                self.keys[f"{item.get('provider', '?')}:{item.get('key_id', '?')}"] += 1
            if when is not None and opened:
                self.opened.add(when, [str(item.get("namespace", "?")) for item in opened])
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
        return self.opened.timeline(top)


def summarise(records: Iterable[Record]) -> Summary:
    """The summary of these audit events."""
    summary = Summary()
    for record in records:
        summary.add(record)
    return summary
