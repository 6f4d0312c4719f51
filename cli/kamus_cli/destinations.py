"""Where a command's result goes: standard output, or an ``-o`` file never silently replaced."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kamus_client.errors import InputError, OutputError
from kamus_kms.privatefile import write_private


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``-o/--output`` and ``-O/--overwrite``."""
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help=f"write {what} to FILE, not stdout"
    )
    parser.add_argument(
        "-O", "--overwrite", action="store_true", help="replace the --output file if it exists"
    )


def check_output(args: argparse.Namespace) -> None:
    """Refuse early, before anything is sent, an existing ``-o`` file without ``-O``."""
    if args.output is not None and args.output.exists() and not args.overwrite:
        raise InputError(f"{args.output} already exists; pass -O/--overwrite to replace it")


def emit(args: argparse.Namespace, text: str, *, private: bool = False) -> None:
    """Print ``text`` (plus a newline) or write it, as is, to ``args.output``.

    ``private`` files (plaintexts) are created with mode 0600.
    """
    if args.output is None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    write_file(args.output, text, overwrite=args.overwrite, private=private)


def write_file(path: Path, text: str, *, overwrite: bool, private: bool = False) -> None:
    """Write ``text`` to ``path``; raise InputError if it exists without ``overwrite``."""
    exists = InputError(f"{path} already exists; pass -O/--overwrite to replace it")
    if private:
        # A plaintext: a fresh 0600 file renamed into place, never an existing file's mode or a
        # symlink's target.
        try:
            written = write_private(path, text.encode("utf-8"), exclusive=not overwrite)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
        if not written:
            raise exists
        return
    try:
        # O_EXCL re-checks at open time, so a file created since the early check is not clobbered.
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        descriptor = os.open(path, flags, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError as exc:
        raise exists from exc
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
