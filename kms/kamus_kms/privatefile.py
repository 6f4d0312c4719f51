"""Writing files that hold keys: private (0600), atomic, never through a planted temp or symlink."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path: Path, content: bytes, *, exclusive: bool = False) -> bool:
    """Write `content` to `path` with mode 0600, atomically.

    The content goes to a fresh temporary file (mkstemp: O_EXCL, unpredictable name, 0600) in the
    same folder, is fsynced, and only then takes the final name. With `exclusive`, an existing
    `path` is left alone and False is returned, so concurrent writers agree on one file and no
    reader ever sees a half-written one. Returns True when this call wrote `path`.
    """
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(temp, path)
            except FileExistsError:
                return False
        else:
            temp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return True
