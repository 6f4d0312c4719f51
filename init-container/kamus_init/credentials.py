"""The service-account token kamus-init presents to the decryptor."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kamus_client import environment

# The projected token with the `kamus` audience. There is deliberately no fallback to the pod's
# default token: that one is valid against the Kubernetes API itself, and must not be sent to the
# decryptor (possibly over plain http) unless an operator asks for it with TOKEN_FILE_PATH.
KAMUS_TOKEN_PATH = Path("/var/run/secrets/kamus/token")


def token_path(environ: Mapping[str, str]) -> Path:
    """Return $TOKEN_FILE_PATH, else the Kamus projected token path."""
    configured = environment.value(environment.TOKEN_FILE, environ)
    return Path(configured) if configured else KAMUS_TOKEN_PATH
