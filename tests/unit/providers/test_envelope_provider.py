from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fake_kms import FakeKms
from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.envelope import EnvelopeProvider, KmsMetrics, service_account_key_name
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError
from kamus_kms.provider import KeyMode
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer

A, B = Scope("team-a", "app"), Scope("team-b", "app")
NAMING_KEY = b"n" * 32


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kms() -> FakeKms:
    """A fake KMS holding the shared key."""
    fake = FakeKms()
    fake.ensure_key("kamus-shared")
    fake.calls.clear()
    return fake


def _provider(kms: FakeKms, mode: KeyMode = KeyMode.SHARED, **options: object) -> EnvelopeProvider:
    return EnvelopeProvider(
        kms, mode=mode, shared_key="kamus-shared", naming_key=NAMING_KEY,
        metrics=KmsMetrics(CollectorRegistry()), **options,  # type: ignore[arg-type]
    )  # fmt: skip


def test_every_ciphertext_gets_its_own_data_key_wrapped_with_the_header(kms: FakeKms) -> None:
    sealer = Sealer(_provider(kms))
    first, second = sealer.seal(b"same", A), sealer.seal(b"same", A)
    assert Ciphertext.parse(first).wrapped_key != Ciphertext.parse(second).wrapped_key
    assert kms.calls["wrap"] == 2
    parsed = Ciphertext.parse(first)
    with pytest.raises(InvalidCiphertextError):  # the wrap is bound to the header
        kms.unwrap("kamus-shared", parsed.wrapped_key, b"another header")


def test_unwrapped_keys_are_cached_until_the_ttl_passes(kms: FakeKms) -> None:
    clock = Clock()
    text = Sealer(_provider(kms)).seal(b"x", A)
    sealer = Sealer(_provider(kms, cache_seconds=60, clock=clock))
    for _ in range(10):
        sealer.open(text, A)
    assert kms.calls["unwrap"] == 1
    clock.now += 61
    sealer.open(text, A)
    assert kms.calls["unwrap"] == 2


def test_the_cache_is_bounded(kms: FakeKms) -> None:
    sealer = Sealer(_provider(kms))
    texts = [sealer.seal(b"x", A) for _ in range(5)]
    opener = Sealer(_provider(kms, cache_size=2))
    for text in texts + texts:
        opener.open(text, A)
    assert kms.calls["unwrap"] == 10


def test_a_header_naming_another_key_is_refused_before_any_kms_call(kms: FakeKms) -> None:
    text = Sealer(_provider(kms)).seal(b"x", A)
    forged = text.replace(":kamus-shared:", ":other-key:")
    kms.calls.clear()
    with pytest.raises(InvalidCiphertextError):
        Sealer(_provider(kms)).open(forged, A)
    assert kms.calls == {}


def test_per_service_account_keys_are_created_once_and_keyed(kms: FakeKms) -> None:
    sealer = Sealer(_provider(kms, KeyMode.PER_SERVICE_ACCOUNT))
    for _ in range(3):
        sealer.seal(b"a", A)
    text_b = sealer.seal(b"b", B)
    assert kms.calls["ensure_key"] == 2
    assert Ciphertext.parse(text_b).key_id == service_account_key_name(NAMING_KEY, B)
    assert service_account_key_name(b"m" * 32, B) != service_account_key_name(NAMING_KEY, B)
    # B's ciphertext, re-headed for A, names B's key: refused without asking the KMS.
    forged = text_b.replace(":team-b:app:", ":team-a:app:")
    with pytest.raises(InvalidCiphertextError):
        sealer.open(forged, A)


def test_kms_outages_propagate_as_unavailable(kms: FakeKms) -> None:
    text = Sealer(_provider(kms)).seal(b"x", A)
    kms.available = False
    with pytest.raises(UnavailableError):
        Sealer(_provider(kms)).seal(b"x", A)
    with pytest.raises(UnavailableError):
        Sealer(_provider(kms)).open(text, A)


@pytest.mark.parametrize(
    ("mode", "options"),
    [(KeyMode.SHARED, {"shared_key": None}), (KeyMode.PER_SERVICE_ACCOUNT, {"naming_key": b"s"})],
)
def test_each_mode_requires_its_key_configuration(
    mode: KeyMode, options: dict[str, object]
) -> None:
    base: dict[str, object] = {"shared_key": "k", "naming_key": NAMING_KEY} | options
    with pytest.raises(ConfigurationError):
        EnvelopeProvider(FakeKms(), mode=mode, **base)  # type: ignore[arg-type]


def test_concurrent_opens_of_one_ciphertext_share_one_unwrap(kms: FakeKms) -> None:
    text = Sealer(_provider(kms)).seal(b"storm", A)
    sealer = Sealer(_provider(kms))
    kms.delay = 0.2
    with ThreadPoolExecutor(max_workers=16) as pool:
        opened = list(pool.map(lambda _: sealer.open(text, A).plaintext, range(32)))
    assert opened == [b"storm"] * 32
    assert kms.calls["unwrap"] == 1


def test_a_failed_shared_unwrap_fails_every_waiter(kms: FakeKms) -> None:
    text = Sealer(_provider(kms)).seal(b"storm", A)
    sealer = Sealer(_provider(kms))
    kms.delay, kms.available = 0.2, False
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(sealer.open, text, A) for _ in range(8)]
    for future in futures:
        with pytest.raises(UnavailableError):
            future.result()
