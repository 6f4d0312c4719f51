"""The Cloud KMS adapter against a local KeyManagementService over real gRPC."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from backend_gcp import KEY_RING, NAMING_KEY, SHARED_KEY, GcpBackend, admin_client
from fake_gcp_kms_server import FakeKeyManagementService, crc32c, serving
from google.api_core import exceptions as api_exceptions
from google.cloud import kms_v1
from prometheus_client import CollectorRegistry

from kamus_kms.envelope import EnvelopeProvider
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError
from kamus_kms.provider import KeyMode
from kamus_kms.providers import gcp
from kamus_kms.providers.gcp import GcpKms
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.providers import provider_from_settings, remote_kms
from kamus_service.settings import Provider, Settings, load_settings

DATA_KEY = bytes(range(32))
HEADER = b"kamus:v1:gcp:team-a:app:kamus-shared:"
SCOPE = Scope("team-a", "app")


@pytest.fixture(scope="module")
def backend() -> Iterator[GcpBackend]:
    """A fake Cloud KMS of this module alone, holding the shared key."""
    with serving([KEY_RING]) as fake:
        yield GcpBackend(fake)


@pytest.fixture
def fake(backend: GcpBackend) -> Iterator[FakeKeyManagementService]:
    """The module's fake, its test hooks reset after each test."""
    yield backend.fake
    backend.fake.reset_faults()


@pytest.fixture
def kms(backend: GcpBackend, fake: FakeKeyManagementService) -> GcpKms:
    """A fresh adapter on the fake."""
    return backend.kms()


def test_wrap_and_unwrap_send_the_crc32c_of_everything_they_send(
    kms: GcpKms, fake: FakeKeyManagementService
) -> None:
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    encrypt = fake.last_request["Encrypt"]
    assert encrypt.name == f"{KEY_RING}/cryptoKeys/{SHARED_KEY}"
    assert encrypt.additional_authenticated_data == HEADER
    assert encrypt.plaintext_crc32c == crc32c(DATA_KEY)
    assert encrypt.additional_authenticated_data_crc32c == crc32c(HEADER)
    assert kms.unwrap(SHARED_KEY, wrapped, HEADER) == DATA_KEY
    decrypt = fake.last_request["Decrypt"]
    assert decrypt.ciphertext_crc32c == crc32c(wrapped)
    assert decrypt.additional_authenticated_data_crc32c == crc32c(HEADER)


def test_the_fake_refuses_a_request_whose_checksum_does_not_match(
    fake: FakeKeyManagementService,
) -> None:
    request = kms_v1.EncryptRequest(
        name=f"{KEY_RING}/cryptoKeys/{SHARED_KEY}", plaintext=DATA_KEY,
        plaintext_crc32c=crc32c(DATA_KEY) ^ 1,
    )  # fmt: skip
    with (
        admin_client(fake) as client,
        pytest.raises(api_exceptions.InvalidArgument, match="checksum"),
    ):
        client.encrypt(request=request, timeout=2)


