"""Vault / OpenBao transit engine as the KMS of envelope encryption.

A data key is encrypted by ``POST <mount>/encrypt/<key>`` with the ciphertext header as
``associated_data`` (authenticated by the AEAD key type, aes256-gcm96), and decrypted by
``POST <mount>/decrypt/<key>`` with the same associated data. The wrapped key stored in the
ciphertext is Vault's own ``vault:v<N>:<base64>`` string (ASCII bytes): it names the key version,
so a server-side rotation needs nothing here.

Keys are plain (non-derived) AEAD keys: the header already names namespace and service account and
is authenticated as associated data, so a derivation ``context`` would add nothing, and Vault
silently ignores a context given for a non-derived key, so it could not be relied on anyway.

Transit creates a missing key on encrypt when the token may. Kamus never lets that happen by
accident: before the first encryption with a key it reads the key (shared mode) or creates it on
purpose (per-service-account mode, :meth:`VaultTransitKms.ensure_key`), and checks its type.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]
import requests

from kamus_kms.envelope import RemoteKms
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError

KEY_TYPE = "aes256-gcm96"
# Transit key types that authenticate associated data; any other would refuse it.
AEAD_KEY_TYPES = frozenset({"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305"})
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MOUNT = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
WRAPPED = re.compile(rb"vault:v[1-9][0-9]{0,9}:[A-Za-z0-9+/]+={0,2}")
# Vault prefixes multi-errors with "1 error occurred:"; only the reason helps an operator.
_ERROR_COUNT = re.compile(r"^[0-9]+ errors? occurred: ")
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Action:
    """One kind of Vault call: what it does and the policy capability it needs."""

    verb: str
    capability: str
    path: str


_ENCRYPT = _Action("encrypt with", "`update`", "{mount}/encrypt/{key}")
_DECRYPT = _Action("decrypt with", "`update`", "{mount}/decrypt/{key}")
_READ = _Action("read", "`read`", "{mount}/keys/{key}")
_CREATE = _Action("create", "`create` and `update`", "{mount}/keys/{key}")
_LOOKUP = _Action("look up its token", "`read`", "auth/token/lookup-self")


def _check_key_name(key_name: str) -> None:
    """Raise ConfigurationError unless `key_name` can name a transit key (and a header key id)."""
    if not KEY_NAME.fullmatch(key_name):
        raise ConfigurationError(
            f"{key_name!r} cannot name a Vault transit key: use 1 to 128 characters of "
            "A-Z a-z 0-9 _ . - starting with a letter or digit"
        )


def _vault_message(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own reason, on one short line (it never echoes request data for these calls)."""
    errors = exc.errors if isinstance(exc.errors, list) else [exc.args[0] if exc.args else ""]
    text = " ".join(str(error or "") for error in errors).replace("*", " ")
    text = _ERROR_COUNT.sub("", " ".join(text.split()))
    return text[:200] or type(exc).__name__


