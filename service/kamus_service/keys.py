"""Building the key provider and the audit key from settings (development mode included)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from kamus_kms.keyring import Keyring
from kamus_kms.provider import KeyProvider
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.sealer import Sealer
from kamus_service.settings import Settings

log = logging.getLogger("kamus.keys")

_DEV_WARNING = (
    "DEVELOPMENT MODE: using the {what} generated into {path}. Never run development mode in "
    "production."
)


def _warn_dev(what: str, path: Path) -> None:
    message = _DEV_WARNING.format(what=what, path=path)
    log.warning(message)
    print(f"\n*** {message} ***\n", file=sys.stderr, flush=True)


def provider_from_settings(settings: Settings) -> KeyProvider:
    """The configured provider; ConfigurationError when its keys are missing or invalid."""
    if settings.keyring is not None:
        return LocalKeyringProvider(Keyring.from_json(settings.keyring))
    path = settings.dev_dir / "keyring.json"
    create_once(path, Keyring.generate().to_json().encode("utf-8"))
    _warn_dev("keyring (anyone with this file can decrypt every secret)", path)
    return LocalKeyringProvider(Keyring.load(path))


def sealer_from_settings(settings: Settings, provider: KeyProvider) -> Sealer:
    """A sealer with the configured size limit and padding."""
    return Sealer(
        provider,
        max_plaintext=settings.max_plaintext_bytes,
        padding_bucket=settings.padding_bucket,
    )


def audit_key_from_settings(settings: Settings) -> bytes:
    """The key of ciphertext fingerprints in audit events (generated only in development mode)."""
    if settings.audit_key is not None:
        return settings.audit_key
    path = settings.dev_dir / "audit.key"
    create_once(path, os.urandom(32))
    _warn_dev("audit fingerprint key", path)
    return path.read_bytes()


def create_once(path: Path, content: bytes) -> bool:
    """Create `path` (mode 0600) holding `content` unless it exists; True when this call did.

    The content is written to a private temporary file first and then hard-linked into place, so
    gunicorn workers starting together agree on one file and never read a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink()
    return True
