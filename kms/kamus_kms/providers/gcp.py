"""Google Cloud KMS: data keys wrapped by symmetric CryptoKeys of one key ring, over gRPC.

Every call carries CRC32C checksums of what it sends, and every response is checked against the
checksums Cloud KMS returns, as Google recommends: a mismatch means corruption in transit and is
reported as UnavailableError (retry), never as a wrong key.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import TypeVar

import google_crc32c
import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)

from kamus_kms.envelope import RemoteKms
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError

KEY_RING = re.compile(
    r"projects/[a-z0-9][a-z0-9.:-]{0,99}/locations/[a-z0-9-]{1,63}/keyRings/[A-Za-z0-9_-]{1,63}"
)
CRYPTO_KEY_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")

ENCRYPT_PERMISSION = "cloudkms.cryptoKeyVersions.useToEncrypt"
DECRYPT_PERMISSION = "cloudkms.cryptoKeyVersions.useToDecrypt"
CREATE_PERMISSION = "cloudkms.cryptoKeys.create"

# A local test server restarts in a blink: reconnect within the time budget of one call rather
# than after gRPC's default backoff (1 s, growing to minutes).
_INSECURE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
_T = TypeVar("_T")
_TRANSIENT = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.ResourceExhausted,
    api_exceptions.InternalServerError,
    api_exceptions.Aborted,
    api_exceptions.Unknown,
)


def crc32c(data: bytes) -> int:
    """The CRC32C checksum Cloud KMS uses for integrity in transit."""
    return int(google_crc32c.value(data))


class GcpKms(RemoteKms):
    """Cloud KMS symmetric CryptoKeys, named `{key_ring}/cryptoKeys/{key name}`."""

    name = "gcp"

    def __init__(
        self,
        *,
        key_ring: str,
        endpoint: str | None = None,
        insecure: bool = False,
        timeout: float = 5.0,
    ) -> None:
        if not KEY_RING.fullmatch(key_ring):
            raise ConfigurationError(
                "KAMUS_GCP_KEY_RING must be a key ring resource name, "
                "projects/<project>/locations/<location>/keyRings/<key ring>"
            )
        if insecure and not endpoint:
            raise ConfigurationError("KAMUS_GCP_INSECURE_ENDPOINT needs KAMUS_GCP_ENDPOINT")
        if timeout <= 0:
            raise ConfigurationError("the Cloud KMS timeout must be positive")
        self.key_ring = key_ring
        self._endpoint = endpoint
        self._insecure = insecure
        self._timeout = timeout
        # Only a lost connection is retried, within the same time budget as the call itself.
        self._retry = api_retry.Retry(
            predicate=api_retry.if_exception_type(api_exceptions.ServiceUnavailable),
            initial=0.05, maximum=0.5, multiplier=2.0, timeout=timeout,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._client: kms_v1.KeyManagementServiceClient | None = None

    def check_key_name(self, key_name: str) -> None:
        self.key_resource(key_name)

    def key_resource(self, key_name: str) -> str:
        """The CryptoKey resource name of `key_name`; ConfigurationError when it cannot be one."""
        if not CRYPTO_KEY_NAME.fullmatch(key_name):
            raise ConfigurationError(
                f"{key_name!r} is not a Cloud KMS CryptoKey name (1-63 of A-Z a-z 0-9 _ -; "
                "the key ring comes from KAMUS_GCP_KEY_RING)"
            )
        return f"{self.key_ring}/cryptoKeys/{key_name}"

    def wrap(self, key_name: str, data_key: bytes, associated_data: bytes) -> bytes:
        resource = self.key_resource(key_name)
        request = kms_v1.EncryptRequest(
            name=resource,
            plaintext=data_key,
            additional_authenticated_data=associated_data,
            plaintext_crc32c=crc32c(data_key),
            additional_authenticated_data_crc32c=crc32c(associated_data),
        )
        response = self._call(
            lambda client: client.encrypt(
                request=request, retry=self._retry, timeout=self._timeout
            ),
            key_name, ENCRYPT_PERMISSION, refused=None,
        )  # fmt: skip
        if not (
            response.verified_plaintext_crc32c
            and response.verified_additional_authenticated_data_crc32c
            and response.ciphertext_crc32c == crc32c(response.ciphertext)
        ):
            raise UnavailableError(
                f"Cloud KMS encrypt with key {key_name!r} was corrupted in transit (CRC32C "
                "mismatch); retry"
            )
        return bytes(response.ciphertext)

    def unwrap(self, key_name: str, wrapped: bytes, associated_data: bytes) -> bytes:
        resource = self.key_resource(key_name)
        request = kms_v1.DecryptRequest(
            name=resource,
            ciphertext=wrapped,
            additional_authenticated_data=associated_data,
            ciphertext_crc32c=crc32c(wrapped),
            additional_authenticated_data_crc32c=crc32c(associated_data),
        )
        response = self._call(
            lambda client: client.decrypt(
                request=request, retry=self._retry, timeout=self._timeout
            ),
            key_name, DECRYPT_PERMISSION,
            refused=(api_exceptions.InvalidArgument, api_exceptions.NotFound),
        )  # fmt: skip
        if response.plaintext_crc32c != crc32c(response.plaintext):
            raise UnavailableError(
                f"Cloud KMS decrypt with key {key_name!r} was corrupted in transit (CRC32C "
                "mismatch); retry"
            )
        return bytes(response.plaintext)

    def ensure_key(self, key_name: str) -> None:
        self.key_resource(key_name)
        algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm
        crypto_key = kms_v1.CryptoKey(
            purpose=kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT,
            version_template=kms_v1.CryptoKeyVersionTemplate(
                algorithm=algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
            ),
        )

        def create(client: kms_v1.KeyManagementServiceClient) -> None:
            try:
                client.create_crypto_key(
                    parent=self.key_ring, crypto_key_id=key_name, crypto_key=crypto_key,
                    retry=self._retry, timeout=self._timeout,
                )  # fmt: skip
            except api_exceptions.AlreadyExists:
                # Another replica created it first: CryptoKey ids are unique in a key ring, so
                # both replicas now use that one key.
                return

        self._call(create, key_name, CREATE_PERMISSION, refused=None)

    def check_ready(self) -> None:
        def get_key_ring(client: kms_v1.KeyManagementServiceClient) -> None:
            try:
                client.get_key_ring(name=self.key_ring, retry=self._retry, timeout=self._timeout)
            except api_exceptions.PermissionDenied:
                # cloudkms.keyRings.get is not needed to serve requests, so a service granted
                # only the encrypt or decrypt permission gets this answer: reaching it proves
                # the API is reachable and accepts our credentials, which is all readiness asks.
                return

        self._call(get_key_ring, None, "cloudkms.keyRings.get", refused=None)

    def _kms_client(self) -> kms_v1.KeyManagementServiceClient:
        # gunicorn forks workers after the app is built: each process opens its own channel.
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._new_client()
                self._pid = os.getpid()
            return self._client

    def _new_client(self) -> kms_v1.KeyManagementServiceClient:
        if self._insecure:
            assert self._endpoint is not None
            channel = grpc.insecure_channel(self._endpoint, options=_INSECURE_CHANNEL_OPTIONS)
            transport = KeyManagementServiceGrpcTransport(channel=channel)
            return kms_v1.KeyManagementServiceClient(transport=transport)
        options = ClientOptions(api_endpoint=self._endpoint) if self._endpoint else None
        return kms_v1.KeyManagementServiceClient(client_options=options)

    def _call(
        self,
        call: Callable[[kms_v1.KeyManagementServiceClient], _T],
        key_name: str | None,
        permission: str,
        *,
        refused: tuple[type[Exception], ...] | None,
    ) -> _T:
        """`call` on this process's client, every SDK error translated into ours."""
        what = f"key {key_name!r} of the configured key ring" if key_name else "the key ring"
        try:
            return call(self._kms_client())
        except api_exceptions.PermissionDenied as exc:
            raise UnavailableError(
                f"Cloud KMS denied {permission} on {what} (or it does not exist): grant it to "
                "the service's Google service account"
            ) from exc
        except api_exceptions.Unauthenticated as exc:
            raise UnavailableError(
                "Cloud KMS rejected the service's Google credentials (Unauthenticated)"
            ) from exc
        except api_exceptions.GoogleAPICallError as exc:
            if isinstance(exc, api_exceptions.InvalidArgument) and _is_checksum_error(exc):
                raise UnavailableError(
                    f"Cloud KMS saw a corrupted request for {what} (CRC32C mismatch); retry"
                ) from exc
            if refused and isinstance(exc, refused):
                raise InvalidCiphertextError from exc
            if isinstance(exc, api_exceptions.NotFound):
                message = f"Cloud KMS has no {what}"
                if not key_name:
                    message = "the configured key ring does not exist in Cloud KMS"
            elif isinstance(exc, api_exceptions.FailedPrecondition):
                # A disabled version can be enabled again: not the caller's fault, not final.
                message = (
                    f"Cloud KMS refused the request for {what}: FailedPrecondition (is the key "
                    "version disabled or destroyed?)"
                )
            elif isinstance(exc, _TRANSIENT):
                message = f"Cloud KMS did not answer for {what} ({_code(exc)}); retry"
            else:
                message = f"Cloud KMS refused the request for {what}: {_code(exc)}"
            raise UnavailableError(message) from exc
        except api_exceptions.RetryError as exc:
            raise UnavailableError(
                f"Cloud KMS is unreachable (no answer within {self._timeout:g} s)"
            ) from exc
        except auth_exceptions.DefaultCredentialsError as exc:
            raise UnavailableError(
                "no Google credentials found (Application Default Credentials): use Workload "
                "Identity or set GOOGLE_APPLICATION_CREDENTIALS"
            ) from exc
        except auth_exceptions.GoogleAuthError as exc:
            raise UnavailableError(
                "could not obtain a Google access token for Cloud KMS; retry"
            ) from exc
        except grpc.RpcError as exc:
            raise UnavailableError("Cloud KMS is unreachable (gRPC transport error)") from exc


def _code(exc: api_exceptions.GoogleAPICallError) -> str:
    return type(exc).__name__


def _is_checksum_error(exc: api_exceptions.GoogleAPICallError) -> bool:
    message = (exc.message or "").lower()
    return "checksum" in message or "crc32c" in message
