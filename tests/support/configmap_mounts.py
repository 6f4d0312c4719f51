"""What kamus-init tests lay out: ConfigMap-like mounts and an echoing decryptor."""

from __future__ import annotations

from pathlib import Path

from canned_server import Recorded, Reply, json_reply

PREFIX = "kamus:v1:team-a:api:k1:local:"
TOKEN = "eyJ-token-SENTINEL-1"


def echo(recorded: Recorded) -> Reply:
    """Decrypt like a decryptor whose plaintext is the ciphertext without its prefix."""
    items = recorded.body["items"]
    return json_reply(200, {"items": {k: v.removeprefix(PREFIX) for k, v in items.items()}})


def configmap_folder(folder: Path, data: dict[str, str]) -> Path:
    """Lay ``data`` out as the kubelet mounts a ConfigMap: keys are symlinks into ``..data``."""
    version = folder / "..2024_05_01_10_00_00.123456789"
    version.mkdir(parents=True)
    for key, value in data.items():
        (version / key).write_text(value)
    (folder / "..data").symlink_to(version.name)
    for key in data:
        (folder / key).symlink_to(Path("..data") / key)
    return folder


def kubelet_update(folder: Path, data: dict[str, str]) -> None:
    """Update a volume made by ``configmap_folder`` as the kubelet's AtomicWriter does.

    A new timestamped directory with every key, a ``..data_tmp`` symlink to it renamed over
    ``..data`` (the one atomic step), then the visible key symlinks added or removed, then the old
    directory removed. ConfigMap, Secret and projected (service-account token) volumes all work so.
    """
    import os  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import time  # noqa: PLC0415

    old = os.readlink(folder / "..data")
    version = folder / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.perf_counter_ns()}"
    version.mkdir()
    for key, value in data.items():
        (version / key).write_text(value)
    (folder / "..data_tmp").symlink_to(version.name)
    os.rename(folder / "..data_tmp", folder / "..data")
    for key in data:
        if not (folder / key).is_symlink():
            (folder / key).symlink_to(Path("..data") / key)
    for entry in folder.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in data:
            entry.unlink()
    shutil.rmtree(folder / old)
