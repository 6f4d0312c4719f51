"""`kamus-audit report` over folders of per-process chains, and its HTML form: the counts behind
each chart, the page's isolation (no network, attacker-chosen values escaped). In a real browser:
tests/integration/test_audit_report_in_chromium.py."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kamus_cli.audit import main
from kamus_cli.auditreport import CONTENT_SECURITY_POLICY, render_html
from kamus_cli.auditsummary import Summary, summarise
from kamus_client.exitcodes import ExitCode
from kamus_decryptor.auditfile import AuditFile

START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
HOSTILE = '<img src="https://evil.example/x.png" onerror="alert(1)"><script>pwned()</script>'


def event(
    minute: float,
    outcome: str = "allowed",
    *,
    caller: tuple[str, str] | None = ("team-a", "app"),
    scopes: tuple[tuple[str, str], ...] = (("team-a", "app"),),
    key_id: str = "k1",
    reason: str | None = None,
) -> dict[str, Any]:
    when = START + timedelta(minutes=minute)
    return {
        "time": when.isoformat(timespec="milliseconds"),
        "audit": True,
        "action": "decrypt",
        "request_id": f"r{minute}",
        "outcome": outcome,
        "reason": reason or {"allowed": "ok", "denied": "scope_mismatch"}.get(outcome, outcome),
        "caller": {"username": f"system:serviceaccount:{caller[0]}:{caller[1]}", "pod": "p"}
        if caller
        else None,
        "items": [
            {
                "name": "s",
                "fingerprint": "ab" * 16,
                "namespace": ns,
                "service_account": sa,
                "provider": "local",
                "key_id": key_id,
            }
            for ns, sa in scopes
        ],
        "source_ip": "10.0.0.1",
        "user_agent": HOSTILE,
    }


def test_the_summary_counts_what_each_chart_shows() -> None:
    summary = summarise([
        event(0), event(1, key_id="k2"), event(2, scopes=(("team-b", "web"), ("team-a", "app"))),
        event(3, "denied", caller=("team-c", "probe"), scopes=(("team-a", "app"),)),
        event(4, "denied", caller=("team-c", "probe"), scopes=(("team-b", "web"),)),
        event(5, "denied", caller=None, reason="unauthorized", scopes=()),
        event(6, "unavailable"),
    ])  # fmt: skip
    assert summary.events == 7
    assert summary.decrypted == {"team-a/app": 3, "team-b/web": 1}
    assert summary.keys == {"local:k1": 3, "local:k2": 1}
    assert summary.denials == {"scope_mismatch": 2, "unauthorized": 1}
    assert summary.denied_callers == {
        "system:serviceaccount:team-c:probe": 2,
        "(no authenticated caller)": 1,
    }
    assert summary.denied_scopes["system:serviceaccount:team-c:probe"] == {
        "team-a/app": 1,
        "team-b/web": 1,
    }
    assert summary.callers["system:serviceaccount:team-a:app"] == 4


def test_the_timeline_picks_a_bucket_width_and_groups_small_namespaces() -> None:
    namespaces = [f"ns-{n}" for n in range(10)]
    records = [
        event(minute * 7, scopes=((namespaces[minute % 10], "app"),)) for minute in range(400)
    ]
    buckets, series = summarise(records).timeline(top=3)
    # 400 events 7 minutes apart span 46.6 hours: one-hour buckets (at most 60 columns).
    assert buckets[1] - buckets[0] == timedelta(hours=1)
    assert len(buckets) == 47
    assert len(series) == 4
    assert "other" in series
    assert sum(sum(values) for values in series.values()) == 400
    assert all(len(values) == len(buckets) for values in series.values())


def test_an_empty_period_still_gives_a_page() -> None:
    page = render_html(Summary(), ["audit.jsonl"], START, 10)
    assert "No ciphertext was decrypted in this period." in page
    assert "<svg" in page  # the outcome chart, all zero


def test_the_page_can_load_nothing_and_escapes_every_value_from_the_file() -> None:
    hostile = event(0, caller=(HOSTILE, "app"), scopes=((HOSTILE, HOSTILE),), key_id=HOSTILE)
    hostile["items"][0]["provider"] = HOSTILE
    refused = event(1, "denied", caller=(HOSTILE, "x"), reason=HOSTILE)
    strange = event(2, HOSTILE)  # an outcome no Kamus writes
    page = render_html(summarise([hostile, refused, strange]), [HOSTILE], START, 10)
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;img src=&quot;https://evil.example/x.png&quot;" in page
    # The policy allows nothing but the one inline style block, by its hash.
    (meta,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert meta == CONTENT_SECURITY_POLICY
    assert meta.startswith("default-src 'none'; style-src 'sha256-")
    (style,) = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in meta
    assert not re.search(r"\sstyle=", page)


def test_damaged_or_extreme_times_never_stop_the_report() -> None:
    records = [event(0), event(1), event(2, "nonsense")]
    times = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "not a time"]
    for record, time in zip(records, times, strict=True):
        record["time"] = time
    summary = summarise([*records, event(3), {"outcome": "allowed", "items": "not a list"}])
    buckets, series = summary.timeline()
    assert 1 <= len(buckets) <= 60
    assert sum(sum(values) for values in series.values()) == 1  # event(3): the one usable time
    page = render_html(summary, ["audit.jsonl"], START, 10)
    # Every event has a tile: the unknown outcome counts under "other".
    assert '<div class="total"><b>5</b>events</div>' in page
    assert '<div class="total"><b>1</b>other</div>' in page


def test_years_of_records_still_make_at_most_60_columns() -> None:
    early, late = event(0), event(1)
    early["time"] = "0001-01-02T00:00:00+00:00"
    buckets, series = summarise([early, late]).timeline()
    assert 50 <= len(buckets) <= 60
    assert series["team-a"][0] == 1
    assert series["team-a"][-1] == 1


@pytest.fixture
def chains(tmp_path: Path, key: bytes) -> Path:
    """A folder with the chains of two decryptor processes, each with signed checkpoints."""
    folder = tmp_path / "audit"
    folder.mkdir()
    signer = Ed25519PrivateKey.generate()
    first = AuditFile(folder / "pod-1.jsonl", key, fsync=False, signer=signer,
                      checkpoint_records=2)  # fmt: skip
    second = AuditFile(folder / "pod-2.jsonl", key, fsync=False, signer=signer,
                       checkpoint_records=2)  # fmt: skip
    for minute in range(6):
        (first if minute % 2 else second).append(event(minute, key_id=f"k{minute}"))
    first.append(event(9, "denied", caller=("team-c", "probe")))
    return folder


def test_report_reads_a_folder_of_chains_in_time_order_without_checkpoints(
    chains: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert '"checkpoint"' in (chains / "pod-1.jsonl").read_text()
    assert main(["report", str(chains)], {}) == ExitCode.OK
    out = capsys.readouterr().out
    assert "Events: 7 (6 allowed, 1 denied, 0 unavailable, 0 error)" in out
    assert "Period: 2026-11-27T10:00:00.000+00:00 .. 2026-11-27T10:09:00.000+00:00" in out
    assert main(["query", str(chains), "--format", "jsonl"], {}) == ExitCode.OK
    times = [line.split('"time":"')[1][:23] for line in capsys.readouterr().out.splitlines()]
    assert times == sorted(times)
    assert len(times) == 7


def test_report_html_writes_one_file_and_prints_nothing_on_stdout(
    chains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "report.html"
    assert main(["report", str(chains), "--html", str(target), "--since", "2026-11-27T10:02"],
                {}) == ExitCode.OK  # fmt: skip
    out, err = capsys.readouterr()
    assert out == ""
    assert f"wrote the report of 5 events to {target}" in err
    page = target.read_text("utf-8")
    for section in ("decrypts", "denials", "callers", "denied-scopes", "keys", "outcomes"):
        assert f'<section id="{section}">' in page
    assert "local:k5" in page
    assert "local:k1" not in page


def test_report_html_to_an_unwritable_place_is_an_output_error(
    chains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing-folder" / "report.html"
    assert main(["report", str(chains), "--html", str(target)], {}) == ExitCode.OUTPUT
    assert "cannot write" in capsys.readouterr().err
