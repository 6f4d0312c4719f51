"""Plaintexts read as JSON the way Kamus's init container did (its HTTP client parsed them)."""

from __future__ import annotations

import json

from kamus_client.errors import InputError


def _reject_constant(name: str) -> object:
    # JavaScript's JSON.parse, which Kamus used, knows no NaN or Infinity.
    raise ValueError(name)


def _too_deep(name: str | None) -> InputError:
    # Python's JSON reader and writer recurse once per level and stop at the recursion limit
    # (about a thousand levels, a few KB of brackets); the message never quotes the value.
    what = "a value" if name is None else f"the value of {name!r}"
    return InputError(
        f"{what} is JSON nested too deeply (about 1000 levels or more) to be read or written;"
        " use -f yaml or -f template for it, or flatten it"
    )


def parsed_json(plaintext: str, name: str | None = None) -> tuple[bool, object]:
    """``(True, value)`` when ``plaintext`` is a JSON text as JavaScript's JSON.parse reads it;
    InputError (naming ``name``) when it nests too deeply to read."""
    try:
        return True, json.loads(plaintext, parse_constant=_reject_constant)
    except ValueError:
        return False, None
    except RecursionError:
        raise _too_deep(name) from None


def compact_json(value: object, name: str | None = None) -> str:
    """``JSON.stringify(value)``: no spaces, non-ASCII kept as is; InputError when too deep."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        raise _too_deep(name) from None


def stringify_if_json(plaintext: str, name: str | None = None) -> str:
    """Kamus's ``stringifyIfJson``: a JSON object or array plaintext as compact JSON, else as is."""
    ok, value = parsed_json(plaintext, name)
    return compact_json(value, name) if ok and isinstance(value, dict | list) else plaintext
