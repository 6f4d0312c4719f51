"""`kamus-audit query` and `report` over folders of chains hold a bounded part of the records:
chains are merged as they stream, and the report's summary keeps counts, not records.
Timing and the process's peak memory: bench/bench_audit_memory.py."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kamus_cli import audit
from kamus_cli.audit import main
from kamus_cli.auditsummary import MAX_BUCKETS, Summary, summarise
from kamus_client.exitcodes import ExitCode
from kamus_kms.auditchain import read_records

SampleEvent = Callable[[int], dict[str, Any]]
START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WIDTHS = [timedelta(seconds=s) for s in (60, 300, 900, 3600, 21600, 86400, 604800, 2592000)]


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), "utf-8")
    return path


def _at(request_id: str, time: str | None, namespace: str = "team-a") -> dict[str, Any]:
    record: dict[str, Any] = {
        "audit": True,
        "action": "decrypt",
        "request_id": request_id,
        "outcome": "allowed",
        "reason": "ok",
        "caller": {"username": "system:serviceaccount:team-a:app", "pod": "app-1"},
        "items": [{"name": "s", "namespace": namespace, "service_account": "app",
                   "provider": "local", "key_id": "k1"}],
    }  # fmt: skip
    if time is not None:
        record["time"] = time
    return record


def test_events_of_a_folder_are_merged_as_they_stream(
    tmp_path: Path, sample_event: SampleEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, numbers in (("pod-1", range(1, 2000, 2)), ("pod-2", range(2, 2001, 2))):
        _write(tmp_path / f"{name}.jsonl", [sample_event(number) for number in numbers])
    pulled: Counter[str] = Counter()

    def spy(path: Path) -> Iterator[dict[str, Any]]:
        for record in read_records(path):
            pulled[path.name] += 1
            yield record

    monkeypatch.setattr(audit, "read_records", spy)
    events = iter(audit._events([tmp_path]))

    assert next(events)["request_id"] == "req-1"
    # The merge holds the next record of each chain, nothing more.
    assert pulled == {"pod-1.jsonl": 1, "pod-2.jsonl": 1}
    assert next(events)["request_id"] == "req-2"
    assert [event["request_id"] for event in events] == [f"req-{n}" for n in range(3, 2001)]
    assert pulled == {"pod-1.jsonl": 1000, "pod-2.jsonl": 1000}


def test_records_without_a_time_or_out_of_order_keep_their_place_in_their_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "pod-1.jsonl", [
        _at("a-untimed-first", None),
        _at("a-10:01", "2026-11-27T10:01:00.000+00:00"),
        _at("a-untimed", "not a time"),
        _at("a-10:05", "2026-11-27T10:05:00.000+00:00"),
        _at("a-10:03-after-10:05", "2026-11-27T10:03:00.000+00:00"),  # the clock stepped back
        _at("a-10:07", "2026-11-27T10:07:00.000+00:00"),
    ])  # fmt: skip
    _write(tmp_path / "pod-2.jsonl", [
        _at("b-10:02", "2026-11-27T10:02:00.000+00:00"),
        _at("b-10:04", "2026-11-27T09:04:00.000-01:00"),  # the same instant in another zone
        _at("b-10:06", "2026-11-27T10:06:00.000+00:00"),
    ])  # fmt: skip

    assert main(["query", str(tmp_path), "--format", "jsonl"], {}) == ExitCode.OK

    ids = [json.loads(line)["request_id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == [
        "a-untimed-first", "a-10:01", "a-untimed", "b-10:02", "b-10:04", "a-10:05",
        "a-10:03-after-10:05", "b-10:06", "a-10:07",
    ]  # fmt: skip


def test_the_report_summary_does_not_grow_with_the_number_of_records() -> None:
    def held(count: int) -> int:
        # The same hour of traffic, ten times as dense: counts change, the summary's size not.
        step = timedelta(hours=1) / count
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            summary = summarise(
                _at(f"r{n}", (START + step * n).isoformat(), f"ns-{n % 5}") for n in range(count)
            )
            size = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert summary.events == count
        return size

    small, large = held(2_000), held(20_000)
    assert large < small + 64 * 1024, (small, large)


def _reference_timeline(
    opened: list[tuple[datetime, str]], top: int
) -> tuple[list[datetime], dict[str, list[int]]]:
    """The timeline as worked out from every (time, namespace) kept in a list."""
    start = min(when for when, _ in opened)
    end = max(when for when, _ in opened)
    width = next(w for w in WIDTHS if (end - start) / w < MAX_BUCKETS)
    origin = start - (start - EPOCH) % width
    count = int((end - origin) / width) + 1
    busiest = [name for name, _ in Counter(ns for _, ns in opened).most_common(top)]
    series: dict[str, list[int]] = {name: [0] * count for name in busiest}
    for when, namespace in opened:
        name = namespace if namespace in series else "other"
        series.setdefault(name, [0] * count)[int((when - origin) / width)] += 1
    return [origin + width * index for index in range(count)], series


@pytest.mark.parametrize(
    "span",
    [timedelta(seconds=5), timedelta(minutes=59), timedelta(hours=3), timedelta(hours=61),
     timedelta(days=2, hours=7), timedelta(days=90), timedelta(days=400), timedelta(days=1790)],
    ids=str,
)  # fmt: skip
def test_the_counted_timeline_equals_one_worked_out_from_every_record(span: timedelta) -> None:
    chance = random.Random(span.total_seconds())
    offsets = sorted(chance.random() for _ in range(3000))
    # Every record in time order but a few (a clock step back in one chain), in 9 namespaces.
    opened = [
        (
            START + span * (offset if chance.random() > 0.01 else offset / 2),
            f"ns-{chance.randrange(9)}",
        )
        for offset in offsets
    ]
    summary = summarise(
        _at(f"r{n}", when.isoformat(timespec="microseconds"), ns)
        for n, (when, ns) in enumerate(opened)
    )
    assert summary.timeline(top=4) == _reference_timeline(opened, top=4)


def test_years_of_records_are_counted_in_at_most_60_columns_from_the_first_day() -> None:
    first = datetime(2001, 3, 4, 5, 6, 7, tzinfo=UTC)
    times = [first + timedelta(days=3 * n, seconds=n) for n in range(3000)]
    summary = summarise(_at(f"r{n}", when.isoformat(), "team-a") for n, when in enumerate(times))
    buckets, series = summary.timeline()
    assert len(buckets) <= MAX_BUCKETS
    assert buckets[0] == datetime(2001, 3, 4, tzinfo=UTC)
    assert sum(series["team-a"]) == 3000
    assert series["team-a"][0] > 0
    assert series["team-a"][-1] > 0
    assert Summary().timeline() == ([], {})
