"""Writing the output files atomically: all of them or none."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kamus_client.errors import OutputError


def prepare_folder(directory: Path, files: Mapping[str, bytes]) -> None:
    """Make ``directory`` (0700) and check no name of ``files`` is a folder there; OutputError."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {directory}: {exc.strerror}") from exc
    for name in files:
        if (directory / name).is_dir() and not (directory / name).is_symlink():
            raise OutputError(f"{directory / name} is a directory; it cannot be replaced")


def write_atomically(directory: Path, files: Mapping[str, bytes], *, mode: int) -> None:
    """Write every ``{name: content}`` into ``directory`` with ``mode``, or none; OutputError.

    Each file goes to a hidden temp file in ``directory`` first (same filesystem, so the rename
    is atomic); only when all are written are they renamed into place. A rename replaces a
    symlink at the target rather than following it.
    """
    prepare_folder(directory, files)
    pending: list[tuple[Path, Path]] = []
    try:
        for name, content in files.items():
            temp = directory / f".kamus-{os.urandom(8).hex()}.tmp"
            # O_EXCL: a fresh file of ours, never one planted under that name (no tempfile
            # module: its import costs a few ms at every pod start for the same guarantee).
            handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            pending.append((temp, directory / name))
            with os.fdopen(handle, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fchmod(stream.fileno(), mode)
                os.fsync(stream.fileno())
        for temp, target in pending:
            os.replace(temp, target)
    except OSError as exc:
        for temp, _ in pending:
            temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write into {directory}: {exc.strerror}") from exc
