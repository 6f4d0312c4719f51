"""The local keyring and the audit key from settings, generated in development mode only."""

from __future__ import annotations

import base64
import logging
import os
import stat
import sys
from pathlib import Path

from kamus_kms.errors import ConfigurationError
from kamus_kms.keyring import Keyring
from kamus_kms.privatefile import write_private
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_service.settings import Settings

log = logging.getLogger("kamus.keys")


def _warn_dev(what: str, path: Path, *, created: bool) -> None:
    """Say so, truthfully: every process logs it; only the one that made the key shouts it."""
    done = "generated a new" if created else "using the"
    message = (
        f"DEVELOPMENT MODE: {done} {what} {'into' if created else 'in'} {path}. Never run "
        "development mode in production."
    )
    log.warning(message)
    if created:
        print(f"\n*** {message} ***\n", file=sys.stderr, flush=True)


def create_dev_file(path: Path, content: bytes) -> bool:
    """Create a development key file once (True); an existing one is used only if it is plainly
    ours (False).

    Workers and services of one `kamus-dev up` share the files; anything else at that path (a
    symlink, another user's file, a readable mode) could be a key someone planted, so it stops
    the start instead of being trusted.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if write_private(path, content, exclusive=True):
        return True
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigurationError(
            f"{path} exists but is not a private regular file of this user (mode 0600); "
            "remove it or use another KAMUS_DEV_DIR"
        )
    return False


def dev_keyring(path: Path) -> bool:
    """Make the development keyring at ``path`` unless it exists; whether it was made."""
    return create_dev_file(path, Keyring.generate().to_json().encode("utf-8"))


def dev_audit_key(path: Path) -> bool:
    """Make the development audit key at ``path`` unless it exists; whether it was made."""
    # Base64 text, like KAMUS_AUDIT_KEY, so `kamus-audit --key-file` reads the same file.
    return create_dev_file(path, base64.b64encode(os.urandom(32)) + b"\n")


def local_provider(settings: Settings) -> LocalKeyringProvider:
    """The local keyring provider; ConfigurationError when the keyring is missing or invalid."""
    if settings.keyring is not None:
        return LocalKeyringProvider(Keyring.from_json(settings.keyring))
    if not settings.dev_mode:
        raise ConfigurationError(
            "KAMUS_KEYRING or KAMUS_KEYRING_FILE is required (no default keys)"
        )
    path = settings.dev_dir / "keyring.json"
    created = dev_keyring(path)
    _warn_dev("keyring (anyone with this file can decrypt every secret)", path, created=created)
    return LocalKeyringProvider(Keyring.load(path))


def audit_key_from_settings(settings: Settings) -> bytes:
    """The key of ciphertext fingerprints in audit events (generated only in development mode)."""
    if settings.audit_key is not None:
        return settings.audit_key
    if not settings.dev_mode:
        raise ConfigurationError(
            "KAMUS_AUDIT_KEY or KAMUS_AUDIT_KEY_FILE is required (no default keys)"
        )
    path = settings.dev_dir / "audit.key"
    _warn_dev("audit key", path, created=dev_audit_key(path))
    return base64.b64decode(path.read_bytes().strip())
