"""The ``inspect`` command: what a ciphertext's header says, read without any key.

A v1 ciphertext (docs/FORMAT.md) names its provider, scope and key id in clear text; the body
lengths tell an envelope (KMS-wrapped data key) from a local-keyring ciphertext. A legacy Kamus
ciphertext (``base64(iv):base64(ciphertext)``, AES-256-CBC) carries none of that and is only
recognised.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from kamus_client.arguments import paragraph
from kamus_client.errors import InputError
from kamus_kms.ciphertext import NONCE_BYTES, PREFIX, TAG_BYTES, Ciphertext
from kamus_kms.errors import InvalidCiphertextError

_LEGACY = re.compile(r"([A-Za-z0-9+/]+={0,2}):([A-Za-z0-9+/]+={0,2})")
_AES_BLOCK = 16

EPILOG = """\
examples:
  kamus-cli inspect 'kamus:v1:local:team-a:api:k1:AAB...'
  kamus-cli inspect -f db-password.kamus --output-format json
  grep -rl ':k1:' deploy/ | xargs -n1 kamus-cli inspect -f     # which scopes still use k1

exit codes: 0 recognised, 3 not a Kamus ciphertext.
"""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add the ``inspect`` command to ``commands``."""
    parser = commands.add_parser(
        "inspect",
        help="show the version, scope and key id of a ciphertext, without any key",
        description=paragraph(
            "Show what a ciphertext's header says: format version, provider, namespace, service"
            " account, key id and body lengths. No key and no server are involved. A legacy"
            " Kamus ciphertext (base64:base64) is recognised as such."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("ciphertext", nargs="?", help="the ciphertext (default: standard input)")
    source.add_argument("-f", "--file", type=Path, help="file holding the ciphertext")
    parser.add_argument("--output-format", choices=("text", "json"), default="text")
    parser.set_defaults(run=run, parser=parser)


def read_ciphertext(text: str | None, path: Path | None) -> str:
    """The ciphertext from the argument, the file or standard input, stripped."""
    if text is None and path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path} (a text file)") from exc
    elif text is None:
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise InputError("standard input is not text") from exc
    text = text.strip()
    if not text:
        raise InputError("no ciphertext given")
    return text


def describe(text: str) -> dict[str, object]:
    """The header fields of a v1 ciphertext or the facts of a legacy one; InputError else."""
    if text.startswith(PREFIX):
        try:
            parsed = Ciphertext.parse(text)
        except InvalidCiphertextError as exc:
            raise InputError(
                "the text starts like a Kamus v1 ciphertext but is malformed (a field is invalid"
                " or the body is cut or altered)"
            ) from exc
        return {
            "format": "kamus",
            "version": 1,
            "provider": parsed.provider,
            "namespace": parsed.scope.namespace,
            "service_account": parsed.scope.service_account,
            "key_id": parsed.key_id,
            "wrapped_key_bytes": len(parsed.wrapped_key),
            "body_bytes": 2 + len(parsed.wrapped_key) + NONCE_BYTES + len(parsed.sealed),
            "padded_plaintext_bytes": len(parsed.sealed) - TAG_BYTES,
        }
    legacy = legacy_lengths(text)
    if legacy is not None:
        iv_bytes, ciphertext_bytes = legacy
        return {
            "format": "kamus-legacy",
            "cipher": "AES-256-CBC",
            "iv_bytes": iv_bytes,
            "ciphertext_bytes": ciphertext_bytes,
            "note": (
                "a legacy Kamus ciphertext: it names no scope or key; it decrypts only where an"
                " operator configured the legacy key, and `kamus-cli rewrap` turns it into v1"
            ),
        }
    raise InputError("this is not a Kamus ciphertext (neither kamus:v1:… nor base64:base64)")


def legacy_lengths(text: str) -> tuple[int, int] | None:
    """``(iv bytes, ciphertext bytes)`` of a legacy Kamus ciphertext, else None."""
    match = _LEGACY.fullmatch(text)
    if match is None:
        return None
    try:
        iv = base64.b64decode(match[1], validate=True)
        sealed = base64.b64decode(match[2], validate=True)
    except binascii.Error:
        return None
    if len(iv) != _AES_BLOCK or not sealed or len(sealed) % _AES_BLOCK:
        return None
    return len(iv), len(sealed)


def run(args: argparse.Namespace) -> None:
    """Print the description of the ciphertext."""
    facts = describe(read_ciphertext(args.ciphertext, args.file))
    if args.output_format == "json":
        print(json.dumps(facts, indent=2))
        return
    if facts["format"] == "kamus":
        rows = [
            ("format", f"kamus v{facts['version']}"),
            ("provider", facts["provider"]),
            ("namespace", facts["namespace"]),
            ("service account", facts["service_account"]),
            ("key id", facts["key_id"]),
            ("wrapped key", f"{facts['wrapped_key_bytes']} bytes"),
            ("body", f"{facts['body_bytes']} bytes"),
            ("padded plaintext", f"{facts['padded_plaintext_bytes']} bytes"),
        ]
    else:
        rows = [
            ("format", "legacy Kamus (base64(iv):base64(ciphertext))"),
            ("cipher", facts["cipher"]),
            ("iv", f"{facts['iv_bytes']} bytes"),
            ("ciphertext", f"{facts['ciphertext_bytes']} bytes"),
            ("note", facts["note"]),
        ]
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        print(f"{name + ':':<{width}} {value}")
