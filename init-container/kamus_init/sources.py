"""Reading the ciphertexts: every non-hidden regular file of the encrypted folders, and the
``{name: ciphertext}`` maps of ``--encrypted-file``."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

from kamus_client.errors import InputError


def read_ciphertexts(
    folders: Sequence[Path],
    *,
    encrypted_files: Sequence[Path] = (),
    skip: Collection[Path] = (),
) -> dict[str, str]:
    """Return ``{name: ciphertext}`` from ``folders`` and ``encrypted_files``, in Kamus's order
    (:func:`kamus_order`: folders as given, files sorted within each, maps in their own order);
    InputError else.

    In folders, hidden entries are skipped: a ConfigMap mount holds its keys as symlinks into a
    hidden ``..data`` directory next to hidden timestamped directories. Symlinks are followed,
    other directories are skipped, and each file's content is stripped of surrounding
    whitespace. Files that resolve to a path in ``skip`` (the template) are not ciphertexts.
    A name found twice, in folders or maps, is an error.
    """
    found: dict[str, str] = {}
    origin: dict[str, Path] = {}
    visited: set[Path] = set()
    skipped = {path.resolve() for path in skip}
    for folder in folders:
        if folder.resolve() in visited:
            continue
        visited.add(folder.resolve())
        for name in _visible_names(folder):
            path = folder / name
            if path.resolve() in skipped:
                continue
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
    for path in encrypted_files:
        for name, ciphertext in read_encrypted_file(path).items():
            if name in found:
                raise InputError(f"the name {name!r} is in both {origin[name]} and {path}")
            found[name] = ciphertext
            origin[name] = path
    if not found:
        listed = ", ".join(str(place) for place in (*folders, *encrypted_files))
        raise InputError(f"no ciphertext found in {listed}")
    return kamus_order(found)


# The largest array index of JavaScript (2**32 - 2): names up to it that are canonical integers
# are "integer-like" keys, which a JavaScript object lists first.
_MAX_ARRAY_INDEX = 2**32 - 2


def _array_index(name: str) -> int | None:
    if not name.isascii() or not name.isdigit() or (name != "0" and name.startswith("0")):
        return None
    value = int(name)
    return value if value <= _MAX_ARRAY_INDEX else None


def kamus_order(items: dict[str, str]) -> dict[str, str]:
    """``items`` in the order Kamus's init container wrote them, which the single-file formats
    (json, cfg, cfg-strict, env, yaml, template) follow.

    Kamus gathered the names into a JavaScript object, folder after folder as given to ``-e``,
    each folder's files in sorted order; a JavaScript object lists integer-like names
    (``"0"``, ``"10"``; not ``"010"``) first, in numeric order, then the others in the order they
    were added. ``items`` comes in that adding order.
    """
    numeric = sorted((index, name) for name in items if (index := _array_index(name)) is not None)
    ordered = [name for _, name in numeric]
    ordered += [name for name in items if _array_index(name) is None]
    return {name: items[name] for name in ordered}


def read_encrypted_file(path: Path) -> dict[str, str]:
    """Return the ``{name: ciphertext}`` map of a YAML or JSON file, or of a ConfigMap manifest.

    A document with ``kind: ConfigMap`` (what ``kamus-cli seal`` prints) gives its ``data``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} (a UTF-8 YAML or JSON file)") from exc
    try:
        document = json.loads(text)
    except ValueError:
        import yaml  # noqa: PLC0415 - only YAML inputs pay for it (about 35 ms)

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{path} is neither JSON nor YAML") from exc
    if isinstance(document, dict) and document.get("kind") == "ConfigMap":
        document = document.get("data") or {}
    if not isinstance(document, dict) or not document:
        raise InputError(f"{path} must hold a non-empty map of name: ciphertext")
    items: dict[str, str] = {}
    for name, ciphertext in document.items():
        if not isinstance(name, str) or not isinstance(ciphertext, str):
            raise InputError(f"{path}: every name and ciphertext must be a string")
        if not ciphertext.strip():
            raise InputError(f"{path}: the ciphertext of {name!r} is empty")
        items[name] = ciphertext.strip()
    return items


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
