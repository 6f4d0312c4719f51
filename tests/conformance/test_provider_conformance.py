"""One suite for every key provider, local keyring included, each against its real backend."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kms_backend import REMOTE_BACKENDS, Backend
from prometheus_client import CollectorRegistry

from kamus_kms.auditsign import key_id, seal_private, signing_key
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import (
    ConfigurationError,
    InvalidCiphertextError,
    ScopeMismatchError,
    UnavailableError,
)
from kamus_kms.keyring import Keyring
from kamus_kms.provider import KeyMode
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer

CASES = [("local", KeyMode.SHARED)] + [(b, m) for b in REMOTE_BACKENDS for m in KeyMode]
REMOTE_CASES = CASES[1:]
A, B = Scope("team-a", "app"), Scope("team-b", "app")


def _ids(case: tuple[str, KeyMode]) -> str:
    return f"{case[0]}-{case[1].value}"


@pytest.fixture(params=CASES, ids=_ids)
def case(request: pytest.FixtureRequest, backends: dict[str, Backend]) -> tuple[Backend, KeyMode]:
    """A running backend and a key mode."""
    name, mode = request.param
    return backends[name], mode


@pytest.fixture(params=REMOTE_CASES, ids=_ids)
def remote(request: pytest.FixtureRequest, backends: dict[str, Backend]) -> tuple[Backend, KeyMode]:
    """A running remote KMS backend and a key mode."""
    name, mode = request.param
    return backends[name], mode


def _sealer(backend: Backend, mode: KeyMode, registry: CollectorRegistry | None = None) -> Sealer:
    return Sealer(backend.provider(mode, registry or CollectorRegistry()))


def _kms_calls(registry: CollectorRegistry, operation: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "kamus_kms_calls_total" and sample.labels["operation"] == operation:
                total += sample.value
    return total


@pytest.mark.parametrize("plaintext", [b"", b"x", b"s3cr3t" * 100, "ünïcödé ✓".encode()])
def test_round_trip(case: tuple[Backend, KeyMode], plaintext: bytes) -> None:
    backend, mode = case
    text = _sealer(backend, mode).seal(plaintext, A)
    assert text.startswith(f"kamus:v1:{backend.name}:team-a:app:")
    # Another replica (a fresh provider, cold caches) opens it.
    assert _sealer(backend, mode).open(text, A).plaintext == plaintext


def test_a_ciphertext_never_opens_for_another_scope(case: tuple[Backend, KeyMode]) -> None:
    backend, mode = case
    sealer = _sealer(backend, mode)
    text = sealer.seal(b"for team-a", A)
    with pytest.raises(ScopeMismatchError):
        sealer.open(text, B)
    forged = text.replace(":team-a:app:", ":team-b:app:", 1)
    with pytest.raises(InvalidCiphertextError):
        _sealer(backend, mode).open(forged, B)


def test_any_tampering_is_the_one_opaque_error(case: tuple[Backend, KeyMode]) -> None:
    backend, mode = case
    text = _sealer(backend, mode).seal(b"tamper with me", A)
    body_start = len(Ciphertext.parse(text).header)
    positions = [len("kamus:v1:") + 1, body_start, body_start + 3, body_start + 12,
                 (body_start + len(text)) // 2, len(text) - 2]  # fmt: skip
    for position in positions:
        replacement = "B" if text[position] != "B" else "C"
        tampered = text[:position] + replacement + text[position + 1 :]
        with pytest.raises(InvalidCiphertextError):
            _sealer(backend, mode).open(tampered, A)


def test_rotation_keeps_old_ciphertexts_and_seals_new_ones_with_the_new_version(
    case: tuple[Backend, KeyMode],
) -> None:
    backend, mode = case
    provider = backend.provider(mode, CollectorRegistry())
    sealer = Sealer(provider)
    old = sealer.seal(b"before", A)
    backend.rotate(provider, Ciphertext.parse(old).key_id)
    new = sealer.seal(b"after", A)
    assert backend.version_of(provider, old) != backend.version_of(provider, new)
    fresh = _sealer(backend, mode)
    assert fresh.open(old, A).plaintext == b"before"
    assert fresh.open(new, A).plaintext == b"after"


def test_a_kms_outage_is_unavailable_never_a_wrong_answer(remote: tuple[Backend, KeyMode]) -> None:
    backend, mode = remote
    text = _sealer(backend, mode).seal(b"made before the outage", A)
    cold = _sealer(backend, mode)
    with backend.outage():
        with pytest.raises(UnavailableError):
            _sealer(backend, mode).seal(b"during", A)
        with pytest.raises(UnavailableError):
            cold.open(text, A)
    assert cold.open(text, A).plaintext == b"made before the outage"


def test_repeated_decrypts_of_one_ciphertext_call_the_kms_once(
    remote: tuple[Backend, KeyMode],
) -> None:
    backend, mode = remote
    text = _sealer(backend, mode).seal(b"restart storm", A)
    registry = CollectorRegistry()
    sealer = _sealer(backend, mode, registry)
    for _ in range(20):
        assert sealer.open(text, A).plaintext == b"restart storm"
    assert _kms_calls(registry, "unwrap") == 1


@pytest.mark.parametrize("name", REMOTE_BACKENDS)
def test_per_service_account_keys_are_distinct_and_do_not_name_the_scope(
    backends: dict[str, Backend], name: str
) -> None:
    backend = backends[name]
    sealer = _sealer(backend, KeyMode.PER_SERVICE_ACCOUNT)
    key_a = Ciphertext.parse(sealer.seal(b"a", A)).key_id
    key_b = Ciphertext.parse(sealer.seal(b"b", B)).key_id
    assert key_a != key_b
    for key in (key_a, key_b):
        assert "team" not in key
        assert "app" not in key


def test_a_signing_key_sealed_by_the_provider_opens_with_it_only(
    case: tuple[Backend, KeyMode],
) -> None:
    # The audit signing key kept sealed by the KMS/HSM (KAMUS_AUDIT_SIGNING_KEY): another replica
    # opens it, another provider's keys do not.
    backend, mode = case
    private = Ed25519PrivateKey.generate()
    sealed = seal_private(private, backend.provider(mode, CollectorRegistry()))
    assert sealed.startswith(f"kamus-audit-signing-key:v1:{key_id(private.public_key())}:")
    opened = signing_key(sealed, backend.provider(mode, CollectorRegistry()))
    assert opened.private_bytes_raw() == private.private_bytes_raw()
    with pytest.raises(ConfigurationError, match=r"does not open|is sealed by"):
        signing_key(sealed, LocalKeyringProvider(Keyring.generate()))
