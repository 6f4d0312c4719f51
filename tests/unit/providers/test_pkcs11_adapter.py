"""The PKCS#11 adapter against a SoftHSM2 token: header binding, key versions, errors, keys."""

from __future__ import annotations

import importlib
import os
import struct
import sys
import uuid
from pathlib import Path

import pytest
from backend_pkcs11 import SHARED_KEY, TOKEN_LABEL, USER_PIN, Pkcs11Backend
from kms_backend import Backend
from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError
from kamus_kms.provider import KeyMode
from kamus_kms.providers.pkcs11 import AES_GCM_TAG, Pkcs11Kms, WrappedKey, wrapped_key_version
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.providers import remote_kms
from kamus_service.settings import Provider, Settings

DATA_KEY = bytes(range(32))
HEADER = b"kamus:v1:pkcs11:team-a:app:kamus-shared:"
A, B = Scope("team-a", "app"), Scope("team-b", "app")


@pytest.fixture
def backend(backends: dict[str, Backend]) -> Pkcs11Backend:
    """The SoftHSM2 backend."""
    started = backends["pkcs11"]
    assert isinstance(started, Pkcs11Backend)
    return started


@pytest.fixture
def kms(backend: Pkcs11Backend) -> Pkcs11Kms:
    """An adapter over the test token."""
    return backend.kms()


def _fresh_key(kms: Pkcs11Kms) -> str:
    name = f"kamus-test-{uuid.uuid4().hex}"
    kms.ensure_key(name)
    return name


def _refused_unwraps(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(
        "kamus_kms_calls_total", {"provider": "pkcs11", "operation": "unwrap", "result": "refused"}
    )
    return value or 0.0


def test_a_wrapped_key_opens_only_under_the_header_it_was_made_for(kms: Pkcs11Kms) -> None:
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    assert kms.unwrap(SHARED_KEY, wrapped, HEADER) == DATA_KEY
    for other in (HEADER.replace(b"team-a", b"team-b"), HEADER + b"x", b""):
        with pytest.raises(InvalidCiphertextError):
            kms.unwrap(SHARED_KEY, wrapped, other)


def test_a_wrapped_key_moved_into_another_ciphertext_is_refused_by_the_hsm(
    backend: Pkcs11Backend,
) -> None:
    sealer = Sealer(backend.provider(KeyMode.SHARED, CollectorRegistry()))
    first, second = Ciphertext.parse(sealer.seal(b"a", A)), Ciphertext.parse(sealer.seal(b"b", B))
    forged = Ciphertext(
        provider=second.provider, scope=second.scope, key_id=second.key_id,
        wrapped_key=first.wrapped_key, nonce=second.nonce, sealed=second.sealed,
    ).encode()  # fmt: skip
    registry = CollectorRegistry()
    with pytest.raises(InvalidCiphertextError):
        Sealer(backend.provider(KeyMode.SHARED, registry)).open(forged, B)
    # The HSM itself refused the wrapped key (the AEAD of the plaintext was never reached).
    assert _refused_unwraps(registry) == 1


def test_the_blob_records_its_mechanism_and_key_version(kms: Pkcs11Kms) -> None:
    name = _fresh_key(kms)
    wrapped = kms.wrap(name, DATA_KEY, HEADER)
    assert wrapped[0] == AES_GCM_TAG
    blob = WrappedKey.parse(wrapped)
    assert len(blob.key_id) == 12
    assert len(blob.nonce) == 12
    assert len(blob.sealed) == len(DATA_KEY) + 16
    assert blob.version == 1


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01", b"\x02\x0c" + bytes(12 + 12 + 48), b"\x01\x02ab" + bytes(60),
     b"\x01\x0c" + bytes(12 + 12 + 15)],
    ids=["empty", "no-id", "unknown-mechanism", "short-id", "short-tag"],
)  # fmt: skip
def test_malformed_blobs_are_invalid_ciphertext(kms: Pkcs11Kms, blob: bytes) -> None:
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap(SHARED_KEY, blob, HEADER)


def test_a_key_version_the_token_does_not_hold_is_invalid_ciphertext(kms: Pkcs11Kms) -> None:
    blob = WrappedKey.parse(kms.wrap(SHARED_KEY, DATA_KEY, HEADER))
    forged = WrappedKey(struct.pack(">I", 999) + blob.key_id[4:], blob.nonce, blob.sealed)
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap(SHARED_KEY, forged.encode(), HEADER)


def test_a_key_missing_from_the_token_is_unavailable_and_named(kms: Pkcs11Kms) -> None:
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    with pytest.raises(UnavailableError, match="no AES key labelled 'kamus-missing'"):
        kms.wrap("kamus-missing", DATA_KEY, HEADER)
    with pytest.raises(UnavailableError, match="no AES key labelled 'kamus-missing'"):
        kms.unwrap("kamus-missing", wrapped, HEADER)


def test_rotation_wraps_with_the_next_version_and_every_version_still_unwraps(
    kms: Pkcs11Kms,
) -> None:
    name = _fresh_key(kms)
    old = kms.wrap(name, DATA_KEY, HEADER)
    assert kms.rotate_key(name) == 2
    new = kms.wrap(name, DATA_KEY, HEADER)
    assert (wrapped_key_version(old), wrapped_key_version(new)) == (1, 2)
    fresh = Pkcs11Kms(library=kms.library, token_label=TOKEN_LABEL, pin=USER_PIN)
    assert fresh.unwrap(name, old, HEADER) == fresh.unwrap(name, new, HEADER) == DATA_KEY


def test_ensure_key_is_idempotent(backend: Pkcs11Backend, kms: Pkcs11Kms) -> None:
    name = _fresh_key(kms)
    kms.ensure_key(name)
    backend.kms().ensure_key(name)
    assert len(backend.inspect_keys(name)) == 1


