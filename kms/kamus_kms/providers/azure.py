"""Azure Key Vault (or Managed HSM) as the KMS of envelope encryption, through Microsoft's SDK.

A data key is wrapped with ``wrapKey`` by the Key Vault key named in the header: RSA-OAEP-256 for
RSA keys (a vault's ``RSA``/``RSA-HSM``), AES key wrap (``A256KW``) for a Managed HSM's ``oct-HSM``
keys. Key Vault's wrap takes no associated data, so what is wrapped is the data key followed by the
SHA-256 of the ciphertext header; unwrapping checks that digest against the header presented, so a
wrapped key moved under another header (another scope) is refused exactly as with the providers
whose KMS authenticates associated data. (The header is also the AES-GCM associated data of the
ciphertext itself.)

The stored wrapped key is ``<key version>:<Key Vault's wrapped bytes>``: rotating the key (a new
version, ``az keyvault key rotate``) makes new ciphertexts use the new version while each old one
names the version that unwraps it. Restricting an old version's operations to ``unwrapKey`` makes
it decrypt-only.

Credentials come from ``azure-identity``: workload identity, managed identity or a client secret
(``KAMUS_AZURE_CREDENTIAL``), or its default chain. Kamus's own Azure provider, which this one
replaces, encrypted secrets directly with a key per service account; the per-service-account key
mode does the same with named keys created on demand (``KAMUS_KMS_KEY_MODE``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from kamus_kms.envelope import DATA_KEY_BYTES, RemoteKms
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError

# Key Vault names: 1-127 letters, digits and dashes.
KEY_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
VERSION = re.compile(rb"[0-9A-Za-z]{1,64}")
KEY_TYPES = {"RSA": 2048, "RSA-HSM": 2048, "oct-HSM": 256}
CREDENTIALS = ("default", "workload-identity", "managed-identity", "client-secret")
_DIGEST_BYTES = 32


class _VaultOnlyCryptography(CryptographyClient):
    """A CryptographyClient that never computes locally: every wrap and unwrap is the vault's.

    Given a key id, the SDK fetches the key and computes with whatever material comes back. A
    Managed HSM's ``oct-HSM`` key rightly returns none, and azure-keyvault-keys 4.x then builds a
    local AES key of *random* bytes (``SymmetricKey`` without key bytes): it wraps data keys that
    nothing can ever unwrap, and a round trip in one process even appears to work. Keeping every
    operation in the vault avoids that, needs no ``keys/get`` for unwrapping, and puts each wrap
    and unwrap in the vault's own audit log. tests/unit/providers/test_azure_adapter.py counts
    the vault's operations, so an SDK change here is caught.
    """

    def _initialize(self, **kwargs: Any) -> None:
        self._initialized = True  # the constructor's NoLocalCryptography stays


def _algorithm(key_type: str) -> KeyWrapAlgorithm:
    return KeyWrapAlgorithm.aes_256 if key_type.startswith("oct") else KeyWrapAlgorithm.rsa_oaep_256


def build_credential(
    kind: str,
    *,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    authority_host: str | None = None,
    ca_cert: str | None = None,
) -> Any:
    """The azure-identity credential of ``KAMUS_AZURE_CREDENTIAL``."""
    from azure import identity  # noqa: PLC0415 - only the azure provider needs it

    options: dict[str, Any] = {}
    if authority_host:
        # A non-Azure authority (Azure Stack, a test double) is not in Microsoft's instance list.
        options |= {"authority": authority_host, "disable_instance_discovery": True}
    if ca_cert:
        options["connection_verify"] = ca_cert
    if kind == "client-secret":
        if not (tenant_id and client_id and client_secret):
            raise ConfigurationError(
                "KAMUS_AZURE_CREDENTIAL=client-secret needs KAMUS_AZURE_TENANT_ID,"
                " KAMUS_AZURE_CLIENT_ID and KAMUS_AZURE_CLIENT_SECRET (or its _FILE)"
            )
        return identity.ClientSecretCredential(tenant_id, client_id, client_secret, **options)
    if kind == "workload-identity":
        # The AKS webhook injects AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE.
        return identity.WorkloadIdentityCredential(
            **({"tenant_id": tenant_id} if tenant_id else {}),
            **({"client_id": client_id} if client_id else {}),
            **options,
        )
    if kind == "managed-identity":
        managed: dict[str, Any] = {"client_id": client_id} if client_id else {}
        if ca_cert:
            managed["connection_verify"] = ca_cert
        return identity.ManagedIdentityCredential(**managed)
    if kind == "default":
        return identity.DefaultAzureCredential(
            exclude_interactive_browser_credential=True,
            **({"managed_identity_client_id": client_id} if client_id else {}),
            **options,
        )
    raise ConfigurationError(
        f"KAMUS_AZURE_CREDENTIAL {kind!r} is not one of {', '.join(CREDENTIALS)}"
    )


class AzureKeyVaultKms(RemoteKms):
    """Data keys wrapped by Azure Key Vault or Managed HSM keys."""

    name = "azure"

    def __init__(
        self,
        *,
        vault_url: str,
        credential: Any,
        key_type: str = "RSA",
        timeout: float = 5.0,
        ca_cert: str | None = None,
        verify_challenge_resource: bool = True,
    ) -> None:
        if not vault_url.startswith("https://"):
            raise ConfigurationError("KAMUS_AZURE_VAULT_URL must be an https:// URL")
        if key_type not in KEY_TYPES:
            raise ConfigurationError(
                f"KAMUS_AZURE_KEY_TYPE {key_type!r} is not one of {', '.join(KEY_TYPES)}"
            )
        if ca_cert is not None and not os.path.isfile(ca_cert):
            raise ConfigurationError(f"KAMUS_AZURE_CA_CERT {ca_cert!r} is not a file")
        self.vault_url = vault_url.rstrip("/")
        self.key_type = key_type
        self.algorithm = _algorithm(key_type)
        self._credential = credential
        self._options: dict[str, Any] = {
            "verify_challenge_resource": verify_challenge_resource,
            "connection_timeout": timeout,
            "read_timeout": timeout,
            # Transient answers are Kamus's to retry (the caller gets 503 and Retry-After); the
            # SDK's own retries would hold a request thread far beyond the KMS timeout.
            "retry_total": 0,
            **({"connection_verify": ca_cert} if ca_cert else {}),
        }
        # Clients per process: gunicorn forks workers after the app is built.
        self._pid = -1
        self._lock = threading.Lock()
        self._keys: KeyClient | None = None
        # One client per key version: a version's key material never changes.
        self._crypto: dict[tuple[str, str], CryptographyClient] = {}

    def check_key_name(self, key_name: str) -> None:
        """Raise ConfigurationError unless ``key_name`` can name a Key Vault key."""
        if not KEY_NAME.fullmatch(key_name):
            raise ConfigurationError(
                f"{key_name!r} cannot name an Azure Key Vault key: use 1 to 127 letters,"
                " digits and dashes"
            )

    def _fresh(self) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._keys = None
                    self._crypto = {}
                    self._pid = os.getpid()

    def _key_client(self) -> KeyClient:
        self._fresh()
        client = self._keys
        if client is None:
            client = KeyClient(self.vault_url, self._credential, **self._options)
            self._keys = client
        return client

    def _crypto_client(self, key_name: str, version: str) -> CryptographyClient:
        self._fresh()
        client = self._crypto.get((key_name, version))
        if client is None:
            key_id = f"{self.vault_url}/keys/{key_name}/{version}"
            client = _VaultOnlyCryptography(key_id, self._credential, **self._options)
            self._crypto[(key_name, version)] = client
        return client

    def _current_key(self, key_name: str) -> KeyVaultKey:
        # Read for every new ciphertext (encrypting is rare next to decrypting): a rotation
        # applies to the very next one, on every replica.
        key: KeyVaultKey = self._call(
            "read", key_name, lambda: self._key_client().get_key(key_name)
        )
        self._check_usable(key)
        return key

    def _check_usable(self, key: KeyVaultKey) -> None:
        kind = str(getattr(key.key_type, "value", key.key_type))  # the SDK's enum, or a str
        if _algorithm(kind) != self.algorithm:
            raise UnavailableError(
                f"the Key Vault key {key.name!r} is of type {kind}, not {self.key_type}"
                " (KAMUS_AZURE_KEY_TYPE): RSA keys wrap with RSA-OAEP-256, oct-HSM keys with A256KW"
            )

    def wrap(self, key_name: str, data_key: bytes, associated_data: bytes) -> bytes:
        """``<version>:`` and the data key plus the header's digest, wrapped by the key."""
        key = self._current_key(key_name)
        payload = data_key + hashlib.sha256(associated_data).digest()
        version = key.properties.version or ""
        crypto = self._crypto_client(key_name, version)
        result = self._call("wrap", key_name, lambda: crypto.wrap_key(self.algorithm, payload))
        encrypted: bytes = result.encrypted_key
        return version.encode("ascii") + b":" + encrypted

    def unwrap(self, key_name: str, wrapped: bytes, associated_data: bytes) -> bytes:
        """The data key, if ``wrapped`` was made for exactly this header."""
        version, colon, encrypted = wrapped.partition(b":")
        if not colon or not VERSION.fullmatch(version) or not encrypted:
            raise InvalidCiphertextError
        crypto = self._crypto_client(key_name, version.decode("ascii"))
        result = self._call(
            "unwrap", key_name, lambda: crypto.unwrap_key(self.algorithm, encrypted)
        )
        payload: bytes = result.key
        expected = hashlib.sha256(associated_data).digest()
        if len(payload) != DATA_KEY_BYTES + _DIGEST_BYTES or not hmac.compare_digest(
            payload[DATA_KEY_BYTES:], expected
        ):
            raise InvalidCiphertextError
        return payload[:DATA_KEY_BYTES]

    def ensure_key(self, key_name: str) -> None:
        """Create the key unless it exists (a race of replicas only adds a version)."""
        client = self._key_client()

        def get_or_create() -> KeyVaultKey:
            try:
                return client.get_key(key_name)
            except ResourceNotFoundError:
                return client.create_key(
                    key_name,
                    self.key_type,
                    size=KEY_TYPES[self.key_type],
                    key_operations=["wrapKey", "unwrapKey"],
                )

        self._check_usable(self._call("create", key_name, get_or_create))

    def check_ready(self) -> None:
        """Raise UnavailableError unless the vault answers with the credential."""
        client = self._key_client()
        self._call("list", "", lambda: next(iter(client.list_properties_of_keys()), None))

    def _call(self, operation: str, key_name: str, call: Any) -> Any:
        where = f"Azure Key Vault {self.vault_url}"
        try:
            return call()
        except ResourceNotFoundError as exc:
            if operation == "unwrap":
                raise InvalidCiphertextError from exc  # the key version is gone for good
            raise UnavailableError(
                f"the key {key_name!r} does not exist in {where}: create it"
                f" ({self.key_type}, operations wrapKey and unwrapKey) or fix KAMUS_KMS_KEY"
            ) from exc
        except ClientAuthenticationError as exc:
            # azure-identity's reason (an AADSTS code, a refused connection) never holds the
            # secret or a token.
            reason = " ".join(str(exc.message or exc).split())[:300]
            raise UnavailableError(
                f"{where}: no token for the credential, or the vault refused it ({reason});"
                " check KAMUS_AZURE_CREDENTIAL and its identity"
            ) from exc
        except HttpResponseError as exc:
            status = exc.status_code
            if operation == "unwrap" and status == 400:
                raise InvalidCiphertextError from exc
            if status == 403:
                raise UnavailableError(
                    f"{where} forbids {operation} on {key_name!r}: the identity needs the"
                    f" keys/{_PERMISSION.get(operation, operation)} permission (role Key Vault"
                    " Crypto User, or an access policy), and the key version must allow it"
                ) from exc
            if status == 429:
                raise UnavailableError(f"{where} is throttling requests") from exc
            raise UnavailableError(f"{where} failed to {operation} [HTTP {status}]") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise UnavailableError(f"cannot reach {where} ({type(exc).__name__})") from exc
        except AzureError as exc:
            raise UnavailableError(f"{where} failed to {operation} ({type(exc).__name__})") from exc
        except ValueError as exc:
            # The SDK's own checks, e.g. a challenge naming a resource outside the vault's domain.
            message = " ".join(str(exc).split())[:300]
            raise UnavailableError(f"{where} cannot be used: {message}") from exc
        except NotImplementedError as exc:
            # The SDK refuses an operation the key's key_ops do not list before calling.
            raise UnavailableError(
                f"the Key Vault key {key_name!r} does not allow {operation}"
            ) from exc


_PERMISSION = {"read": "get", "list": "list", "create": "create", "wrap": "wrapKey",
               "unwrap": "unwrapKey"}  # fmt: skip
