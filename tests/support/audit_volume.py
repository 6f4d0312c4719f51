"""Ways to make an audit chain unwritable and repair it again, that stop root too (root writes
through any mode bits, but not below a regular file, nor into a folder as if it were a file)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def block_folder(chain: Path) -> None:
    """Put a regular file where the chain's folder was."""
    shutil.move(chain.parent, chain.parent.with_name("moved"))
    chain.parent.write_text("a file where the audit folder was")


def unblock_folder(chain: Path) -> None:
    """Put the chain's folder back, as it was."""
    chain.parent.unlink()
    shutil.move(chain.parent.with_name("moved"), chain.parent)


def block_file(chain: Path) -> None:
    """Put a folder where the chain file was."""
    chain.rename(chain.with_name("moved.jsonl"))
    chain.mkdir()


def unblock_file(chain: Path) -> None:
    """Put the chain file back, as it was."""
    chain.rmdir()
    chain.with_name("moved.jsonl").rename(chain)


Damage = Callable[[Path], None]
# Parametrizes a test's ``damage`` and ``repair`` of the chain at a path (its file written once).
DAMAGES = pytest.mark.parametrize(
    ("damage", "repair"),
    [(block_folder, unblock_folder), (block_file, unblock_file)],
    ids=["folder replaced by a file", "file replaced by a folder"],
)
