"""Argument types shared by the kamus-cli and kamus-init parsers."""

from __future__ import annotations

import argparse
import math
import os
import sys


def positive_seconds(value: str) -> float:
    """Parse a finite, positive number of seconds; argparse reports anything else (exit 2)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def file_mode(value: str) -> int:
    """Parse an octal permission mode (``0400``, ``400``, ``0o400``) without special bits."""
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"expected an octal mode such as 0400, got {value!r}")
    return mode


def paragraph(text: str) -> str:
    """Wrap a description for parsers whose epilog keeps its own line breaks."""
    import textwrap  # noqa: PLC0415 - see HelpFormatter

    return textwrap.fill(text, width=79)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps one-paragraph texts (descriptions), keeps multi-line ones (examples, exit codes).

    Why not argparse's own: it builds a formatter for every ``add_argument`` and each one imports
    ``shutil`` for the terminal width, and a wrapped description needs ``textwrap`` at start-up;
    kamus-init starts in every pod and prints help almost never. Here the width comes from
    ``$COLUMNS`` or the terminal (as ``shutil.get_terminal_size`` finds it) and wrapping happens
    only when help is printed.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _terminal_columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80
