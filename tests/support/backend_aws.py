"""AWS KMS as a conformance backend: the real boto3 client against moto's server on 127.0.0.1.

The adapter takes its credentials from the standard AWS chain, so the backend puts fake ones in
this process's environment while it runs (and in `service_env` for gunicorn children). moto keeps
its state in this process, so a server restarted on the same port after an outage still knows
every key.

Rotation: moto's ``RotateKeyOnDemand`` only records the request (the key material, and so any
visible "version", stays the same), so `rotate()` does what an operator's *manual* rotation does:
a new key, tagged ``kamus:alias=<alias>``, and the alias re-pointed to it. `version_of()` is the
ARN of the key that made a ciphertext's wrapped data key, as KMS reports it on Decrypt.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from kms_backend import envelope_provider, key_mode_env
from moto.server import ThreadedMotoServer
from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.provider import KeyMode, KeyProvider
from kamus_kms.providers.aws import ALIAS_TAG, CONTEXT_KEY, MANAGED_TAG, AwsKms

REGION = "eu-west-1"
SHARED_KEY = "kamus-shared"
# Fixed, so every provider of the session (every "replica") names per-SA keys alike.
NAMING_KEY = bytes.fromhex("0b7d4e2a9c61f8355e0a17c4b2d98f63a1e5c07b49d2f816e3a05c9b7d14e28f")
# moto's defaults; they are only ever sent to 127.0.0.1.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Short, so an outage costs each test about this long; a refused connection fails at once.
TIMEOUT = 1.0


class MotoServer:
    """moto's threaded server on a loopback port that survives restarts."""

    def __init__(self) -> None:
        self.port = 0
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        assert self._server is not None
        listening = self._server._server
        self._server.stop()
        # stop() leaves the socket listening: close it, so clients are refused at once.
        if listening is not None:
            listening.server_close()
        self._server = None


class AwsBackend:
    """One moto KMS shared by every provider it makes, as replicas share a region's KMS."""

    name = "aws"
    modes = (KeyMode.SHARED, KeyMode.PER_SERVICE_ACCOUNT)

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.admin = admin_client(server.endpoint)
        key = self.admin.create_key(
            Description="Kamus shared key (tests)",
            Tags=[
                {"TagKey": MANAGED_TAG, "TagValue": "true"},
                {"TagKey": ALIAS_TAG, "TagValue": f"alias/{SHARED_KEY}"},
            ],
        )
        self.admin.create_alias(
            AliasName=f"alias/{SHARED_KEY}", TargetKeyId=key["KeyMetadata"]["KeyId"]
        )

    def kms(self, timeout: float = TIMEOUT) -> AwsKms:
        """A fresh adapter talking to moto."""
        return AwsKms(region=REGION, endpoint_url=self.server.endpoint, timeout=timeout)

    def provider(self, mode: KeyMode, registry: CollectorRegistry) -> KeyProvider:
        return envelope_provider(self.kms(), mode, registry, SHARED_KEY, NAMING_KEY)

    def service_env(self, mode: KeyMode) -> dict[str, str]:
        env = {
            **CREDENTIALS,
            "KAMUS_PROVIDER": "aws",
            "KAMUS_AWS_REGION": REGION,
            "KAMUS_AWS_ENDPOINT_URL": self.server.endpoint,
        }
        env |= key_mode_env(mode, SHARED_KEY, NAMING_KEY)
        return env

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.server.stop()
        try:
            yield
        finally:
            self.server.start()

    def rotate(self, provider: KeyProvider, key_id: str) -> None:
        """An operator's manual rotation: a new tagged key, and the alias re-pointed to it."""
        alias = AwsKms(region=REGION).key_id(key_id)
        key = self.admin.create_key(
            Description=f"Kamus key {alias}, rotated",
            Tags=[
                {"TagKey": MANAGED_TAG, "TagValue": "true"},
                {"TagKey": ALIAS_TAG, "TagValue": alias},
            ],
        )
        self.admin.update_alias(AliasName=alias, TargetKeyId=key["KeyMetadata"]["KeyId"])

    def version_of(self, provider: KeyProvider, ciphertext: str) -> str:
        """The ARN of the KMS key that wrapped the data key of `ciphertext`."""
        parsed = Ciphertext.parse(ciphertext)
        response = self.admin.decrypt(
            CiphertextBlob=parsed.wrapped_key, EncryptionContext={CONTEXT_KEY: parsed.header}
        )
        return str(response["KeyId"])


def admin_client(endpoint: str) -> Any:
    """A boto3 KMS client for the operator's side of the tests (the fake credentials)."""
    session = boto3.session.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    return session.client("kms", endpoint_url=endpoint)


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[AwsBackend]:
    """moto's KMS on a free loopback port, with fake credentials in the environment."""
    hermetic: dict[str, str | None] = {
        **CREDENTIALS,
        # Nothing from the developer's own AWS setup may leak in.
        "AWS_CONFIG_FILE": str(workdir / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "aws-credentials"),
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
    }
    saved = {name: os.environ.get(name) for name in hermetic}
    _set_environment(hermetic)
    server = MotoServer()
    server.start()
    try:
        yield AwsBackend(server)
    finally:
        server.stop()
        _set_environment(saved)


def _set_environment(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
