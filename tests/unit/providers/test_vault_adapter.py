"""The Vault transit adapter against a real OpenBao dev server."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from pathlib import Path

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]
import pytest
from backend_vault import MOUNT, POLICY, SHARED_KEY, VaultBackend, running
from kms_backend import Backend
from prometheus_client import CollectorRegistry

from kamus_kms.errors import InvalidCiphertextError, UnavailableError
from kamus_kms.provider import KeyMode
from kamus_kms.providers.vault import VaultTransitKms
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.providers import provider_from_settings
from kamus_service.settings import load_settings

DATA_KEY = bytes(range(32))
HEADER = b"kamus:v1:vault:team-a:app:kamus-shared:"


@pytest.fixture
def vault(backends: dict[str, Backend]) -> VaultBackend:
    """The running OpenBao backend."""
    backend = backends["vault"]
    assert isinstance(backend, VaultBackend)
    return backend


def _fresh_key(vault: VaultBackend) -> str:
    """A new per-service-account-style key, created through the adapter."""
    name = f"kamus-{secrets.token_hex(16)}"
    vault.kms().ensure_key(name)
    return name


def test_the_wrapped_key_is_vaults_versioned_string_bound_to_the_header(
    vault: VaultBackend,
) -> None:
    wrapped = vault.kms().wrap(SHARED_KEY, DATA_KEY, HEADER)
    assert wrapped.startswith(b"vault:v")
    assert vault.kms().unwrap(SHARED_KEY, wrapped, HEADER) == DATA_KEY
    other_header = HEADER.replace(b"team-a", b"team-b")
    # The adapter's own checks pass (a well-formed blob): Vault itself refuses the other AAD.
    with pytest.raises(InvalidCiphertextError):
        vault.kms().unwrap(SHARED_KEY, wrapped, other_header)
    with pytest.raises(InvalidCiphertextError):
        vault.kms().unwrap(_fresh_key(vault), wrapped, HEADER)


def test_without_associated_data_vault_refuses_the_wrapped_key(vault: VaultBackend) -> None:
    wrapped = vault.kms().wrap(SHARED_KEY, DATA_KEY, HEADER)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="authentication failed"):
        vault.server.root.secrets.transit.decrypt_data(
            SHARED_KEY, ciphertext=wrapped.decode(), mount_point=MOUNT
        )


@pytest.mark.parametrize(
    ("granted", "operation", "capability", "path"),
    [
        ("read-only", "wrap", "`update`", f"{MOUNT}/encrypt/{SHARED_KEY}"),
        ("encrypt-only", "wrap", "`read`", f"{MOUNT}/keys/{SHARED_KEY}"),
        ("encrypt-only", "unwrap", "`update`", f"{MOUNT}/decrypt/{SHARED_KEY}"),
        ("encrypt-only", "ensure_key", "`create` and `update`", f"{MOUNT}/keys/kamus-"),
        ("encrypt-only", "check_ready", "`read`", "auth/token/lookup-self"),
    ],
)
def test_a_missing_permission_is_unavailable_and_named(
    vault: VaultBackend, granted: str, operation: str, capability: str, path: str
) -> None:
    policies = {
        "read-only": f'path "{MOUNT}/keys/{SHARED_KEY}" {{ capabilities = ["read"] }}',
        "encrypt-only": f'path "{MOUNT}/encrypt/*" {{ capabilities = ["update"] }}',
    }
    wrapped = vault.kms().wrap(SHARED_KEY, DATA_KEY, HEADER)
    kms = vault.kms(vault.server.make_token(policies[granted], f"kamus-test-{granted}"))
    calls = {
        "wrap": lambda: kms.wrap(SHARED_KEY, DATA_KEY, HEADER),
        "unwrap": lambda: kms.unwrap(SHARED_KEY, wrapped, HEADER),
        "ensure_key": lambda: kms.ensure_key(f"kamus-{secrets.token_hex(16)}"),
        "check_ready": kms.check_ready,
    }
    with pytest.raises(UnavailableError) as raised:
        calls[operation]()
    assert f"lacks {capability} on {path}" in str(raised.value)
    assert kms._token not in str(raised.value)


def test_an_unknown_token_is_unavailable_and_never_quoted(vault: VaultBackend) -> None:
    token = "s." + secrets.token_urlsafe(18)
    with pytest.raises(UnavailableError, match="invalid, expired or revoked") as raised:
        vault.kms(token).check_ready()
    assert token not in str(raised.value)
    vault.kms().check_ready()


def test_old_ciphertexts_open_after_rotation_until_min_decryption_version_moves_past_them(
    vault: VaultBackend,
) -> None:
    kms, key = vault.kms(), f"kamus-{secrets.token_hex(16)}"
    kms.ensure_key(key)
    old = kms.wrap(key, DATA_KEY, HEADER)
    vault.server.root.secrets.transit.rotate_key(key, mount_point=MOUNT)
    new = kms.wrap(key, DATA_KEY, HEADER)
    assert (old.split(b":")[1], new.split(b":")[1]) == (b"v1", b"v2")
    assert vault.kms().unwrap(key, old, HEADER) == DATA_KEY
    vault.server.root.secrets.transit.update_key_configuration(
        key, min_decryption_version=2, mount_point=MOUNT
    )
    with pytest.raises(InvalidCiphertextError):
        vault.kms().unwrap(key, old, HEADER)
    assert vault.kms().unwrap(key, new, HEADER) == DATA_KEY


def test_a_missing_shared_key_is_reported_and_never_created_by_encrypting(
    vault: VaultBackend,
) -> None:
    missing = f"kamus-missing-{secrets.token_hex(4)}"
    # Even a root token, which transit would let create the key on encrypt, does not create it.
    root_kms = vault.kms(vault.server.root_token)
    with pytest.raises(UnavailableError, match=f"'{missing}' does not exist"):
        root_kms.wrap(missing, DATA_KEY, HEADER)
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault.server.root.secrets.transit.read_key(missing, mount_point=MOUNT)


def test_racing_replicas_creating_one_key_end_up_with_the_same_key(vault: VaultBackend) -> None:
    name = f"kamus-{secrets.token_hex(16)}"
    replicas = [vault.kms() for _ in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(replicas))

    def create(kms: VaultTransitKms) -> None:
        start.wait()
        try:
            kms.ensure_key(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(kms,)) for kms in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    wrapped = replicas[0].wrap(name, DATA_KEY, HEADER)
    assert replicas[-1].unwrap(name, wrapped, HEADER) == DATA_KEY
    key = vault.server.root.secrets.transit.read_key(name, mount_point=MOUNT)["data"]
    assert (key["type"], key["latest_version"], key["derived"]) == ("aes256-gcm96", 1, False)


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ({"key_type": "rsa-2048"}, "is rsa-2048"),
        ({"key_type": "aes256-gcm96", "derived": True}, "is a derived aes256-gcm96"),
    ],
)
def test_a_key_that_cannot_bind_associated_data_is_refused(
    vault: VaultBackend, options: dict[str, object], refusal: str
) -> None:
    name = f"kamus-{secrets.token_hex(16)}"
    vault.server.root.secrets.transit.create_key(name, mount_point=MOUNT, **options)
    with pytest.raises(UnavailableError, match=refusal):
        vault.kms().ensure_key(name)
    with pytest.raises(UnavailableError, match=refusal):
        vault.kms(vault.server.root_token).wrap(name, DATA_KEY, HEADER)


def test_a_hanging_vault_is_unavailable_within_the_timeout(vault: VaultBackend) -> None:
    kms = vault.kms()
    kms.check_ready()
    with vault.outage():
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="did not answer within 1 s"):
            kms.check_ready()
        assert time.monotonic() - started < 3
    kms.check_ready()


def test_a_closed_port_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kms = VaultTransitKms(addr=f"http://127.0.0.1:{port}", token="t", timeout=1)
    with pytest.raises(UnavailableError, match="cannot connect to Vault"):
        kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    # A malformed wrapped key is refused before any call, so it is not an outage.
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap(SHARED_KEY, b"vault:v1:not base64!", HEADER)


def test_a_forked_worker_builds_its_own_client(
    vault: VaultBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms = vault.kms()
    kms.check_ready()
    parent = kms._client()
    assert kms._client() is parent
    monkeypatch.setattr(os, "getpid", lambda: -1)
    kms.check_ready()
    assert kms._client() is not parent


def test_the_service_environment_builds_a_working_provider(vault: VaultBackend) -> None:
    scope = Scope("team-a", "app")
    for mode in KeyMode:
        environ = {**vault.service_env(mode), "KAMUS_DEV_MODE": "false"}
        settings = load_settings("encryptor", environ)
        sealer = Sealer(provider_from_settings(settings, CollectorRegistry()))
        opened = Sealer(vault.provider(mode, CollectorRegistry())).open(
            sealer.seal(b"via settings", scope), scope
        )
        assert opened.plaintext == b"via settings"


def test_the_policy_grants_no_key_configuration(vault: VaultBackend) -> None:
    name = _fresh_key(vault)
    client = hvac.Client(url=vault.addr, token=vault.token, timeout=5)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.update_key_configuration(
            name, min_decryption_version=1, mount_point=MOUNT
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.create_key(
            f"kamus-{secrets.token_hex(16)}", key_type="aes256-gcm96", exportable=True,
            mount_point=MOUNT,
        )  # fmt: skip
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.trim_key(name, min_version=1, mount_point=MOUNT)
    client.adapter.close()
    assert "allowed_parameters" in POLICY


def test_the_dev_server_is_stopped_at_exit(tmp_path: Path) -> None:
    with running(tmp_path) as backend:
        process = backend.server.process
        backend.kms().check_ready()
    assert process.poll() is not None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", backend.server.port), 1):
        pass
    assert not (tmp_path / ".vault-token").exists()
