"""Argument types shared by the kamus-cli and kamus-init parsers."""

from __future__ import annotations

import argparse
import math
import textwrap


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
    return textwrap.fill(text, width=79)
