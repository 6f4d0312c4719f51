"""Output formats: each turns the plaintexts into ``{file name: content}`` for the output folder.

A format is a function ``(plaintexts, spec) -> {file name: bytes}`` registered in ``FORMATS``; it
writes nothing itself (:mod:`kamus_init.outputs` does, atomically). New formats (cfg, env, yaml,
template) add a function here and, when they need more than the file name, a field to OutputSpec.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kamus_cli.errors import InputError

_MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class OutputSpec:
    """What a format needs besides the plaintexts."""

    file_name: str


Format = Callable[[Mapping[str, str], OutputSpec], dict[str, bytes]]


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain, visible file name; raise InputError otherwise."""
    if (
        not name
        or name.startswith(".")
        or any(ch in name for ch in "/\\\0")
        or len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES
    ):
        raise InputError(f"{name!r} cannot be an output file name (empty, hidden or a path)")
    return name


def render_files(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """One file per item, named by the item, holding the plaintext byte for byte."""
    return {check_file_name(name): value.encode("utf-8") for name, value in plaintexts.items()}


def render_json(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """One JSON object ``{name: plaintext}`` in ``spec.file_name``, indented like Kamus's."""
    document = {name: _json_value(value) for name, value in plaintexts.items()}
    text = json.dumps(document, indent=4, ensure_ascii=False)
    return {check_file_name(spec.file_name): text.encode("utf-8")}


def _json_value(plaintext: str) -> object:
    # Kamus embedded a plaintext that is itself a JSON object or array as a nested value (its
    # HTTP client parsed it); apps reading config["key.json"]["field"] rely on that.
    try:
        value = json.loads(plaintext)
    except ValueError:
        return plaintext
    return value if isinstance(value, dict | list) else plaintext


FORMATS: Mapping[str, Format] = {"files": render_files, "json": render_json}
