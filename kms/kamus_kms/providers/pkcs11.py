"""PKCS#11 HSM adapter (tested with SoftHSM2): AES-256 keys on a token wrap the data keys.

Mechanism: the HSM encrypts the data key with CKM_AES_GCM under the key, with the ciphertext
header as additional authenticated data, so a wrapped key only opens under the header it was made
for. CKM_AES_KEY_WRAP(_PAD) takes no associated data, so it could not bind the header. The wrapped
blob is::

    mechanism(1) = 0x01 || len(cka_id)(1) || cka_id || nonce(12) || AES-GCM(data key) || tag(16)

and the GCM associated data is ``mechanism || len(cka_id) || cka_id || header``: the recorded key
version is authenticated too. The mechanism byte lets a later release change the mechanism while
old blobs keep opening.

Keys: AES-256 secret keys on the token, CKA_LABEL = the key name (the header's key id), CKA_ID =
u32be(version) || 8 random bytes; token objects, private, sensitive, never extractable, with
CKA_ENCRYPT and CKA_DECRYPT only. Wrap uses the highest version of the label; equal versions (two
replicas creating or rotating one key at once) go to the bytewise-lowest CKA_ID, so every process
picks the same key. Unwrap uses the exact CKA_ID recorded in the blob, so each version keeps
opening its ciphertexts. Rotation adds a key with the same label and the next version.

Sessions: python-pkcs11 calls C_Initialize without locking arguments, which promises the module
that the application never calls it from two threads at once (SoftHSM2 then turns its own mutexes
off), so every call into one module is serialized by a lock per process. One logged-in session per
token and process is opened lazily; a forked child initializes the module again and opens its own.
After a token failure the module is finalized and initialized again on the next call: SoftHSM2
(like some network HSM clients) does not get a lost token back otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pkcs11
from pkcs11.constants import Attribute, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    DataInvalid,
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    MechanismInvalid,
    MultipleTokensReturned,
    NoSuchToken,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    SessionReadOnly,
    TokenWriteProtected,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
)
from pkcs11.mechanisms import GCMParams, KeyType, Mechanism
from pkcs11.types import DecryptMixin, EncryptMixin, Object, Session, Slot, Token

from kamus_kms.ciphertext import KEY_ID
from kamus_kms.envelope import RemoteKms
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

NAME = "pkcs11"
AES_GCM_TAG = 0x01
NONCE_BYTES = 12
GCM_TAG_BYTES = 16
_VERSION = struct.Struct(">I")
_ID_RANDOM_BYTES = 8
_MAX_ID_BYTES = 64
_TOKEN_LABEL_BYTES = 32
# A call that waits this long for the module lock is answered 503 instead of piling up threads.
_BUSY_SECONDS = 10.0
# What a module answers when GCM authentication fails: EncryptedDataInvalid per the standard,
# GeneralError from SoftHSM2. Each is taken as a refusal only after the token proves healthy.
_REFUSED = (
    EncryptedDataInvalid, EncryptedDataLenRange, DataInvalid, DataLenRange, GeneralError,
    FunctionFailed,
)  # fmt: skip
# The token checked the PIN and said no: never sent again (UserPinNotInitialized is not here: no
# PIN was checked, and SoftHSM2 says it when it misreads a token file another process writes).
_PIN_REFUSED = (PinIncorrect, PinInvalid, PinLenRange, PinLocked, PinExpired)
_LOOK_AGAIN_SECONDS = (0.02, 0.05, 0.1, 0.2)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A parsed wrapped blob (layout in the module docstring)."""

    key_id: bytes
    nonce: bytes
    sealed: bytes

    @property
    def version(self) -> int:
        """The key version that wrapped it."""
        return int(_VERSION.unpack_from(self.key_id)[0])

    def encode(self) -> bytes:
        """The blob bytes."""
        return _prefix(self.key_id) + self.nonce + self.sealed

    @classmethod
    def parse(cls, blob: bytes) -> WrappedKey:
        """Parse a blob; anything malformed raises InvalidCiphertextError."""
        if len(blob) < 2 or blob[0] != AES_GCM_TAG:
            raise InvalidCiphertextError
        id_end = 2 + blob[1]
        key_id = blob[2:id_end]
        if not _VERSION.size <= len(key_id) <= _MAX_ID_BYTES:
            raise InvalidCiphertextError
        if len(blob) < id_end + NONCE_BYTES + GCM_TAG_BYTES:
            raise InvalidCiphertextError
        return cls(key_id, blob[id_end : id_end + NONCE_BYTES], blob[id_end + NONCE_BYTES :])


def _prefix(key_id: bytes) -> bytes:
    """Mechanism, CKA_ID length and CKA_ID: the blob's preamble, also authenticated."""
    return bytes((AES_GCM_TAG, len(key_id))) + key_id


