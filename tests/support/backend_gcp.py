"""Google Cloud KMS as a conformance backend: the real client against a local KMS server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
from fake_gcp_kms_server import FakeKeyManagementService, serving, version_of
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)
from kms_backend import envelope_provider, key_mode_env
from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.provider import KeyMode, KeyProvider
from kamus_kms.providers.gcp import GcpKms

KEY_RING = "projects/kamus-test/locations/global/keyRings/kamus"
SHARED_KEY = "kamus-shared"
# Fixed, so every provider of the session (every "replica") names per-SA keys alike.
NAMING_KEY = bytes.fromhex("5f0c1a7e92b4d3e8a61f07c2d95e3b48c7a0f1e26d9b843a5c17e0f28b6d49a3")
# Short, so an outage costs each test about this long per call; long enough to ride out the
# reconnection after a restart.
TIMEOUT = 1.5


class GcpBackend:
    """One fake Cloud KMS key ring shared by every provider it makes, as replicas share a KMS."""

    name = "gcp"
    modes = (KeyMode.SHARED, KeyMode.PER_SERVICE_ACCOUNT)

    def __init__(self, fake: FakeKeyManagementService) -> None:
        self.fake = fake
        fake.create_key(KEY_RING, SHARED_KEY)

    def kms(self, timeout: float = TIMEOUT) -> GcpKms:
        """A fresh adapter talking to the fake."""
        return GcpKms(
            key_ring=KEY_RING, endpoint=self.fake.endpoint, insecure=True, timeout=timeout
        )

    def provider(self, mode: KeyMode, registry: CollectorRegistry) -> KeyProvider:
        return envelope_provider(self.kms(), mode, registry, SHARED_KEY, NAMING_KEY)

    def service_env(self, mode: KeyMode) -> dict[str, str]:
        env = {
            "KAMUS_PROVIDER": "gcp",
            "KAMUS_GCP_KEY_RING": KEY_RING,
            "KAMUS_GCP_ENDPOINT": self.fake.endpoint,
            "KAMUS_GCP_INSECURE_ENDPOINT": "true",
        }
        env |= key_mode_env(mode, SHARED_KEY, NAMING_KEY)
        return env

    def outage(self) -> contextlib.AbstractContextManager[None]:
        return self.fake.outage()

    def rotate(self, provider: KeyProvider, key_id: str) -> None:
        """What `gcloud kms keys versions create --primary` does: a new version, made primary."""
        key = f"{KEY_RING}/cryptoKeys/{key_id}"
        with admin_client(self.fake) as client:
            version = client.create_crypto_key_version(
                parent=key, crypto_key_version=kms_v1.CryptoKeyVersion(), timeout=TIMEOUT
            )
            client.update_crypto_key_primary_version(
                name=key, crypto_key_version_id=version.name.rsplit("/", 1)[1], timeout=TIMEOUT
            )

    def version_of(self, provider: KeyProvider, ciphertext: str) -> str:
        parsed = Ciphertext.parse(ciphertext)
        return f"{parsed.key_id}/{version_of(parsed.wrapped_key)}"


@contextlib.contextmanager
def admin_client(fake: FakeKeyManagementService) -> Iterator[kms_v1.KeyManagementServiceClient]:
    """A real Cloud KMS client on the fake, as an operator's tooling would use; closed at exit."""
    transport = KeyManagementServiceGrpcTransport(channel=grpc.insecure_channel(fake.endpoint))
    with kms_v1.KeyManagementServiceClient(transport=transport) as client:
        yield client


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[GcpBackend]:
    """A fake Cloud KMS on 127.0.0.1 with the test key ring and the shared key."""
    with serving([KEY_RING]) as fake:
        yield GcpBackend(fake)