def test_a_request_corrupted_in_transit_is_unavailable_never_an_invalid_ciphertext(
    kms: GcpKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    monkeypatch.setattr(gcp, "crc32c", lambda data: 12345)
    with pytest.raises(UnavailableError, match="CRC32C"):
        kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    with pytest.raises(UnavailableError, match="CRC32C"):
        kms.unwrap(SHARED_KEY, wrapped, HEADER)


@pytest.mark.parametrize(
    "field",
    ["ciphertext_crc32c", "verified_plaintext_crc32c",
     "verified_additional_authenticated_data_crc32c"],
)  # fmt: skip
def test_an_encrypt_response_failing_its_checksums_is_unavailable_and_a_retry_works(
    kms: GcpKms, fake: FakeKeyManagementService, field: str
) -> None:
    fake.corrupt_next(field)
    with pytest.raises(UnavailableError, match="corrupted in transit"):
        kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    assert kms.unwrap(SHARED_KEY, kms.wrap(SHARED_KEY, DATA_KEY, HEADER), HEADER) == DATA_KEY


def test_a_decrypt_response_failing_its_checksum_is_unavailable_and_a_retry_works(
    kms: GcpKms, fake: FakeKeyManagementService
) -> None:
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    fake.corrupt_next("plaintext_crc32c")
    with pytest.raises(UnavailableError, match="corrupted in transit"):
        kms.unwrap(SHARED_KEY, wrapped, HEADER)
    assert kms.unwrap(SHARED_KEY, wrapped, HEADER) == DATA_KEY


@pytest.mark.parametrize(
    ("wrapped", "header"),
    [
        (None, HEADER.replace(b"team-a", b"team-b")),
        (b"garbage", HEADER),
        (b"fkms\x00\x00\x00\x63" + bytes(40), HEADER),
    ],
    ids=["other-header", "garbage", "unknown-version"],
)
def test_a_wrapped_key_the_kms_refuses_is_an_invalid_ciphertext(
    kms: GcpKms, wrapped: bytes | None, header: bytes
) -> None:
    wrapped = wrapped or kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap(SHARED_KEY, wrapped, header)


def test_a_key_that_does_not_exist_refuses_decrypt_and_makes_encrypt_unavailable(
    kms: GcpKms,
) -> None:
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap("never-created", wrapped, HEADER)
    with pytest.raises(UnavailableError, match=r"no key 'never-created' of the configured"):
        kms.wrap("never-created", DATA_KEY, HEADER)


@pytest.mark.parametrize(
    ("permission", "operation"),
    [
        ("cloudkms.cryptoKeyVersions.useToEncrypt",
         lambda kms: kms.wrap(SHARED_KEY, DATA_KEY, HEADER)),
        ("cloudkms.cryptoKeyVersions.useToDecrypt",
         lambda kms: kms.unwrap(SHARED_KEY, b"fkms-anything", HEADER)),
        ("cloudkms.cryptoKeys.create", lambda kms: kms.ensure_key("kamus-denied")),
    ],
    ids=["wrap", "unwrap", "ensure_key"],
)  # fmt: skip
def test_a_denied_permission_is_unavailable_and_named(
    kms: GcpKms,
    fake: FakeKeyManagementService,
    permission: str,
    operation: Callable[[GcpKms], object],
) -> None:
    fake.deny(permission)
    with pytest.raises(UnavailableError) as raised:
        operation(kms)
    assert permission in str(raised.value)


def test_a_disabled_key_version_is_unavailable_and_opens_again_once_enabled(
    kms: GcpKms, fake: FakeKeyManagementService
) -> None:
    kms.ensure_key("kamus-disabled")
    wrapped = kms.wrap("kamus-disabled", DATA_KEY, HEADER)
    resource = kms.key_resource("kamus-disabled")
    fake.set_enabled(resource, 1, enabled=False)
    with pytest.raises(UnavailableError, match="disabled or destroyed"):
        kms.unwrap("kamus-disabled", wrapped, HEADER)
    with pytest.raises(UnavailableError, match="disabled or destroyed"):
        kms.wrap("kamus-disabled", DATA_KEY, HEADER)
    fake.set_enabled(resource, 1, enabled=True)
    assert kms.unwrap("kamus-disabled", wrapped, HEADER) == DATA_KEY


OPERATIONS: dict[str, tuple[str, Callable[[GcpKms], object]]] = {
    "wrap": ("Encrypt", lambda kms: kms.wrap(SHARED_KEY, DATA_KEY, HEADER)),
    "unwrap": ("Decrypt",
               lambda kms: kms.unwrap(SHARED_KEY, kms.wrap(SHARED_KEY, DATA_KEY, HEADER), HEADER)),
    "ensure_key": ("CreateCryptoKey", lambda kms: kms.ensure_key("kamus-status")),
    "check_ready": ("GetKeyRing", lambda kms: kms.check_ready()),
}  # fmt: skip


def _outcome(call: Callable[[], object]) -> type[Exception] | None:
    try:
        call()
    except Exception as exc:
        return type(exc)
    return None


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    "code", [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
)
def test_every_grpc_status_becomes_one_of_our_errors(
    kms: GcpKms, fake: FakeKeyManagementService, code: grpc.StatusCode, operation: str
) -> None:
    method, call = OPERATIONS[operation]
    fake.fail_next(method, code)
    expected: type[Exception] | None = UnavailableError
    if code is grpc.StatusCode.UNAVAILABLE:
        expected = None  # a lost connection is retried within the deadline
    elif (operation, code) in {("ensure_key", grpc.StatusCode.ALREADY_EXISTS),
                               ("check_ready", grpc.StatusCode.PERMISSION_DENIED)}:  # fmt: skip
        expected = None  # the key exists; the KMS is reachable
    elif operation == "unwrap" and code in {grpc.StatusCode.INVALID_ARGUMENT,
                                            grpc.StatusCode.NOT_FOUND}:  # fmt: skip
        expected = InvalidCiphertextError
    assert _outcome(lambda: call(kms)) is expected
    assert fake.calls[method] > 0


def test_two_replicas_racing_to_create_a_key_end_up_sharing_it(
    backend: GcpBackend, fake: FakeKeyManagementService
) -> None:
    scope = Scope("race", "app")
    replicas = [
        EnvelopeProvider(backend.kms(), mode=KeyMode.PER_SERVICE_ACCOUNT, naming_key=NAMING_KEY)
        for _ in range(2)
    ]
    creates_before = fake.calls["CreateCryptoKey"]
    barrier = threading.Barrier(len(replicas))
    key_ids: list[str] = []
    failures: list[BaseException] = []

    def ensure(replica: EnvelopeProvider) -> None:
        barrier.wait()
        try:
            key_ids.append(replica.current_key_id(scope))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=ensure, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert key_ids[0] == key_ids[1]
    assert fake.calls["CreateCryptoKey"] - creates_before == 2
    assert f"{KEY_RING}/cryptoKeys/{key_ids[0]}" in fake.key_names()
    first, second = (Sealer(replica) for replica in replicas)
    assert second.open(first.seal(b"from one", scope), scope).plaintext == b"from one"
    assert first.open(second.seal(b"from two", scope), scope).plaintext == b"from two"


def test_ensure_key_creates_a_symmetric_key_once(
    kms: GcpKms, fake: FakeKeyManagementService
) -> None:
    kms.ensure_key("kamus-created")
    kms.ensure_key("kamus-created")
    created = fake.last_request["CreateCryptoKey"]
    assert created.parent == KEY_RING
    assert created.crypto_key.purpose == kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT
    assert kms.unwrap("kamus-created", kms.wrap("kamus-created", DATA_KEY, HEADER), HEADER)


def test_readiness_needs_a_reachable_kms_but_not_the_key_ring_get_permission(
    backend: GcpBackend, kms: GcpKms, fake: FakeKeyManagementService
) -> None:
    kms.check_ready()
    missing = GcpKms(
        key_ring=KEY_RING.replace("keyRings/kamus", "keyRings/absent"),
        endpoint=fake.endpoint, insecure=True, timeout=1,
    )  # fmt: skip
    with pytest.raises(UnavailableError, match="key ring does not exist"):
        missing.check_ready()
    fake.deny("cloudkms.keyRings.get")
    kms.check_ready()
    with backend.outage(), pytest.raises(UnavailableError, match="unreachable"):
        kms.check_ready()


def test_every_call_honours_the_timeout(
    backend: GcpBackend, fake: FakeKeyManagementService
) -> None:
    kms = backend.kms(timeout=0.2)
    fake.delay = 1.0
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    assert time.monotonic() - started < 0.8


@pytest.mark.parametrize(
    "key_ring",
    ["", "kamus", "projects/p/locations/global", "projects/p/locations/global/keyRings/",
     "projects/p/locations/global/keyRings/r/cryptoKeys/k", "projects//locations/l/keyRings/r",
     "projects/p/locations/global/keyRings/r\n"],
)  # fmt: skip
def test_a_key_ring_that_is_not_a_key_ring_resource_is_refused_at_build(key_ring: str) -> None:
    with pytest.raises(ConfigurationError, match="KAMUS_GCP_KEY_RING"):
        GcpKms(key_ring=key_ring)


def test_an_insecure_endpoint_must_be_named() -> None:
    with pytest.raises(ConfigurationError, match="KAMUS_GCP_ENDPOINT"):
        GcpKms(key_ring=KEY_RING, insecure=True)


@pytest.mark.parametrize("key_name", ["", "a/b", "x" * 64, "kamus.shared", "ключ"])
def test_a_key_name_that_cannot_be_a_crypto_key_is_a_configuration_error(
    kms: GcpKms, key_name: str
) -> None:
    with pytest.raises(ConfigurationError, match="CryptoKey name"):
        kms.wrap(key_name, DATA_KEY, HEADER)


def test_each_process_opens_its_own_channel(kms: GcpKms, monkeypatch: pytest.MonkeyPatch) -> None:
    kms.check_ready()
    parent = kms._kms_client()
    assert kms._kms_client() is parent
    monkeypatch.setattr(os, "getpid", lambda: -1)
    kms.check_ready()
    assert kms._kms_client() is not parent


def test_without_google_credentials_the_kms_is_unavailable_and_says_how_to_provide_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    kms = GcpKms(key_ring=KEY_RING, endpoint="127.0.0.1:1", timeout=0.5)
    with pytest.raises(UnavailableError, match="Application Default Credentials"):
        kms.check_ready()


def test_the_service_environment_builds_a_working_provider(backend: GcpBackend) -> None:
    for mode in KeyMode:
        environ = {**backend.service_env(mode), "KAMUS_DEV_MODE": "false"}
        sealer = Sealer(provider_from_settings(load_settings("encryptor", environ),
                                               CollectorRegistry()))  # fmt: skip
        text = sealer.seal(b"via settings", SCOPE)
        assert Sealer(backend.provider(mode, CollectorRegistry())).open(text, SCOPE).plaintext == (
            b"via settings"
        )


@pytest.mark.parametrize("module", ["google.cloud.kms_v1", "google_crc32c", "grpc"])
def test_without_the_sdk_the_module_raises_import_error_and_settings_name_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    if module == "google.cloud.kms_v1":
        # `from google.cloud import kms_v1` would otherwise find the loaded submodule attribute.
        monkeypatch.delattr(sys.modules["google.cloud"], "kms_v1")
    monkeypatch.delitem(sys.modules, "kamus_kms.providers.gcp")
    with pytest.raises(ImportError):
        importlib.import_module("kamus_kms.providers.gcp")
    settings = Settings(service="encryptor", provider=Provider.GCP, gcp_key_ring=KEY_RING)
    with pytest.raises(ConfigurationError, match=r"pip install 'kamus-kms\[gcp\]'"):
        remote_kms(settings)