def wrapped_key_version(blob: bytes) -> int:
    """The key version recorded in a wrapped blob (InvalidCiphertextError when malformed)."""
    return WrappedKey.parse(blob).version


def _describe(exc: PKCS11Error) -> str:
    detail = str(exc)
    if "0x68" in detail:
        return "CKR_KEY_FUNCTION_NOT_PERMITTED: the key must have CKA_ENCRYPT and CKA_DECRYPT"
    if isinstance(exc, MechanismInvalid):
        return "MechanismInvalid: the token must support CKM_AES_GCM"
    if isinstance(exc, TokenWriteProtected | SessionReadOnly):
        return (f"{type(exc).__name__}: creating keys (per-service-account mode, rotation) needs "
                "a writable token and a read/write session")  # fmt: skip
    if isinstance(exc, UserNotLoggedIn):
        return "UserNotLoggedIn: the session is not logged in as the token user"
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


# The pid that last initialized each module path: a module inherited over fork() must be
# initialized again in the child before any use.
_INITIALIZED_IN: dict[str, int] = {}


class _Module:
    """One PKCS#11 module (shared library) in this process; its lock serializes every call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.generation = 0
        self.needs_reset = False
        self._lib: Library | None = None

    def lib(self) -> Library:
        """The initialized module (call with the lock held)."""
        if self._lib is not None and not self.needs_reset:
            return self._lib
        lib = pkcs11.lib(self.path)
        pid = os.getpid()
        if self.needs_reset or _INITIALIZED_IN.get(self.path, pid) != pid:
            # Sessions of the previous generation die with C_Finalize, even if C_Initialize fails.
            self.generation += 1
            with contextlib.suppress(PKCS11Error):
                lib.finalize()
            lib.initialize()
        _INITIALIZED_IN[self.path] = pid
        self.needs_reset = False
        self._lib = lib
        return lib


class _Token:
    """The one logged-in session of a token in this process, shared by its adapters."""

    def __init__(self, module: _Module, label: str, pin: str) -> None:
        self.module = module
        self.label = label
        self.pin_digest = hashlib.sha256(pin.encode()).digest()
        self._pin = pin
        self._session: Session | None = None
        self._slot: Slot | None = None
        self._generation = -1
        # Once the token refuses the PIN it is never sent again: retries would lock the token.
        self.pin_refused: str | None = None

    def session(self) -> Session:
        """The logged-in session, opened on first use (call with the module lock held)."""
        lib = self.module.lib()
        if self._session is not None and self._generation == self.module.generation:
            return self._session
        if self.pin_refused:
            raise UnavailableError(
                f"the PKCS#11 token {self.label!r} refused the PIN ({self.pin_refused}); fix "
                "KAMUS_PKCS11_PIN and restart: the PIN is not retried, so the token is not locked"
            )
        token = self._find(lib)
        try:
            session = token.open(user_pin=self._pin, rw=True)
        except UserAlreadyLoggedIn:
            # Login state is per application: something else in this process logged in already.
            session = token.open(rw=True)
        except _PIN_REFUSED as exc:
            self.pin_refused = type(exc).__name__
            raise
        self._session, self._slot, self._generation = session, token.slot, self.module.generation
        return session

    def _find(self, lib: Library) -> Token:
        # SoftHSM2 rewrites its token file on every login; a process that initializes the module
        # meanwhile sees a token without a label until it initializes again. So a token must be
        # missing on a few looks, each after a restart of the module, to count as missing.
        for pause in _LOOK_AGAIN_SECONDS:
            try:
                return lib.get_token(token_label=self.label)
            except NoSuchToken:
                time.sleep(pause)
                self.module.needs_reset = True
                lib = self.module.lib()
        return lib.get_token(token_label=self.label)

    def probe(self) -> None:
        """Raise PKCS11Error unless the token answers C_GetTokenInfo."""
        assert self._slot is not None
        self._slot.get_token()

    def failed(self, exc: PKCS11Error, action: str) -> UnavailableError:
        """The UnavailableError for `exc`; the module restarts on the next call."""
        if not isinstance(exc, _PIN_REFUSED):
            self.module.needs_reset = True
        return UnavailableError(
            f"the PKCS#11 token {self.label!r} cannot {action} ({_describe(exc)})"
        )


class _Process:
    """The modules and tokens of this process; replaced in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.guard = threading.Lock()
        self.modules: dict[str, _Module] = {}
        self.tokens: dict[tuple[str, str], _Token] = {}

    def token(self, library: str, label: str, pin: str) -> _Token:
        """The token `label` of module `library`, created on first use."""
        with self.guard:
            token = self.tokens.get((library, label))
            if token is None:
                module = self.modules.setdefault(library, _Module(library))
                token = self.tokens[(library, label)] = _Token(module, label, pin)
            elif not hmac.compare_digest(token.pin_digest, hashlib.sha256(pin.encode()).digest()):
                raise ConfigurationError(
                    f"this process already uses the PKCS#11 token {label!r} with another PIN "
                    "(PKCS#11 login is per process)"
                )
            return token


