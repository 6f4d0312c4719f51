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


Damage = Callable[[Path], None]
# Parametrizes a test's ``damage`` and ``repair`` of the chain at a path (its file written once).
# A folder where the chain file was is no such damage: the writer leaves that name for the next
# chain (docs/AUDIT.md), so nothing is refused.
DAMAGES = pytest.mark.parametrize(
    ("damage", "repair"), [(block_folder, unblock_folder)], ids=["folder replaced by a file"]
)
