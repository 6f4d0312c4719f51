"""Publishing a set of files as one atomic snapshot, the way the kubelet updates a ConfigMap volume.

    /decrypted/..2026_12_02_10_00_00.1f2e3d4c/   the files of one snapshot
    /decrypted/..data -> ..2026_12_02_10_00_00.1f2e3d4c
    /decrypted/<name> -> ..data/<name>

A new snapshot is written whole (every file fsynced, with its mode) before one ``rename`` of a
``..data`` symlink switches readers to it; the visible names are symlinks through ``..data``,
created once and kept. The files of a snapshot never change after the switch. What a reader may
assume (docs/CLI.md, like the kubelet's AtomicWriter): a set read through one resolution of
``..data`` (its target read once, or the folder opened once) is all old or all new; names opened
one by one through ``..data`` or the visible links may straddle a switch.

A replaced snapshot stays ``PREVIOUS_KEPT_SECONDS`` after it was replaced (its folder's mtime is
set at the switch; :func:`prune` removes it later), however often snapshots are published, so a
reader that resolved ``..data`` before a switch can finish reading a whole set; keeping it longer
would keep replaced secrets around. A publication that fails leaves the folder as it was: the
current snapshot, those still in their grace period, and nothing of the failed one.
``kamus-init --watch`` publishes this way (docs/CLI.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from kamus_client.errors import OutputError
from kamus_init.outputs import prepare_folder

DATA = "..data"
PREVIOUS_KEPT_SECONDS = 5.0
_SNAPSHOT = "..2"  # ..<year>_...: a snapshot folder (not ..data)


def publish(
    directory: Path, files: Mapping[str, bytes], *, mode: int, now: Callable[[], float] = time.time
) -> None:
    """Write ``files`` as a new snapshot of ``directory`` and switch to it; OutputError else,
    with ``directory`` left as it was."""
    created = not directory.exists()
    prepare_folder(directory, files)
    previous = os.readlink(directory / DATA) if (directory / DATA).is_symlink() else None
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now()))
    snapshot = directory / f"..{stamp}.{os.urandom(4).hex()}"
    added: list[Path] = []
    switched = False
    try:
        snapshot.mkdir(mode=_folder_mode(mode))
        for name, content in files.items():
            fd = os.open(snapshot / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as stream:
                stream.write(content)
                stream.flush()
                os.fchmod(stream.fileno(), mode)
                os.fsync(stream.fileno())
        _fsync(snapshot)
        _replace_link(directory, DATA, snapshot.name)
        switched = True
        if previous is not None:
            _mark_replaced(directory / previous, now())
        for name in files:
            link = directory / name
            if not (link.is_symlink() and os.readlink(link) == f"{DATA}/{name}"):
                existed = link.is_symlink() or link.exists()
                _replace_link(directory, name, f"{DATA}/{name}")
                if not existed:
                    added.append(link)
    except OSError as exc:
        _roll_back(directory, snapshot=snapshot, previous=previous if switched else None,
                   added=added, created=created, switched=switched)  # fmt: skip
        raise OutputError(f"cannot publish into {directory}: {exc.strerror}") from exc
    # Published: what follows only tidies up, and a failure there changes nothing readers see.
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            # Names of an earlier snapshot that this one no longer has.
            dropped = entry.name not in files
            if dropped and entry.is_symlink() and os.readlink(entry).startswith(f"{DATA}/"):
                entry.unlink()
        prune(directory, now=now)
        _fsync(directory)


def _mark_replaced(snapshot: Path, when: float) -> None:
    with contextlib.suppress(OSError):  # gone already: nothing for prune to wait for
        os.utime(snapshot, (when, when), follow_symlinks=False)


def _folder_mode(file_mode: int) -> int:
    # Whoever may read the files may enter their folder (a group with --file-mode 0440); no one
    # else may list the names.
    readers = file_mode & 0o044
    return 0o700 | readers | (readers >> 2)


def _roll_back(
    directory: Path,
    *,
    snapshot: Path,
    previous: str | None,
    added: list[Path],
    created: bool,
    switched: bool,
) -> None:
    """Undo a publication that failed halfway, as far as the filesystem lets us."""
    with contextlib.suppress(OSError):
        if previous is not None:
            _replace_link(directory, DATA, previous)
        elif switched:
            (directory / DATA).unlink(missing_ok=True)
        for link in added:
            link.unlink(missing_ok=True)
    shutil.rmtree(snapshot, ignore_errors=True)
    if created:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _replace_link(directory: Path, name: str, target: str) -> None:
    # A short hidden temporary name: a name of up to 255 bytes must not overflow it.
    temporary = directory / f".kamus-{os.urandom(8).hex()}.tmp"
    os.symlink(target, temporary)
    try:
        os.replace(temporary, directory / name)  # atomic: readers see the old link or the new one
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(directory: Path, *, grace: float = PREVIOUS_KEPT_SECONDS,
          now: Callable[[], float] = time.time) -> None:  # fmt: skip
    """Remove every snapshot but the current one that was replaced ``grace`` seconds ago or more
    (a folder never switched to, left by a crash, counts from its last write)."""
    try:
        current = os.readlink(directory / DATA)
        listed = list(directory.iterdir())
    except OSError:
        return  # nothing published yet
    for entry in listed:
        if not entry.name.startswith(_SNAPSHOT) or entry.name == current:
            continue
        try:
            expired = entry.is_dir() and now() - entry.lstat().st_mtime >= grace
        except OSError:
            continue
        if expired:
            shutil.rmtree(entry, ignore_errors=True)
