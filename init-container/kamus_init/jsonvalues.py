"""Plaintexts read as JSON the way Kamus's init container did (its HTTP client parsed them)."""

from __future__ import annotations

import json


def _reject_constant(name: str) -> object:
    # JavaScript's JSON.parse, which Kamus used, knows no NaN or Infinity.
    raise ValueError(name)


def parsed_json(plaintext: str) -> tuple[bool, object]:
    """``(True, value)`` when ``plaintext`` is a JSON text as JavaScript's JSON.parse reads it."""
    try:
        return True, json.loads(plaintext, parse_constant=_reject_constant)
    except ValueError:
        return False, None


def compact_json(value: object) -> str:
    """``JSON.stringify(value)``: no spaces, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def stringify_if_json(plaintext: str) -> str:
    """Kamus's ``stringifyIfJson``: a JSON object or array plaintext as compact JSON, else as is."""
    ok, value = parsed_json(plaintext)
    return compact_json(value) if ok and isinstance(value, dict | list) else plaintext
