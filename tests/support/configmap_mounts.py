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