class VaultTransitKms(RemoteKms):
    """Data keys wrapped by a Vault or OpenBao transit key."""

    name = "vault"

    def __init__(
        self,
        *,
        addr: str,
        token: str,
        mount: str = "transit",
        ca_cert: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not addr.startswith(("http://", "https://")):
            raise ConfigurationError("KAMUS_VAULT_ADDR must be an http:// or https:// URL")
        if not token:
            raise ConfigurationError("KAMUS_VAULT_TOKEN is empty")
        mount = mount.strip("/")
        if not MOUNT.fullmatch(mount):
            raise ConfigurationError(
                f"KAMUS_VAULT_TRANSIT_MOUNT {mount!r} is not a mount path (A-Z a-z 0-9 _ . - /)"
            )
        if ca_cert is not None and not Path(ca_cert).is_file():
            raise ConfigurationError(f"KAMUS_VAULT_CA_CERT {ca_cert!r} is not a file")
        if not timeout > 0:
            raise ConfigurationError("the Vault timeout must be positive")
        self.addr = addr.rstrip("/")
        self.mount = mount
        self.timeout = timeout
        self._token = token
        self._ca_cert = ca_cert
        # One client per process: gunicorn forks workers after the app is built, and a pooled
        # connection must never be shared across a fork. Swapped as one tuple, so threads racing
        # to create it just build one client too many.
        self._session: tuple[int, Any] | None = None
        # Keys this process has read or created and found usable for encryption.
        self._usable: set[str] = set()

    def check_key_name(self, key_name: str) -> None:
        """Raise ConfigurationError unless `key_name` can name a transit key."""
        _check_key_name(key_name)

    def _client(self) -> Any:
        session = self._session
        if session is None or session[0] != os.getpid():
            client = hvac.Client(
                url=self.addr, token=self._token, verify=self._ca_cert or True,
                timeout=self.timeout,
                # A redirect would carry X-Vault-Token to wherever it points.
                allow_redirects=False,
            )  # fmt: skip
            session = (os.getpid(), client)
            self._session = session
        return session[1]

    def _call(self, action: _Action, key_name: str, call: Callable[[Any], _T]) -> _T:
        path = action.path.format(mount=self.mount, key=key_name)
        try:
            return call(self._client())
        except requests.Timeout as exc:
            raise UnavailableError(
                f"Vault at {self.addr} did not answer within {self.timeout:g} s"
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise UnavailableError(
                f"TLS with Vault at {self.addr} failed: is KAMUS_VAULT_CA_CERT the CA of its "
                "certificate?"
            ) from exc
        except requests.ConnectionError as exc:
            raise UnavailableError(f"cannot connect to Vault at {self.addr}") from exc
        except requests.RequestException as exc:
            raise UnavailableError(
                f"the request to Vault at {self.addr} failed ({type(exc).__name__})"
            ) from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise UnavailableError(
                f"Vault refused to {action.verb} {path}: the token is invalid, expired or revoked, "
                f"or its policy lacks {action.capability} on {path}"
            ) from exc
        except hvac.exceptions.InvalidRequest as exc:
            if action is _DECRYPT:
                # Bad wrapped key, other associated data, a version below min_decryption_version
                # or a key that no longer exists: this ciphertext can never open.
                raise InvalidCiphertextError from exc
            raise UnavailableError(
                f"Vault refused to {action.verb} {path}: {_vault_message(exc)}"
            ) from exc
        except hvac.exceptions.InvalidPath as exc:
            if action is _READ or action is _ENCRYPT:
                message = (
                    f"the transit key {key_name!r} does not exist in the mount {self.mount!r}: "
                    f"create it ({KEY_TYPE}) or fix KAMUS_KMS_KEY"
                )
            else:
                message = f"no transit engine answers at {self.addr}/v1/{path}"
            raise UnavailableError(message) from exc
        except hvac.exceptions.RateLimitExceeded as exc:
            raise UnavailableError(f"Vault at {self.addr} is throttling requests") from exc
        except (hvac.exceptions.VaultDown, hvac.exceptions.VaultNotInitialized) as exc:
            raise UnavailableError(
                f"Vault at {self.addr} is sealed, uninitialized or in standby"
            ) from exc
        except hvac.exceptions.VaultError as exc:
            raise UnavailableError(
                f"Vault at {self.addr} failed to {action.verb} {path} ({type(exc).__name__})"
            ) from exc

    def _data(self, action: _Action, key_name: str, call: Callable[[Any], Any]) -> dict[str, Any]:
        response = self._call(action, key_name, call)
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            path = action.path.format(mount=self.mount, key=key_name)
            raise UnavailableError(f"Vault at {self.addr} gave an unexpected answer on {path}")
        return data

    def _check_usable(self, key_name: str, key: dict[str, Any]) -> None:
        key_type, derived = key.get("type"), key.get("derived")
        if key_type not in AEAD_KEY_TYPES or derived:
            kind = f"{'a derived ' if derived else ''}{key_type}"
            raise UnavailableError(
                f"the transit key {key_name!r} is {kind}: Kamus needs a non-derived {KEY_TYPE} "
                "key (associated data binds each data key to its ciphertext header)"
            )
        self._usable.add(key_name)

    def ensure_key(self, key_name: str) -> None:
        _check_key_name(key_name)
        if key_name in self._usable:
            return
        # Creating a key that exists is a no-op answering with the existing key, and Vault
        # serializes creations of one name: racing replicas all end up with the winner's key.
        key = self._data(
            _CREATE, key_name,
            lambda client: client.secrets.transit.create_key(
                key_name, key_type=KEY_TYPE, mount_point=self.mount
            ),
        )  # fmt: skip
        self._check_usable(key_name, key)

    def wrap(self, key_name: str, data_key: bytes, associated_data: bytes) -> bytes:
        _check_key_name(key_name)
        if key_name not in self._usable:
            # Encrypting with a missing name would make Vault create it (if the token may):
            # a shared key is the operator's to create, so look before the first encryption.
            key = self._data(
                _READ, key_name,
                lambda client: client.secrets.transit.read_key(key_name, mount_point=self.mount),
            )  # fmt: skip
            self._check_usable(key_name, key)
        data = self._data(
            _ENCRYPT, key_name,
            lambda client: client.secrets.transit.encrypt_data(
                key_name,
                plaintext=base64.b64encode(data_key).decode("ascii"),
                associated_data=base64.b64encode(associated_data).decode("ascii"),
                mount_point=self.mount,
            ),
        )  # fmt: skip
        wrapped = data.get("ciphertext")
        if not isinstance(wrapped, str) or not WRAPPED.fullmatch(
            wrapped.encode("ascii", "replace")
        ):
            path = _ENCRYPT.path.format(mount=self.mount, key=key_name)
            raise UnavailableError(f"Vault at {self.addr} gave an unexpected answer on {path}")
        return wrapped.encode("ascii")

    def unwrap(self, key_name: str, wrapped: bytes, associated_data: bytes) -> bytes:
        _check_key_name(key_name)
        if not WRAPPED.fullmatch(wrapped):
            raise InvalidCiphertextError
        data = self._data(
            _DECRYPT, key_name,
            lambda client: client.secrets.transit.decrypt_data(
                key_name,
                ciphertext=wrapped.decode("ascii"),
                associated_data=base64.b64encode(associated_data).decode("ascii"),
                mount_point=self.mount,
            ),
        )  # fmt: skip
        plaintext = data.get("plaintext")
        if not isinstance(plaintext, str):
            raise InvalidCiphertextError
        try:
            return base64.b64decode(plaintext, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCiphertextError from exc

    def check_ready(self) -> None:
        # lookup-self proves both that Vault answers (unsealed) and that the token still works.
        self._data(_LOOKUP, "", lambda client: client.auth.token.lookup_self())
