"""Reading the ciphertexts: every non-hidden regular file of the encrypted folders."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from kamus_cli.errors import InputError


def read_ciphertexts(folders: Sequence[Path]) -> dict[str, str]:
    """Return ``{file name: ciphertext}`` from ``folders``; raise InputError on any problem.

    Hidden entries are skipped: a ConfigMap mount holds its keys as symlinks into a hidden
    ``..data`` directory next to hidden timestamped directories. Symlinks are followed, other
    directories are skipped, and each file's content is stripped of surrounding whitespace.
    """
    found: dict[str, str] = {}
    origin: dict[str, Path] = {}
    visited: set[Path] = set()
    for folder in folders:
        if folder.resolve() in visited:
            continue
        visited.add(folder.resolve())
        for name in _visible_names(folder):
            path = folder / name
            try:
                mode = path.stat().st_mode  # follows the ConfigMap's symlinks
            except OSError as exc:
                raise InputError(f"cannot read {path}: {exc.strerror}") from exc
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise InputError(f"{path} is not a regular file")
            if name in found:
                raise InputError(f"the name {name!r} is in both {origin[name]} and {folder}")
            found[name] = _read_ciphertext(path)
            origin[name] = folder
    if not found:
        listed = ", ".join(str(folder) for folder in folders)
        raise InputError(f"no ciphertext found in {listed}")
    return found


def _visible_names(folder: Path) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise InputError(f"cannot list the encrypted folder {folder}: {exc.strerror}") from exc
    return sorted(name for name in names if not name.startswith("."))


def _read_ciphertext(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} does not hold a Kamus ciphertext (not UTF-8 text)") from exc
    if not text:
        raise InputError(f"{path} is empty")
    return text
