"""The flags of Kamus CLI 0.3.6's ``encrypt`` that only Kamus had, so its scripts keep running.

- ``-i/--ignore-new-line``: Kamus asked for confirmation before encrypting a secret holding a
  line break. kamus-cli never asks (a prompt would hang a script); it warns on standard error
  about a line break in a ``-s`` or ``-f`` secret instead, and this flag silences the warning.
- ``--secret-file-encoding ENC``: how Kamus (Node's ``fs.readFileSync``) read ``-f``: a text
  encoding, or ``base64``/``base64url``/``hex``, which make the secret that text form of the
  file's bytes (how Kamus users encrypted binary files).
- ``-v/--verbose``, ``--log-output FILE``, ``--log-encoding ENC``, ``--log-flag FLAG``: Kamus's
  logger. ``-v`` prints the steps on standard error, ``--log-output`` appends them to FILE
  (created with mode 0600), ``--log-encoding`` is that file's encoding; ``--log-flag`` chose
  colours and dates of Kamus's log lines and changes nothing here.
- ``--auth-tenant``, ``--auth-application``, ``--auth-resource``: Azure AD device-code login for
  an encryptor behind Azure AD. The Kamus for Python encryptor has no such login; these flags
  stop the command with a message saying what to do instead (exit 3).

No log line ever holds the secret.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kamus_client.errors import InputError


def _base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")  # Node writes no padding


def _hex(raw: bytes) -> str:
    return raw.hex()


# Node's names for the binary-to-text encodings: the secret is the text form of the bytes.
_TEXT_FORMS: dict[str, Callable[[bytes], str]] = {
    "base64": _base64,
    "base64url": _base64url,
    "hex": _hex,
}
# Node's names of text encodings, as Python knows them.
_NODE_ENCODINGS = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "ascii": "ascii",
    "latin1": "latin-1",
    "binary": "latin-1",
    "ucs2": "utf-16-le",
    "ucs-2": "utf-16-le",
    "utf16le": "utf-16-le",
    "utf-16le": "utf-16-le",
}
_AZURE_FLAGS = ("auth_tenant", "auth_application", "auth_resource")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add Kamus CLI 0.3.6's own flags to the ``encrypt`` parser."""
    kamus = parser.add_argument_group("flags of Kamus CLI 0.3.6 (docs/CLI.md)")
    kamus.add_argument(
        "-i",
        "--ignore-new-line",
        action="store_true",
        help="do not warn about a line break in the secret (Kamus asked to confirm)",
    )
    kamus.add_argument(
        "--secret-file-encoding",
        type=secret_file_encoding,
        metavar="ENC",
        help="read -f in this encoding (Node's names: utf8, ascii, latin1, ucs2, ...), or as"
        " base64, base64url or hex text of its bytes (default: utf8)",
    )
    kamus.add_argument("-v", "--verbose", action="store_true", help="print the steps on stderr")
    kamus.add_argument(
        "--log-output", type=Path, metavar="FILE", help="also append the steps to FILE"
    )
    kamus.add_argument(
        "--log-encoding", type=log_encoding, metavar="ENC", help="encoding of --log-output"
    )
    kamus.add_argument("--log-flag", metavar="FLAG", help="Kamus's log format; has no effect")
    for flag, what in (("tenant", "tenant id"), ("application", "application id"),
                       ("resource", "resource name")):  # fmt: skip
        kamus.add_argument(
            f"--auth-{flag}",
            metavar="ID",
            help=f"Azure AD {what} of Kamus's login; not supported (see docs/CLI.md)",
        )


def secret_file_encoding(value: str) -> str:
    """Parse ``--secret-file-encoding``: a Node encoding name, any case."""
    name = value.strip().lower()
    if name not in _NODE_ENCODINGS and name not in _TEXT_FORMS:
        known = ", ".join([*_NODE_ENCODINGS, *_TEXT_FORMS])
        raise argparse.ArgumentTypeError(f"unknown encoding {value!r}; choose from {known}")
    return name


def log_encoding(value: str) -> str:
    """Parse ``--log-encoding``: any text encoding Python knows (Node's names included)."""
    name = _NODE_ENCODINGS.get(value.strip().lower(), value.strip())
    try:
        codecs.lookup(name)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {value!r}") from None
    return name


def refuse_azure_login(args: argparse.Namespace) -> None:
    """Stop, with what to do instead, when Kamus's Azure AD login flags are given."""
    given = [f"--{name.replace('_', '-')}" for name in _AZURE_FLAGS if getattr(args, name)]
    if given:
        raise InputError(
            f"{', '.join(given)}: Kamus's Azure AD login is not supported. The Kamus for Python"
            " encryptor takes anonymous encrypt requests, as Kamus's did by default; keep it"
            " in-cluster or restrict who reaches it at the ingress (docs/DEPLOY.md), and run"
            " this command without the --auth-* flags"
        )


def decode_secret_file(raw: bytes, encoding: str | None, origin: str) -> str:
    """The secret held in a file's bytes, read in ``encoding`` (None: strict UTF-8)."""
    if encoding in _TEXT_FORMS:
        return _TEXT_FORMS[encoding](raw)
    codec = _NODE_ENCODINGS.get(encoding or "utf8", "utf-8")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise InputError(f"{origin} is not valid {encoding or 'UTF-8'} text") from exc


class StepLog:
    """Kamus's informational log lines: on stderr with ``-v``, appended to ``--log-output``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._verbose = bool(getattr(args, "verbose", False))
        self._path: Path | None = getattr(args, "log_output", None)
        self._encoding: str = getattr(args, "log_encoding", None) or "utf-8"

    def info(self, message: str) -> None:
        """Log one step (never a secret)."""
        if self._verbose:
            print(f"kamus-cli: {message}", file=sys.stderr)
        if self._path is not None:
            line = f"{datetime.now(UTC).isoformat(timespec='seconds')} info {message}\n"
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding=self._encoding, errors="replace") as stream:
                    stream.write(line)
            except OSError as exc:
                raise InputError(f"cannot write the log file {self._path}: {exc.strerror}") from exc


def warn_about_line_break(secret: str, args: argparse.Namespace) -> None:
    """Kamus asked before encrypting a secret holding a line break; warn instead, unless -i."""
    if getattr(args, "ignore_new_line", False) or "\n" not in secret:
        return
    print(
        f"kamus-cli: warning: the secret holds a line break at index {secret.index(chr(10))}"
        " (a file is sent byte for byte, its last newline included); encrypting it as it is."
        " -i/--ignore-new-line silences this",
        file=sys.stderr,
    )
