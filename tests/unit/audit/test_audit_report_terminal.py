"""`kamus-audit report` prints record fields with control, format and line-separator characters
escaped, as `query` does: a request-chosen value (an item's namespace, a key id) or a damaged
record cannot clear the terminal, move its cursor or reorder what a person reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kamus_cli.audit import main
from kamus_client.exitcodes import ExitCode

# Clear screen (CSI 2J), right-to-left override, line separator, C1 CSI, NUL.
HOSTILE = "\x1b[2J\u202e\u2028\x9b\x00"
ESCAPED = "\\u001b[2J\\u202e\\u2028\\u009b\\u0000"


def _record(outcome: str, time: str, *, mark: str, reason: str = "ok") -> dict[str, Any]:
    return {
        "time": time,
        "audit": True,
        "action": "decrypt",
        "request_id": f"r-{mark}",
        "outcome": outcome,
        "reason": reason,
        "caller": {"username": f"caller-{mark}{HOSTILE}", "pod": f"pod{HOSTILE}"},
        "items": [{"name": f"item{HOSTILE}", "namespace": f"ns-{mark}{HOSTILE}",
                   "service_account": f"sa-{mark}{HOSTILE}", "provider": f"provider{HOSTILE}",
                   "key_id": f"key-{mark}{HOSTILE}"}],
    }  # fmt: skip


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    """An audit file (in a folder whose name is hostile too) where every printed field is."""
    folder = tmp_path / f"audit{HOSTILE.replace(chr(0), '')}"
    folder.mkdir()
    records = [
        # A damaged time is printed as the period's start as it is.
        _record("allowed", f"2026-11-27T10:00:00.000+00:00{HOSTILE}", mark="a"),
        _record("denied", "2026-11-27T10:01:00.000+00:00", mark="b", reason=f"why{HOSTILE}"),
        _record("allowed", f"2026-11-27T10:02:00.000+00:00{HOSTILE}", mark="c"),
    ]
    path = folder / "audit.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), "utf-8")
    return path


def test_report_text_escapes_every_record_field_it_prints(
    hostile_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(hostile_log)], {}) == ExitCode.OK
    out = capsys.readouterr().out
    for line in out.split("\n"):  # not splitlines(): it would hide U+2028, U+0085, ...
        assert line.isprintable(), repr(line)
    assert f"Period: 2026-11-27T10:00:00.000+00:00{ESCAPED} .. " in out
    for printed in (
        f"ns-a{ESCAPED}/sa-a{ESCAPED}",  # ciphertexts decrypted per scope
        f"why{ESCAPED}",  # denials by reason
        f"caller-b{ESCAPED}",  # top callers
        f"provider{ESCAPED}:key-c{ESCAPED}",  # ciphertexts opened per key
    ):
        assert printed in out


def test_report_text_keeps_its_columns_aligned_on_the_escaped_names(
    hostile_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(hostile_log)], {}) == ExitCode.OK
    callers = capsys.readouterr().out.split("callers (events):\n")[1].split("\n\n")[0]
    rows = callers.splitlines()
    assert len(rows) == 3
    assert len({row.rindex("  ") for row in rows}) == 1
