"""The service-account token kamus-init presents to the decryptor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kamus_cli.errors import InputError

# The projected token with the `kamus` audience. There is deliberately no fallback to the pod's
# default token: that one is valid against the Kubernetes API itself, and must not be sent to the
# decryptor (possibly over plain http) unless an operator asks for it with TOKEN_FILE_PATH.
KAMUS_TOKEN_PATH = Path("/var/run/secrets/kamus/token")


def token_path(environ: Mapping[str, str]) -> Path:
    """Return $TOKEN_FILE_PATH, else the Kamus projected token path."""
    configured = environ.get("TOKEN_FILE_PATH", "").strip()
    return Path(configured) if configured else KAMUS_TOKEN_PATH


def read_token(path: Path) -> str:
    """Return the token in ``path``; read on every attempt because the kubelet rotates it."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the service account token from {path}") from exc
    if not token or not token.isprintable() or any(ch.isspace() for ch in token):
        raise InputError(f"{path} does not hold a bearer token")
    return token
