"""Reading a bearer token from a file (kamus-init's projected token, kamus-cli's --token-file)."""

from __future__ import annotations

from pathlib import Path

from kamus_client.errors import InputError


def read_token_file(path: Path) -> str:
    """The bearer token held in `path`; re-read on every use, as the kubelet rotates it."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read a service-account token from {path}") from exc
    if not token or not token.isprintable() or any(ch.isspace() for ch in token):
        raise InputError(f"{path} does not hold a bearer token")
    return token
