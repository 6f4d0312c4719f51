"""What every ``kamus-audit`` command reads: the chain files of paths, and the audit key."""

from __future__ import annotations

import base64
import binascii
import stat
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


def chains(
    paths: Sequence[Path], *, allow_none: bool = False, odd: list[Path] | None = None
) -> list[Path]:
    """The chain files of ``paths``: files as given, folders' ``*.jsonl``; InputError when none
    (unless ``allow_none``: against a witness, an emptied folder is what is to be found).

    A name that holds no regular file (a symbolic link, a FIFO that would block the reader, a
    device that never ends) is no chain a decryptor wrote: it goes to ``odd`` when given (verify
    reports it as tampering), else it is an InputError.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            entries = sorted(path.glob("*.jsonl"))
        elif path.exists() or path.is_symlink():
            entries = [path]
        else:
            raise InputError(f"cannot read {path}: No such file or directory")
        for entry in entries:
            if stat.S_ISREG(entry.lstat().st_mode):
                found.append(entry)
            elif odd is not None:
                odd.append(entry)
            else:
                raise InputError(f"{entry} is not a regular file (no decryptor writes one there)")
    if not found and not allow_none and not odd:
        raise InputError("no audit chain found (folders are searched for *.jsonl)")
    return found
