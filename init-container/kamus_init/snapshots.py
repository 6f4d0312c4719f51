"""Publishing a set of files as one atomic snapshot, the way the kubelet updates a ConfigMap volume.

    /decrypted/..2026_12_02_10_00_00.1f2e3d4c/   the files of one snapshot
    /decrypted/..data -> ..2026_12_02_10_00_00.1f2e3d4c
    /decrypted/<name> -> ..data/<name>

A new snapshot is written whole (every file fsynced, with its mode) before one ``rename`` of a
``..data`` symlink switches readers to it, so a reader that resolves ``..data`` once sees all old or
all new files, never a mix and never a half-written file; the visible names are symlinks through
``..data``, created once and kept. The snapshot just replaced stays a few seconds
(``PREVIOUS_KEPT_SECONDS``, removed by :func:`prune`), so a reader that resolved ``..data`` before
the switch can finish reading a whole set: removing it at once would let such a reader list a
half-deleted folder, and keeping it longer would keep replaced secrets around.
``kamus-init --watch`` publishes this way (docs/CLI.md).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from kamus_client.errors import OutputError

DATA = "..data"
PREVIOUS_KEPT_SECONDS = 5.0
_SNAPSHOT = "..2"  # ..<year>_...: a snapshot folder (not ..data)


def publish(directory: Path, files: Mapping[str, bytes], *, mode: int) -> None:
    """Write ``files`` as a new snapshot of ``directory`` and switch to it; OutputError else."""
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        snapshot = directory / f"..{stamp}.{os.urandom(4).hex()}"
        snapshot.mkdir(mode=0o755)
        for name, content in files.items():
            fd = os.open(snapshot / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fchmod(stream.fileno(), mode)
                os.fsync(stream.fileno())
        _fsync(snapshot)
        previous = os.readlink(directory / DATA) if (directory / DATA).is_symlink() else None
        _replace_link(directory / DATA, snapshot.name)
        for name in files:
            link = directory / name
            if not (link.is_symlink() and os.readlink(link) == f"{DATA}/{name}"):
                _replace_link(link, f"{DATA}/{name}")
        for entry in directory.iterdir():
            # Names of an earlier snapshot that this one no longer has.
            dropped = entry.name not in files
            if dropped and entry.is_symlink() and os.readlink(entry).startswith(f"{DATA}/"):
                entry.unlink()
        _remove_snapshots(directory, keep={snapshot.name, previous})
        _fsync(directory)
    except OSError as exc:
        raise OutputError(f"cannot publish into {directory}: {exc.strerror}") from exc


def _replace_link(path: Path, target: str) -> None:
    temporary = path.with_name(f"{path.name}.{os.urandom(4).hex()}.tmp")
    os.symlink(target, temporary)
    os.replace(temporary, path)  # atomic: readers see the old link or the new one


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(directory: Path, *, grace: float = PREVIOUS_KEPT_SECONDS,
          now: Callable[[], float] = time.time) -> None:  # fmt: skip
    """Remove every snapshot but the current one, once ``..data`` switched ``grace`` seconds ago."""
    try:
        switched = (directory / DATA).lstat().st_mtime
        current = os.readlink(directory / DATA)
    except OSError:
        return  # nothing published yet
    if now() - switched < grace:
        return
    _remove_snapshots(directory, keep={current})


def _remove_snapshots(directory: Path, *, keep: set[str | None]) -> None:
    for entry in directory.iterdir():
        if entry.name.startswith(_SNAPSHOT) and entry.name not in keep and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
