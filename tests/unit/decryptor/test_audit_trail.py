"""Audit events: the time is when the attempt ended, as docs/AUDIT.md says, and the request id
is the server's own with the client's kept beside it."""

from __future__ import annotations

import json

import pytest

from kamus_decryptor import audit
from kamus_decryptor.audit import AuditEvent, AuditTrail
from kamus_kms.auditchain import escape_unsafe


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Timestamps handed out in order, one per call."""
    issued: list[str] = []

    def next_tick() -> str:
        issued.append(f"2026-12-01T00:00:0{len(issued)}.000+00:00")
        return issued[-1]

    monkeypatch.setattr(audit, "timestamp", next_tick)
    return issued


def test_an_events_time_is_when_its_attempt_ended(
    ticks: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    trail = AuditTrail(b"k" * 32)
    event = AuditEvent("decrypt", "server-id", "10.0.0.1", "kamus-init",
                       client_request_id="client-id")  # fmt: skip
    during = audit.timestamp()  # type: ignore[attr-defined]  # time passes meanwhile
    trail.emit(event, None)
    assert event.time > during == ticks[0]
    (line,) = [json.loads(raw) for raw in capsys.readouterr().out.splitlines()]
    assert (line["time"], line["request_id"], line["client_request_id"]) == (
        event.time,
        "server-id",
        "client-id",
    )


@pytest.mark.parametrize("char", ["a", "\x9b", "\u202e", "\U000e0041"])
def test_request_text_takes_no_more_room_in_the_audit_file_for_being_escaped(char: str) -> None:
    # 256 C1 characters are 1,536 on disk once escaped: an anonymous caller's records would be
    # six times the size of anyone else's.
    event = AuditEvent("decrypt", "r", None, char * 1000)
    assert 0 < len(escape_unsafe(event.user_agent or "")) <= 256
    assert set(event.user_agent or "") == {char}
