"""Azure Key Vault as a conformance backend: the real ``azure-keyvault-keys`` and
``azure-identity`` clients over HTTPS to the local stand-in (tests/support/fake_azure_keyvault.py).

The provider authenticates as an application with a client secret against the stand-in's token
service, after the bearer challenge the SDK performs; it trusts the stand-in's self-signed
certificate through ``KAMUS_AZURE_CA_CERT``. The stand-in is on an IP address, which no challenge
resource can match, so resource verification is off here (the setting's one legitimate use).

Outage: the stand-in's port is closed (connections refused) and opened again with every key kept.
Rotation: a new key version, the old one restricted to ``unwrapKey`` (decrypt-only).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

from canned_server import self_signed_certificate
from fake_azure_keyvault import FakeKeyVault, VaultServer, serve
from kms_backend import envelope_provider, key_mode_env
from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.provider import KeyMode, KeyProvider
from kamus_kms.providers.azure import AzureKeyVaultKms, build_credential

SHARED_KEY = "kamus-shared"
TIMEOUT_SECONDS = 2.0


class AzureBackend:
    """The stand-in vault with a shared RSA key, and the provider's credentials for it."""

    name = "azure"
    modes = (KeyMode.SHARED, KeyMode.PER_SERVICE_ACCOUNT)

    def __init__(self, server: VaultServer, ca_cert: Path) -> None:
        self.server = server
        self.vault = server.vault
        self.ca_cert = ca_cert
        self.naming_key = secrets.token_bytes(32)
        self.vault.create(SHARED_KEY, "RSA")

    def kms(self) -> AzureKeyVaultKms:
        """A fresh adapter, authenticating with the application's client secret."""
        credential = build_credential(
            "client-secret",
            tenant_id=self.vault.tenant,
            client_id=self.vault.client_id,
            client_secret=self.vault.client_secret,
            authority_host=self.vault.url,
            ca_cert=str(self.ca_cert),
        )
        return AzureKeyVaultKms(
            vault_url=self.vault.url, credential=credential, timeout=TIMEOUT_SECONDS,
            ca_cert=str(self.ca_cert), verify_challenge_resource=False,
        )  # fmt: skip

    def provider(self, mode: KeyMode, registry: CollectorRegistry) -> KeyProvider:
        return envelope_provider(self.kms(), mode, registry, SHARED_KEY, self.naming_key)

    def service_env(self, mode: KeyMode) -> dict[str, str]:
        env = {
            "KAMUS_PROVIDER": "azure",
            "KAMUS_AZURE_VAULT_URL": self.vault.url,
            "KAMUS_AZURE_CREDENTIAL": "client-secret",
            "KAMUS_AZURE_TENANT_ID": self.vault.tenant,
            "KAMUS_AZURE_CLIENT_ID": self.vault.client_id,
            "KAMUS_AZURE_CLIENT_SECRET": self.vault.client_secret,
            "KAMUS_AZURE_AUTHORITY_HOST": self.vault.url,
            "KAMUS_AZURE_CA_CERT": str(self.ca_cert),
            "KAMUS_AZURE_VERIFY_CHALLENGE_RESOURCE": "false",
            "KAMUS_KMS_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        }
        env |= key_mode_env(mode, SHARED_KEY, self.naming_key)
        return env

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.server.stop()
        try:
            yield
        finally:
            self.server.start()

    def rotate(self, provider: KeyProvider, key_id: str) -> None:
        old = self.vault.latest(key_id)
        self.vault.create(key_id, old.kty)
        old.key_ops = ["unwrapKey"]  # the old version only decrypts from now on

    def version_of(self, provider: KeyProvider, ciphertext: str) -> str:
        # The wrapped key is "<key version>:<Key Vault's wrapped bytes>".
        return Ciphertext.parse(ciphertext).wrapped_key.split(b":", 1)[0].decode("ascii")


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[AzureBackend]:
    """The Key Vault stand-in over HTTPS on 127.0.0.1, stopped at exit."""
    certificate = self_signed_certificate(workdir)
    with serve(FakeKeyVault(), certificate) as server:
        yield AzureBackend(server, certificate.cert_path)
