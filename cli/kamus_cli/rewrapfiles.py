"""``kamus-cli rewrap --in-place FILE...``: ciphertexts in files re-sealed under the current key.

Every ciphertext the selection names (``--key ID``: those under that key, a sealed one when ID is
one of its recipients; ``--legacy``: original Kamus texts; ``--all``) is sent to the decryptor's
rewrap API with a token of its own scope (minted once per scope through the kubeconfig, or
``--token-file``), and replaced in the file by the answer. Everything else in the file stays
byte for byte. A file is rewritten only when all of its ciphertexts were rewrapped, atomically
(temporary file and rename, same mode); a failure leaves it as it was, is reported, and the
command ends with the failure's exit code after trying the other files.

The decryptor's answer is written into YAML, JSON and env files, so it is trusted only as far as
it proves itself: it must be the canonical text of a v1 ciphertext (the only form rewrap returns)
for the scope that was sent, or a quote, space or comment from a hostile decryptor would become
part of the file's structure. A symbolic link is written through to its target (the link stays);
a file with several hard links is refused, since an atomic rename would split them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from kamus_cli.keyscan import LEGACY_TEXT, V1
from kamus_client.errors import ClientError, InputError, OutputError, UnexpectedResponseError
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
        # The link's target is what the operator means to update; the link itself stays.
        target = Path(os.path.realpath(path))
        status = target.stat()
        data = target.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} as UTF-8 text") from exc
    if status.st_nlink > 1:
        raise InputError(
            f"{path} has {status.st_nlink} hard links: replacing it atomically would leave the"
            " other names with the old ciphertexts; rewrap a copy and move it over each name"
        )
    selected = _selected(text, args)
    if not selected:
        return 0
    parts, position = [], 0
    for start, end, namespace, service_account in selected:
        scope = (namespace or args.namespace, service_account or args.service_account)
        if None in scope:
            raise InputError(
                "a legacy ciphertext names no scope: pass --namespace and --service-account"
            )
        parts.append(text[position:start])
        parts.append(_checked(rewrap(text[start:end], namespace, service_account), scope))
        position = end
    parts.append(text[position:])
    _replace(target, "".join(parts).encode("utf-8"), status.st_mode & 0o7777)
    return len(selected)


def _checked(answer: str, scope: tuple[str | None, str | None]) -> str:
    """``answer`` when it is exactly one canonical v1 ciphertext of ``scope``."""
    try:
        parsed = Ciphertext.parse(answer)
    except InvalidCiphertextError:
        parsed = None
    if parsed is None or parsed.encode() != answer:
        raise UnexpectedResponseError("the decryptor's answer is not one Kamus v1 ciphertext")
    if (parsed.scope.namespace, parsed.scope.service_account) != scope:
        raise UnexpectedResponseError(
            f"the decryptor answered a ciphertext of {parsed.scope.namespace}/"
            f"{parsed.scope.service_account}, not of {scope[0]}/{scope[1]}"
        )
    return answer


def _replace(path: Path, content: bytes, mode: int) -> None:
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
