"""What every ``kamus-audit`` command reads: the chain files of paths, and the audit key."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from pathlib import Path

from kamus_client import environment
from kamus_client.errors import InputError

KEY_ENV = environment.AUDIT_KEY


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise InputError(f"the audit key from {source} must be base64") from exc
    if len(key) < 32:
        raise InputError(f"the audit key from {source} must hold at least 32 bytes")
    return key


def _read_key_file(path: Path, source: str) -> bytes:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the audit key file {path} ({source})") from exc
    return _decode_key(text, source)


def load_key(key_file: Path | None, environ: Mapping[str, str]) -> bytes:
    """The audit key: --key-file, else $KAMUS_AUDIT_KEY, else $KAMUS_AUDIT_KEY_FILE."""
    if key_file is not None:
        return _read_key_file(key_file, "--key-file")
    text = environment.value(KEY_ENV, environ)
    if text is not None:
        source = KEY_ENV + "_FILE" if KEY_ENV + "_FILE" in environ else KEY_ENV
        return _decode_key(text, source)
    raise InputError(f"no audit key: pass --key-file or set {KEY_ENV} or {KEY_ENV}_FILE")


def chains(paths: Sequence[Path], *, allow_none: bool = False) -> list[Path]:
    """The chain files of ``paths``: files as given, folders' ``*.jsonl``; InputError when none
    (unless ``allow_none``: against a witness, an emptied folder is what is to be found)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.jsonl")))
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"cannot read {path}: No such file or directory")
    if not found and not allow_none:
        raise InputError("no audit chain found (folders are searched for *.jsonl)")
    return found
