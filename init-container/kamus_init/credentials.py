"""The service-account token kamus-init presents to the decryptor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kamus_cli.errors import InputError

# A projected token with the `kamus` audience (see the chart) is preferred over the plain pod token.
KAMUS_TOKEN_PATH = Path("/var/run/secrets/kamus/token")
KUBERNETES_TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def token_path(environ: Mapping[str, str]) -> Path:
    """Return $TOKEN_FILE_PATH, else the Kamus projected token if mounted, else the pod token."""
    configured = environ.get("TOKEN_FILE_PATH", "").strip()
    if configured:
        return Path(configured)
    if KAMUS_TOKEN_PATH.exists():
        return KAMUS_TOKEN_PATH
    return KUBERNETES_TOKEN_PATH


def read_token(path: Path) -> str:
    """Return the token in ``path``; read on every attempt because the kubelet rotates it."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the service account token from {path}") from exc
    if not token or not token.isprintable() or any(ch.isspace() for ch in token):
        raise InputError(f"{path} does not hold a bearer token")
    return token
