"""A local Cloud KMS: google.cloud.kms.v1.KeyManagementService over real gRPC on 127.0.0.1.

Built from google-cloud-kms's own request and response types, so the real client talks to it as
to Google. It keeps its keys in memory and does real crypto: each CryptoKeyVersion holds a random
AES-256-GCM key, and a ciphertext is::

    b"fkms" || u32be(version) || nonce(12) || AES-256-GCM(plaintext, additional authenticated data)

so it says which version sealed it and old versions keep decrypting after a rotation. Like
Google, it checks every request CRC32C field it is sent and reports which it verified. Only what
Kamus uses is served: Encrypt, Decrypt, CreateCryptoKey, GetCryptoKey, GetKeyRing,
CreateCryptoKeyVersion and UpdateCryptoKeyPrimaryVersion.

Test hooks: ``calls`` counts calls per method, ``last_request`` keeps the last request of each,
``deny(permission)`` answers PERMISSION_DENIED as Google does, ``corrupt_next(field)`` spoils one
checksum field of the next response, ``fail_next(method, code)`` answers that method's next call
with that status, ``set_enabled()`` disables a version, ``delay`` slows every answer, and
``outage()`` stops the server and restarts it on the same port.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import google_crc32c
import grpc  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1

SERVICE = "google.cloud.kms.v1.KeyManagementService"
MAGIC = b"fkms"
_VERSION = struct.Struct(">I")
_NONCE_BYTES = 12
_CRYPTO_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,63}")
_MAX_DATA = 64 * 1024
_DECRYPT_FAILED = "Decryption failed: verify that 'name' refers to the correct CryptoKey."
_PERMISSIONS = {
    "Encrypt": "cloudkms.cryptoKeyVersions.useToEncrypt",
    "Decrypt": "cloudkms.cryptoKeyVersions.useToDecrypt",
    "CreateCryptoKey": "cloudkms.cryptoKeys.create",
    "GetCryptoKey": "cloudkms.cryptoKeys.get",
    "GetKeyRing": "cloudkms.keyRings.get",
    "CreateCryptoKeyVersion": "cloudkms.cryptoKeyVersions.create",
    "UpdateCryptoKeyPrimaryVersion": "cloudkms.cryptoKeys.update",
}
CORRUPTIBLE = frozenset({
    "ciphertext_crc32c", "verified_plaintext_crc32c",
    "verified_additional_authenticated_data_crc32c", "plaintext_crc32c",
})  # fmt: skip
_Request = TypeVar("_Request")


def crc32c(data: bytes) -> int:
    """CRC32C as Cloud KMS computes it."""
    return int(google_crc32c.value(data))


def version_of(ciphertext: bytes) -> int:
    """The CryptoKeyVersion number that sealed a ciphertext of this fake."""
    if len(ciphertext) < len(MAGIC) + _VERSION.size or not ciphertext.startswith(MAGIC):
        raise ValueError("not a ciphertext of the fake Cloud KMS")
    return int(_VERSION.unpack_from(ciphertext, len(MAGIC))[0])


@dataclass
class _CryptoKey:
    name: str
    versions: dict[int, bytes] = field(default_factory=dict)
    disabled: set[int] = field(default_factory=set)
    primary: int = 0

    def add_version(self) -> int:
        number = max(self.versions, default=0) + 1
        self.versions[number] = AESGCM.generate_key(bit_length=256)
        return number

    def version_name(self, number: int) -> str:
        return f"{self.name}/cryptoKeyVersions/{number}"

    def message(self) -> kms_v1.CryptoKey:
        algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION
        return kms_v1.CryptoKey(
            name=self.name,
            purpose=kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT,
            primary=_version_message(self.version_name(self.primary)),
            version_template=kms_v1.CryptoKeyVersionTemplate(algorithm=algorithm),
        )


def _version_message(name: str) -> kms_v1.CryptoKeyVersion:
    return kms_v1.CryptoKeyVersion(
        name=name,
        state=kms_v1.CryptoKeyVersion.CryptoKeyVersionState.ENABLED,
        protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        algorithm=kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
    )


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returns only by raising")


class FakeKeyManagementService:
    """Cloud KMS key rings in memory, served over gRPC on 127.0.0.1 while started."""

    def __init__(self, key_rings: Iterable[str]) -> None:
        self.key_rings = set(key_rings)
        self.calls: Counter[str] = Counter()
        self.last_request: dict[str, Any] = {}
        self.denied: set[str] = set()
        self.delay = 0.0
        self._failures: dict[str, grpc.StatusCode] = {}
        self._corrupt: set[str] = set()
        self._keys: dict[str, _CryptoKey] = {}
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """`host:port` of the running server."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve on 127.0.0.1: a free port the first time, the same port afterwards."""
        # No SO_REUSEPORT: a second server on our port must fail, not share it.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)]
        )
        server.add_generic_rpc_handlers((self._handler(),))
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        if port == 0:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port}")
        server.start()
        self.port, self._server = port, server

    def stop(self) -> None:
        """Stop serving; every connection is closed, the keys are kept."""
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Inside the block nothing listens on the port; afterwards the same server is back."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def create_key(self, key_ring: str, key_id: str) -> str:
        """Create a CryptoKey directly (as an operator would beforehand); its resource name."""
        with self._lock:
            key = _CryptoKey(f"{key_ring}/cryptoKeys/{key_id}")
            key.primary = key.add_version()
            self._keys[key.name] = key
        return key.name

    def key_names(self) -> set[str]:
        """Resource names of every CryptoKey."""
        with self._lock:
            return set(self._keys)

    def deny(self, permission: str) -> None:
        """Answer PERMISSION_DENIED to every call that needs `permission` until allow()."""
        self.denied.add(permission)

    def allow(self, permission: str) -> None:
        """Undo deny()."""
        self.denied.discard(permission)

    def reset_faults(self) -> None:
        """Forget every deny(), corrupt_next(), fail_next() and delay."""
        with self._lock:
            self.denied.clear()
            self._corrupt.clear()
            self._failures.clear()
            self.delay = 0.0

    def set_enabled(self, key_name: str, version: int, enabled: bool) -> None:
        """Enable or disable one version, as `gcloud kms keys versions disable` does."""
        with self._lock:
            if enabled:
                self._keys[key_name].disabled.discard(version)
            else:
                self._keys[key_name].disabled.add(version)

    def fail_next(self, method: str, code: grpc.StatusCode) -> None:
        """Answer the next call of `method` (e.g. "Decrypt") with the status `code`."""
        with self._lock:
            self._failures[method] = code

    def corrupt_next(self, response_field: str) -> None:
        """Spoil `response_field` in the next response that carries it (a bit flip in transit)."""
        if response_field not in CORRUPTIBLE:
            raise ValueError(f"cannot corrupt {response_field!r}")
        with self._lock:
            self._corrupt.add(response_field)

    def _take_corruption(self, response_field: str) -> bool:
        with self._lock:
            if response_field in self._corrupt:
                self._corrupt.discard(response_field)
                return True
            return False

    def _handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Callable[[Any, grpc.ServicerContext], Any], Any, Any]] = {
            "Encrypt": (self._encrypt, kms_v1.EncryptRequest, kms_v1.EncryptResponse),
            "Decrypt": (self._decrypt, kms_v1.DecryptRequest, kms_v1.DecryptResponse),
            "CreateCryptoKey": (self._create_crypto_key, kms_v1.CreateCryptoKeyRequest,
                                kms_v1.CryptoKey),
            "GetCryptoKey": (self._get_crypto_key, kms_v1.GetCryptoKeyRequest, kms_v1.CryptoKey),
            "GetKeyRing": (self._get_key_ring, kms_v1.GetKeyRingRequest, kms_v1.KeyRing),
            "CreateCryptoKeyVersion": (self._create_version,
                                       kms_v1.CreateCryptoKeyVersionRequest,
                                       kms_v1.CryptoKeyVersion),
            "UpdateCryptoKeyPrimaryVersion": (self._update_primary,
                                              kms_v1.UpdateCryptoKeyPrimaryVersionRequest,
                                              kms_v1.CryptoKey),
        }  # fmt: skip
        handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                self._counted(method, function),
                request_deserializer=request.deserialize,
                response_serializer=response.serialize,
            )
            for method, (function, request, response) in methods.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _counted(
        self, method: str, function: Callable[[_Request, grpc.ServicerContext], Any]
    ) -> Callable[[_Request, grpc.ServicerContext], Any]:
        def handle(request: _Request, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.calls[method] += 1
                self.last_request[method] = request
                failure = self._failures.pop(method, None)
            if failure is not None:
                _abort(context, failure, f"Injected {failure.name}.")
            if self.delay:
                time.sleep(self.delay)
            if _PERMISSIONS[method] in self.denied:
                resource = getattr(request, "name", "") or getattr(request, "parent", "")
                _abort(context, grpc.StatusCode.PERMISSION_DENIED,
                       f"Permission '{_PERMISSIONS[method]}' denied on resource '{resource}' "
                       "(or it may not exist).")  # fmt: skip
            return function(request, context)

        return handle

    def _key(self, name: str, context: grpc.ServicerContext) -> _CryptoKey:
        key = self._keys.get(name)
        if key is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"CryptoKey {name} not found.")
        return key

    @staticmethod
    def _check_enabled(context: grpc.ServicerContext, key: _CryptoKey, number: int) -> None:
        if number in key.disabled:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   f"The request cannot be fulfilled. Resource {key.version_name(number)} is not "
                   "in ENABLED state.")  # fmt: skip

    @staticmethod
    def _check_crc(
        context: grpc.ServicerContext, data: bytes, checksum: int | None, data_field: str
    ) -> bool:
        if checksum is None:
            return False
        if checksum != crc32c(data):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   f"The checksum in field {data_field}_crc32c did not match the data in field "
                   f"{data_field}.")  # fmt: skip
        return True

    def _encrypt(
        self, request: kms_v1.EncryptRequest, context: grpc.ServicerContext
    ) -> kms_v1.EncryptResponse:
        aad = request.additional_authenticated_data
        if len(request.plaintext) > _MAX_DATA or len(aad) > _MAX_DATA:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "The plaintext is too large.")
        verified_plaintext = self._check_crc(
            context, request.plaintext, request.plaintext_crc32c, "plaintext"
        )
        verified_aad = self._check_crc(
            context, aad, request.additional_authenticated_data_crc32c,
            "additional_authenticated_data",
        )  # fmt: skip
        with self._lock:
            key_name, _, pinned = request.name.partition("/cryptoKeyVersions/")
            key = self._key(key_name, context)
            number = int(pinned) if pinned.isdigit() else key.primary
            secret = key.versions.get(number)
            if secret is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"{request.name} not found.")
            self._check_enabled(context, key, number)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = (
            MAGIC + _VERSION.pack(number) + nonce
            + AESGCM(secret).encrypt(nonce, request.plaintext, aad)
        )  # fmt: skip
        checksum = crc32c(ciphertext)
        if self._take_corruption("ciphertext_crc32c"):
            checksum ^= 1
        if self._take_corruption("verified_plaintext_crc32c"):
            verified_plaintext = False
        if self._take_corruption("verified_additional_authenticated_data_crc32c"):
            verified_aad = False
        return kms_v1.EncryptResponse(
            name=key.version_name(number),
            ciphertext=ciphertext,
            ciphertext_crc32c=checksum,
            verified_plaintext_crc32c=verified_plaintext,
            verified_additional_authenticated_data_crc32c=verified_aad,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )

    def _decrypt(
        self, request: kms_v1.DecryptRequest, context: grpc.ServicerContext
    ) -> kms_v1.DecryptResponse:
        ciphertext, aad = request.ciphertext, request.additional_authenticated_data
        self._check_crc(context, ciphertext, request.ciphertext_crc32c, "ciphertext")
        self._check_crc(
            context, aad, request.additional_authenticated_data_crc32c,
            "additional_authenticated_data",
        )  # fmt: skip
        with self._lock:
            key = self._key(request.name, context)
            try:
                number = version_of(ciphertext)
            except ValueError:
                number = 0
            secret = key.versions.get(number)
            if secret is not None:
                self._check_enabled(context, key, number)
            primary = key.primary
        head = len(MAGIC) + _VERSION.size
        if secret is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, _DECRYPT_FAILED)
        try:
            plaintext = AESGCM(secret).decrypt(
                ciphertext[head : head + _NONCE_BYTES], ciphertext[head + _NONCE_BYTES :], aad
            )
        except (InvalidTag, ValueError):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, _DECRYPT_FAILED)
        checksum = crc32c(plaintext)
        if self._take_corruption("plaintext_crc32c"):
            checksum ^= 1
        return kms_v1.DecryptResponse(
            plaintext=plaintext,
            plaintext_crc32c=checksum,
            used_primary=number == primary,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )

    def _create_crypto_key(
        self, request: kms_v1.CreateCryptoKeyRequest, context: grpc.ServicerContext
    ) -> kms_v1.CryptoKey:
        if request.parent not in self.key_rings:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"KeyRing {request.parent} not found.")
        if not _CRYPTO_KEY_ID.fullmatch(request.crypto_key_id):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Invalid crypto_key_id.")
        purpose = request.crypto_key.purpose
        if purpose != kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Only ENCRYPT_DECRYPT is served.")
        name = f"{request.parent}/cryptoKeys/{request.crypto_key_id}"
        with self._lock:
            if name in self._keys:
                _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"CryptoKey {name} already exists.")
            key = _CryptoKey(name)
            key.primary = key.add_version()
            self._keys[name] = key
            return key.message()

    def _get_crypto_key(
        self, request: kms_v1.GetCryptoKeyRequest, context: grpc.ServicerContext
    ) -> kms_v1.CryptoKey:
        with self._lock:
            return self._key(request.name, context).message()

    def _get_key_ring(
        self, request: kms_v1.GetKeyRingRequest, context: grpc.ServicerContext
    ) -> kms_v1.KeyRing:
        if request.name not in self.key_rings:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"KeyRing {request.name} not found.")
        return kms_v1.KeyRing(name=request.name)

    def _create_version(
        self, request: kms_v1.CreateCryptoKeyVersionRequest, context: grpc.ServicerContext
    ) -> kms_v1.CryptoKeyVersion:
        with self._lock:
            key = self._key(request.parent, context)
            return _version_message(key.version_name(key.add_version()))

    def _update_primary(
        self, request: kms_v1.UpdateCryptoKeyPrimaryVersionRequest, context: grpc.ServicerContext
    ) -> kms_v1.CryptoKey:
        with self._lock:
            key = self._key(request.name, context)
            version_id = request.crypto_key_version_id
            number = int(version_id) if version_id.isdigit() else 0
            if number not in key.versions:
                _abort(context, grpc.StatusCode.NOT_FOUND,
                       f"{key.version_name(number)} not found.")  # fmt: skip
            key.primary = number
            return key.message()


@contextlib.contextmanager
def serving(key_rings: Iterable[str]) -> Iterator[FakeKeyManagementService]:
    """A started fake Cloud KMS holding `key_rings`, stopped at exit."""
    fake = FakeKeyManagementService(key_rings)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
