"""JSON-lines logging to stdout: one line per request, named audit events, never secrets."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

# LogRecord attributes that are plumbing, not event fields.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed with `extra=` become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        event.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str, separators=(",", ":"))


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time of each record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        return


def configure_logging(level: str) -> None:
    """Send every `kamus.*` logger to stdout as JSON lines (idempotent)."""
    logger = logging.getLogger("kamus")
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
        logger.addHandler(StdoutHandler())
    # Audit events are records, not diagnostics: KAMUS_LOG_LEVEL must never silence them.
    logging.getLogger("kamus.audit").setLevel(logging.INFO)


# The formatted second of the last timestamp: most lines of a busy second share it.
# (A one-item list holding a tuple, so a reader never sees one second's number with another's text.)
_second: list[tuple[int, str]] = [(-1, "")]


def timestamp() -> str:
    """Now, as ISO 8601 UTC with milliseconds (2026-11-27T08:46:47.123+00:00)."""
    # Whole microseconds first, rounded as datetime rounds them, then cut to milliseconds.
    whole, micros = divmod(round(time.time() * 1_000_000), 1_000_000)
    cached = _second[0]
    if cached[0] != whole:
        cached = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _second[0] = cached
    return f"{cached[1]}.{micros // 1000:03d}+00:00"


_lines_lock = threading.Lock()
# One encoder for every line: json.dumps with options builds a new encoder on each call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def write_event(logger: str, event: str, fields: dict[str, Any]) -> None:
    """Write one JSON line to stdout directly, in the same shape as the JSON log records.

    Request and audit lines are written on every request: going around the logging module (record
    objects, attribute scans) makes each one several times cheaper. The line is flushed at once,
    so an audit event is out before the response is.
    """
    # An event that carries its own time (audit events: when the attempt began) keeps it.
    now = (
        fields["time"] if "time" in fields else datetime.now(UTC).isoformat(timespec="milliseconds")
    )
    line = _ENCODER.encode(
        {"time": now, "level": "info", "logger": logger, "event": event, **fields}
    )
    data = (line + "\n").encode("utf-8")
    stream = sys.stdout
    with _lines_lock:
        try:
            fileno = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fileno = -1  # a replaced stdout (tests, embedding): go through it
        if fileno < 0:
            stream.write(line + "\n")
            stream.flush()
            return
        # One system call, no buffering layer: the line is out before the response is.
        stream.flush()
        view = memoryview(data)
        while view:
            view = view[os.write(fileno, view) :]