def test_equal_versions_resolve_to_the_lowest_cka_id_everywhere(
    backend: Pkcs11Backend, kms: Pkcs11Kms
) -> None:
    name = f"kamus-test-{uuid.uuid4().hex}"
    # What two replicas racing ensure_key leave behind: two version-1 keys.
    for _ in range(2):
        kms._call(
            "create a duplicate", lambda token, session: kms._generate(token, session, name, 1)
        )
    ids = sorted(key["ID"] for key in backend.inspect_keys(name))
    assert len(ids) == 2
    for adapter in (kms, backend.kms()):
        assert WrappedKey.parse(adapter.wrap(name, DATA_KEY, HEADER)).key_id.hex() == ids[0]


def test_created_keys_are_sensitive_never_extractable_token_objects(
    backend: Pkcs11Backend, kms: Pkcs11Kms
) -> None:
    (key,) = backend.inspect_keys(_fresh_key(kms))
    assert key == key | {
        "TOKEN": True, "PRIVATE": True, "SENSITIVE": True, "ALWAYS_SENSITIVE": True,
        "EXTRACTABLE": False, "NEVER_EXTRACTABLE": True, "ENCRYPT": True, "DECRYPT": True,
        "WRAP": False, "UNWRAP": False, "SIGN": False, "VERIFY": False, "DERIVE": False,
        "VALUE_LEN": 32,
    }  # fmt: skip
    assert bytes.fromhex(key["ID"])[:4] == struct.pack(">I", 1)


def test_an_outage_is_unavailable_creates_nothing_and_recovers(
    backend: Pkcs11Backend, kms: Pkcs11Kms
) -> None:
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    kms.check_ready()
    name = f"kamus-test-{uuid.uuid4().hex}"
    with backend.outage():
        for call in (
            kms.check_ready,
            lambda: kms.unwrap(SHARED_KEY, wrapped, HEADER),
            lambda: kms.wrap(SHARED_KEY, DATA_KEY, HEADER),
            lambda: kms.ensure_key(name),
        ):
            with pytest.raises(UnavailableError, match=f"token '{TOKEN_LABEL}'") as caught:
                call()
            assert USER_PIN not in str(caught.value)
    kms.check_ready()
    assert kms.unwrap(SHARED_KEY, wrapped, HEADER) == DATA_KEY
    assert backend.inspect_keys(name) == []


def test_invalid_key_names_are_refused(kms: Pkcs11Kms) -> None:
    with pytest.raises(ConfigurationError, match="not a valid key name"):
        kms.wrap("no spaces", DATA_KEY, HEADER)


def test_a_wrong_library_is_a_configuration_error(tmp_path: Path) -> None:
    not_a_library = tmp_path / "libnothing.so"
    not_a_library.write_text("not ELF")
    cases = {
        str(tmp_path / "missing.so"): "no PKCS#11 module at",
        str(not_a_library): "cannot load the PKCS#11 module",
        # A shared library that is not a PKCS#11 module (imported here: no other test may be
        # relied on to have loaded it).
        str(importlib.import_module("pkcs11._pkcs11").__file__): "is not a PKCS#11 module",
    }
    for library, message in cases.items():
        with pytest.raises(ConfigurationError, match=message):
            Pkcs11Kms(library=library, token_label=TOKEN_LABEL, pin=USER_PIN)


def test_a_wrong_token_label_is_a_configuration_error_that_lists_the_tokens(
    backend: Pkcs11Backend,
) -> None:
    with pytest.raises(ConfigurationError, match=f"no token labelled 'nope'.*'{TOKEN_LABEL}'"):
        backend.kms(token_label="nope")
    with pytest.raises(ConfigurationError, match="1 to 32 bytes"):
        backend.kms(token_label="x" * 33)


def test_a_second_pin_for_one_token_in_one_process_is_refused_without_showing_it(
    backend: Pkcs11Backend,
) -> None:
    backend.kms()
    with pytest.raises(ConfigurationError, match="another PIN") as caught:
        backend.kms(pin="another-secret-pin")
    assert "another-secret-pin" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="KAMUS_PKCS11_PIN is empty"):
        backend.kms(pin="")


def test_settings_build_the_adapter(backend: Pkcs11Backend) -> None:
    settings = Settings(
        service="encryptor", provider=Provider.PKCS11, pkcs11_library=Path(backend.library),
        pkcs11_token_label=TOKEN_LABEL, pkcs11_pin=USER_PIN,
    )  # fmt: skip
    adapter = remote_kms(settings)
    assert isinstance(adapter, Pkcs11Kms)
    assert USER_PIN not in repr(adapter)


def test_without_python_pkcs11_the_module_raises_import_error(
    monkeypatch: pytest.MonkeyPatch, backend: Pkcs11Backend
) -> None:
    monkeypatch.setitem(sys.modules, "pkcs11", None)
    monkeypatch.delitem(sys.modules, "kamus_kms.providers.pkcs11")
    with pytest.raises(ImportError):
        importlib.import_module("kamus_kms.providers.pkcs11")
    settings = Settings(
        service="encryptor", provider=Provider.PKCS11, pkcs11_library=Path(backend.library),
        pkcs11_token_label=TOKEN_LABEL, pkcs11_pin=USER_PIN,
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"pip install 'kamus-kms\[pkcs11\]'"):
        remote_kms(settings)


def test_data_keys_of_any_length_round_trip(kms: Pkcs11Kms) -> None:
    for data_key in (b"", os.urandom(16), os.urandom(64)):
        assert kms.unwrap(SHARED_KEY, kms.wrap(SHARED_KEY, data_key, HEADER), HEADER) == data_key
