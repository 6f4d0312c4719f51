"""``kamus-cli rewrap --in-place FILE...``: ciphertexts in files re-sealed under the current key.

Every ciphertext the selection names (``--key ID``: those under that key, a sealed one when ID is
one of its recipients; ``--legacy``: original Kamus texts; ``--all``) is sent to the decryptor's
rewrap API with a token of its own scope (minted once per scope through the kubeconfig, or
``--token-file``), and replaced in the file by the answer. Everything else in the file stays
byte for byte. A file is rewritten only when all of its ciphertexts were rewrapped, atomically
(temporary file and rename, same mode); a failure leaves it as it was, is reported, and the
command ends with the failure's exit code after trying the other files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from kamus_cli.keyscan import LEGACY_TEXT, V1
from kamus_client.errors import ClientError, InputError, OutputError
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import InvalidCiphertextError
from kamus_kms.legacy import LegacyCiphertext

Rewrap = Callable[[str, str | None, str | None], str]  # (text, namespace, sa) -> new text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the in-place flags to the ``rewrap`` parser."""
    group = parser.add_argument_group("rewrapping files in place")
    group.add_argument("--in-place", nargs="+", type=Path, metavar="FILE", default=[],
                       help="rewrap the selected ciphertexts inside these files")  # fmt: skip
    group.add_argument("--key", action="append", default=[], metavar="ID",
                       help="select ciphertexts under this key id (repeatable)")  # fmt: skip
    group.add_argument(
        "--legacy",
        action="store_true",
        help="select original Kamus texts (needs -n and -a: they name no scope)",
    )
    group.add_argument("--all", action="store_true", help="select every Kamus ciphertext")


def _selected(text: str, args: argparse.Namespace) -> list[tuple[int, int, str | None, str | None]]:
    """``(start, end, namespace, service account)`` of each selected ciphertext in ``text``."""
    found: list[tuple[int, int, str | None, str | None]] = []
    for match in V1.finditer(text):
        try:
            parsed = Ciphertext.parse(match.group())
        except InvalidCiphertextError:
            continue
        keys = {parsed.key_id, *parsed.key_id.split("+")}
        if args.all or keys & set(args.key):
            found.append((match.start(), match.end(), parsed.scope.namespace,
                          parsed.scope.service_account))  # fmt: skip
    if args.legacy or args.all:
        for match in LEGACY_TEXT.finditer(text):
            try:
                LegacyCiphertext.parse(match.group())
            except InvalidCiphertextError:
                continue
            found.append((match.start(), match.end(), None, None))
    return sorted(found)


def rewrap_files(args: argparse.Namespace, rewrap: Rewrap) -> None:
    """Rewrite every file of ``--in-place``; raise the first failure's error at the end."""
    if not (args.key or args.legacy or args.all):
        raise InputError("choose what to rewrap: --key ID (repeatable), --legacy or --all")
    failure: ClientError | None = None
    for path in args.in_place:
        try:
            count = _rewrap_file(path, args, rewrap)
        except ClientError as exc:
            print(f"kamus-cli: {path}: not changed: {exc}", file=sys.stderr)
            failure = failure or exc
            continue
        print(f"kamus-cli: {path}: {count} ciphertext(s) rewrapped", file=sys.stderr)
    if failure is not None:
        raise failure


def _rewrap_file(path: Path, args: argparse.Namespace, rewrap: Rewrap) -> int:
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} as UTF-8 text") from exc
    selected = _selected(text, args)
    if not selected:
        return 0
    parts, position = [], 0
    for start, end, namespace, service_account in selected:
        parts.append(text[position:start])
        parts.append(rewrap(text[start:end], namespace, service_account))
        position = end
    parts.append(text[position:])
    _replace(path, "".join(parts).encode("utf-8"))
    return len(selected)


def _replace(path: Path, content: bytes) -> None:
    mode = path.stat().st_mode & 0o7777
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"cannot rewrite {path}: {exc.strerror}") from exc