_PROCESS = _Process()


def _process() -> _Process:
    global _PROCESS  # noqa: PLW0603
    if _PROCESS.pid != os.getpid():
        _PROCESS = _Process()
    return _PROCESS


def _forget_parent_state() -> None:
    global _PROCESS  # noqa: PLW0603
    _PROCESS = _Process()


# gunicorn forks workers after building the app: no session or lock crosses a fork.
os.register_at_fork(after_in_child=_forget_parent_state)


def _check_module(library: str) -> None:
    if not Path(library).is_file():
        raise ConfigurationError(f"KAMUS_PKCS11_LIBRARY: no PKCS#11 module at {library}")
    try:
        handle = ctypes.CDLL(library)
    except OSError as exc:
        raise ConfigurationError(
            f"KAMUS_PKCS11_LIBRARY: cannot load the PKCS#11 module {library}: {exc}"
        ) from exc
    if not hasattr(handle, "C_GetFunctionList"):
        raise ConfigurationError(f"KAMUS_PKCS11_LIBRARY: {library} is not a PKCS#11 module")


def _check_key_name(key_name: str) -> None:
    if not KEY_ID.fullmatch(key_name):
        raise ConfigurationError(f"{key_name!r} is not a valid key name (CKA_LABEL) for Kamus")


class Pkcs11Kms(RemoteKms):
    """Wraps data keys with AES-256-GCM inside a PKCS#11 token."""

    name = NAME

    def __init__(self, *, library: str, token_label: str, pin: str) -> None:
        if not 1 <= len(token_label.encode()) <= _TOKEN_LABEL_BYTES:
            raise ConfigurationError("KAMUS_PKCS11_TOKEN_LABEL must be 1 to 32 bytes long")
        if not pin:
            raise ConfigurationError("KAMUS_PKCS11_PIN is empty")
        _check_module(library)
        self.library = library
        self.token_label = token_label
        self._pin = pin
        self._build_check()

    def __repr__(self) -> str:
        return f"Pkcs11Kms(library={self.library!r}, token_label={self.token_label!r})"

    def _token(self) -> _Token:
        return _process().token(self.library, self.token_label, self._pin)

    def _build_check(self) -> None:
        """Open this process's session now, so a wrong token or PIN stops the start.

        Anything else (device errors, a token that is briefly gone) only makes calls answer
        UnavailableError until the token is back: readiness reports it.
        """
        token = self._token()
        with token.module.lock:
            try:
                token.session()
            except NoSuchToken as exc:
                raise ConfigurationError(
                    f"KAMUS_PKCS11_TOKEN_LABEL: no token labelled {self.token_label!r} in "
                    f"{self.library} (tokens present: {self._labels(token)})"
                ) from exc
            except MultipleTokensReturned as exc:
                raise ConfigurationError(
                    f"KAMUS_PKCS11_TOKEN_LABEL: several tokens are labelled {self.token_label!r}"
                ) from exc
            except _PIN_REFUSED as exc:
                raise ConfigurationError(
                    f"KAMUS_PKCS11_PIN: the token {self.token_label!r} refused the PIN "
                    f"({type(exc).__name__})"
                ) from exc
            except PKCS11Error:
                token.module.needs_reset = True

    @staticmethod
    def _labels(token: _Token) -> str:
        try:
            labels = sorted(t.label for t in token.module.lib().get_tokens())
        except PKCS11Error:
            return "unknown"
        return ", ".join(repr(label) for label in labels) or "none"

    def _call(self, action: str, operation: Callable[[_Token, Session], _T]) -> _T:
        token = self._token()
        if not token.module.lock.acquire(timeout=_BUSY_SECONDS):
            raise UnavailableError(
                f"the PKCS#11 module is busy: no answer within {_BUSY_SECONDS:g} s"
            )
        try:
            try:
                return operation(token, token.session())
            except _PIN_REFUSED as exc:
                raise token.failed(exc, action) from exc
            except PKCS11Error as exc:
                # Once more on a restarted module and a new session: a network HSM that failed
                # over drops its sessions, and SoftHSM2 misreads a token file another process is
                # writing. Repeating is harmless (at worst a rotation adds one version more).
                token.failed(exc, action)
            try:
                return operation(token, token.session())
            except PKCS11Error as exc:
                raise token.failed(exc, action) from exc
        finally:
            token.module.lock.release()

    def _versions(self, session: Session, key_name: str) -> list[tuple[int, bytes, Object]]:
        template = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.LABEL: key_name,
        }
        found = []
        for key in list(session.get_objects(template)):
            key_id = bytes(key[Attribute.ID])
            if _VERSION.size <= len(key_id) <= _MAX_ID_BYTES:
                found.append((int(_VERSION.unpack_from(key_id)[0]), key_id, key))
        return found

    def _missing(self, token: _Token, key_name: str) -> UnavailableError:
        # A token that lost its objects answers "nothing found": ask it whether it is well first.
        token.probe()
        return UnavailableError(
            f"the PKCS#11 token {self.token_label!r} holds no AES key labelled {key_name!r} with "
            "a CKA_ID of at least 4 bytes (the version, big-endian, comes first)"
        )

    def _current(self, token: _Token, session: Session, key_name: str) -> tuple[bytes, Object]:
        versions = self._versions(session, key_name)
        if not versions:
            raise self._missing(token, key_name)
        newest = max(version for version, _, _ in versions)
        _, key_id, key = min((v for v in versions if v[0] == newest), key=lambda v: v[1])
        return key_id, key

    def wrap(self, key_name: str, data_key: bytes, associated_data: bytes) -> bytes:
        _check_key_name(key_name)

        def run(token: _Token, session: Session) -> bytes:
            key_id, key = self._current(token, session, key_name)
            if not isinstance(key, EncryptMixin):
                raise UnavailableError(f"the PKCS#11 key {key_name!r} lacks CKA_ENCRYPT")
            nonce = os.urandom(NONCE_BYTES)
            params = GCMParams(nonce, _prefix(key_id) + associated_data)
            sealed = key.encrypt(data_key, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            assert isinstance(sealed, bytes)
            return WrappedKey(key_id, nonce, sealed).encode()

        return self._call(f"wrap with key {key_name!r}", run)

    def unwrap(self, key_name: str, wrapped: bytes, associated_data: bytes) -> bytes:
        _check_key_name(key_name)
        blob = WrappedKey.parse(wrapped)

        def run(token: _Token, session: Session) -> bytes:
            template = {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.LABEL: key_name,
                Attribute.ID: blob.key_id,
            }
            keys = list(session.get_objects(template))
            if not keys:
                if not self._versions(session, key_name):
                    raise self._missing(token, key_name)
                raise InvalidCiphertextError  # no such version: tampered, or destroyed
            key = keys[0]
            if not isinstance(key, DecryptMixin):
                raise UnavailableError(f"the PKCS#11 key {key_name!r} lacks CKA_DECRYPT")
            params = GCMParams(blob.nonce, _prefix(blob.key_id) + associated_data)
            try:
                data_key = key.decrypt(
                    blob.sealed, mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            except _REFUSED as exc:
                token.probe()
                raise InvalidCiphertextError from exc
            assert isinstance(data_key, bytes)
            return data_key

        return self._call(f"unwrap with key {key_name!r}", run)

    def _generate(self, token: _Token, session: Session, key_name: str, version: int) -> None:
        session.generate_key(
            KeyType.AES, 256, id=_VERSION.pack(version) + os.urandom(_ID_RANDOM_BYTES),
            label=key_name, store=True, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={
                Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.SIGN: False,
                Attribute.VERIFY: False, Attribute.DERIVE: False,
            },
        )  # fmt: skip
        # SoftHSM2's file store can hide a key another process created at the same moment from
        # this one until the module starts again: restart it, so racing replicas see each other's
        # keys and pick the same one.
        token.module.needs_reset = True

    def ensure_key(self, key_name: str) -> None:
        # No atomic create-if-absent in PKCS#11: racing replicas may both create version 1. Both
        # keys stay (one may already have wrapped a data key); wrap picks the same one everywhere.
        _check_key_name(key_name)

        def run(token: _Token, session: Session) -> None:
            if not self._versions(session, key_name):
                token.probe()
                self._generate(token, session, key_name, 1)

        self._call(f"create key {key_name!r}", run)

    def rotate_key(self, key_name: str) -> int:
        """Add the next version of `key_name` (new wraps use it); its version number."""
        _check_key_name(key_name)

        def run(token: _Token, session: Session) -> int:
            versions = self._versions(session, key_name)
            token.probe()
            version = max((v for v, _, _ in versions), default=0) + 1
            self._generate(token, session, key_name, version)
            return version

        return self._call(f"rotate key {key_name!r}", run)

    def check_ready(self) -> None:
        def run(token: _Token, session: Session) -> None:
            token.probe()
            # A search that matches nothing still proves the session handle is alive.
            list(session.get_objects({Attribute.LABEL: "kamus readiness probe"}))

        self._call("answer", run)
