"""Reading ``.env`` files: ``KEY=value`` lines, the input of ``encrypt --env-file`` and ``seal``.

The rules (docs/CLI.md):

- blank lines and lines starting with ``#`` are skipped; ``export KEY=value`` is allowed;
- a key is a letter or ``_`` followed by letters, digits, ``_``, ``.`` or ``-``;
- ``'single quoted'`` values are taken literally and may span lines;
- ``"double quoted"`` values may span lines and understand ``\\n``, ``\\r``, ``\\t``, ``\\"``,
  ``\\\\`` and ``\\$``; any other backslash is kept;
- unquoted values run to the end of the line, without surrounding whitespace; `` #`` starts a
  comment;
- nothing is expanded (``$VAR`` stays as written); a key given twice is an error.

Errors name the file, line and key, never a value.
"""

from __future__ import annotations

import re
from pathlib import Path

from kamus_client.errors import InputError

_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def read_env_file(path: Path) -> dict[str, str]:
    """Return the ``{key: value}`` of the ``.env`` file ``path``, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} (a UTF-8 .env file)") from exc
    return parse_env(text, str(path))


def parse_env(text: str, origin: str) -> dict[str, str]:
    """Parse ``.env`` text; ``origin`` names it in error messages."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    values: dict[str, str] = {}
    position = 0
    while position < len(text):
        line_number = text.count("\n", 0, position) + 1
        end_of_line = _end_of_line(text, position)
        line = text[position:end_of_line]
        if not line.strip() or line.lstrip().startswith("#"):
            position = end_of_line + 1
            continue
        match = _KEY.match(text, position, end_of_line)
        if match is None:
            raise InputError(f"{origin}, line {line_number}: expected KEY=value")
        key = match[1]
        if key in values:
            raise InputError(f"{origin}, line {line_number}: {key} is given twice")
        value, position = _value(text, match.end(), origin, line_number, key)
        values[key] = value
    return values


def _end_of_line(text: str, position: int) -> int:
    end = text.find("\n", position)
    return len(text) if end < 0 else end


def _value(text: str, start: int, origin: str, line_number: int, key: str) -> tuple[str, int]:
    """The value starting at ``start`` and the position after its line."""
    quote = text[start : start + 1]
    if quote in ("'", '"'):
        value, after = _quoted(text, start, origin, line_number, key)
        rest_end = _end_of_line(text, after)
        rest = text[after:rest_end].strip()
        if rest and not rest.startswith("#"):
            raise InputError(
                f"{origin}, line {line_number}: unexpected text after the quoted value of {key}"
            )
        return value, rest_end + 1
    end = _end_of_line(text, start)
    raw = text[start:end]
    comment = re.search(r"[ \t]#", raw)
    if comment is not None:
        raw = raw[: comment.start()]
    return raw.strip(), end + 1


def _quoted(text: str, start: int, origin: str, line_number: int, key: str) -> tuple[str, int]:
    quote = text[start]
    position = start + 1
    parts: list[str] = []
    while position < len(text):
        char = text[position]
        if char == quote:
            return "".join(parts), position + 1
        if quote == '"' and char == "\\" and position + 1 < len(text):
            following = text[position + 1]
            parts.append(_ESCAPES.get(following, "\\" + following))
            position += 2
            continue
        parts.append(char)
        position += 1
    raise InputError(f"{origin}, line {line_number}: the value of {key} has no closing {quote}")
