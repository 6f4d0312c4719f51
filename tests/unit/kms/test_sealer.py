from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import InvalidCiphertextError, PayloadTooLargeError, ScopeMismatchError
from kamus_kms.keyring import Keyring, KeyState
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer

_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
_subdomain = st.from_regex(
    r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}", fullmatch=True
)
scopes = st.builds(Scope, _label, _subdomain)
plaintexts = st.text(max_size=400).map(lambda s: s.encode("utf-8")) | st.binary(max_size=400)
_fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@_fixture_ok
@given(plaintext=plaintexts, scope=scopes)
def test_round_trip_for_any_plaintext_and_scope(
    sealer: Sealer, plaintext: bytes, scope: Scope
) -> None:
    text = sealer.seal(plaintext, scope)
    assert text.startswith(f"kamus:v1:local:{scope.namespace}:{scope.service_account}:k1:")
    assert text.isascii()
    assert " " not in text
    assert "\n" not in text
    opened = sealer.open(text, scope)
    assert opened.plaintext == plaintext
    assert opened.ciphertext.scope == scope


@_fixture_ok
@given(data=st.data())
def test_any_changed_character_fails_with_the_one_opaque_error(
    sealer: Sealer, team_a_app: Scope, data: st.DataObject
) -> None:
    text = sealer.seal(data.draw(plaintexts), team_a_app)
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    replacement = data.draw(
        st.sampled_from("abcxyzAZ019-_:.=+/ ").filter(lambda c: c != text[position])
    )
    tampered = text[:position] + replacement + text[position + 1 :]
    with pytest.raises(InvalidCiphertextError):
        sealer.open(tampered)


@_fixture_ok
@given(data=st.data())
def test_truncated_or_extended_ciphertexts_fail(
    sealer: Sealer, team_a_app: Scope, data: st.DataObject
) -> None:
    text = sealer.seal(b"secret", team_a_app)
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    for broken in (text[:cut], text + data.draw(st.sampled_from(["A", "AA", "AAAA", ":x"]))):
        with pytest.raises(InvalidCiphertextError):
            sealer.open(broken)


@_fixture_ok
@given(a=scopes, b=scopes)
def test_a_ciphertext_for_one_scope_never_opens_for_another(
    sealer: Sealer, a: Scope, b: Scope
) -> None:
    if a == b:
        return
    text = sealer.seal(b"for a only", a)
    with pytest.raises(ScopeMismatchError):
        sealer.open(text, b)
    # Rewriting the header to name b is tampering: the header is authenticated and the key is
    # derived per scope.
    forged = text.replace(
        f":{a.namespace}:{a.service_account}:", f":{b.namespace}:{b.service_account}:", 1
    )
    with pytest.raises(InvalidCiphertextError):
        sealer.open(forged, b)


def test_rotation_keeps_old_ciphertexts_and_seals_new_ones_with_the_new_key(
    keyring: Keyring, team_a_app: Scope
) -> None:
    old_text = Sealer(LocalKeyringProvider(keyring)).seal(b"before", team_a_app)
    rotated = keyring.rotate()
    sealer = Sealer(LocalKeyringProvider(rotated))
    new_text = sealer.seal(b"after", team_a_app)
    assert Ciphertext.parse(old_text).key_id == "k1"
    assert Ciphertext.parse(new_text).key_id == "k2"
    assert [(v.id, v.state) for v in rotated.versions] == [
        ("k2", KeyState.ACTIVE),
        ("k1", KeyState.DECRYPT_ONLY),
    ]
    assert sealer.open(old_text, team_a_app).plaintext == b"before"
    assert sealer.open(new_text, team_a_app).plaintext == b"after"


def test_a_retired_key_opens_nothing(keyring: Keyring, team_a_app: Scope) -> None:
    old_text = Sealer(LocalKeyringProvider(keyring)).seal(b"before", team_a_app)
    retired = keyring.rotate().retire("k1")
    with pytest.raises(InvalidCiphertextError):
        Sealer(LocalKeyringProvider(retired)).open(old_text, team_a_app)


def test_a_key_retired_in_a_running_provider_opens_nothing_it_opened_before(
    keyring: Keyring, team_a_app: Scope
) -> None:
    # The provider keeps derived keys and AES-GCM objects for speed: a new keyring drops them.
    provider = LocalKeyringProvider(keyring)
    sealer = Sealer(provider)
    old_text = sealer.seal(b"before", team_a_app)
    assert sealer.open(old_text, team_a_app).plaintext == b"before"
    provider.keyring = keyring.rotate().retire("k1")
    with pytest.raises(InvalidCiphertextError):
        sealer.open(old_text, team_a_app)
    new_text = sealer.seal(b"after", team_a_app)
    assert sealer.open(new_text, team_a_app).plaintext == b"after"


def test_another_keyring_cannot_open_a_ciphertext(sealer: Sealer, team_a_app: Scope) -> None:
    text = sealer.seal(b"secret", team_a_app)
    with pytest.raises(InvalidCiphertextError):
        Sealer(LocalKeyringProvider(Keyring.generate())).open(text, team_a_app)


def test_each_encryption_uses_a_fresh_nonce(sealer: Sealer, team_a_app: Scope) -> None:
    texts = {sealer.seal(b"same", team_a_app) for _ in range(50)}
    assert len(texts) == 50


def test_plaintext_above_the_limit_is_refused(keyring: Keyring, team_a_app: Scope) -> None:
    sealer = Sealer(LocalKeyringProvider(keyring), max_plaintext=100)
    assert sealer.open(sealer.seal(b"x" * 100, team_a_app)).plaintext == b"x" * 100
    with pytest.raises(PayloadTooLargeError):
        sealer.seal(b"x" * 101, team_a_app)


def test_ciphertext_length_hides_the_exact_plaintext_length(
    sealer: Sealer, team_a_app: Scope
) -> None:
    assert len({len(sealer.seal(b"x" * n, team_a_app)) for n in range(32)}) == 1


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hello",
        "kamus:v1:",
        "kamus:v2:local:team-a:app:k1:AAAA",
        "kamus:v1:local:team-a:app:k1:",
        "kamus:v1:local:team-a:app:k1:!!!!",
        "kamus:v1:local:Team:app:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "kamus:v1:local:team-a:app:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "kamus:v1:other:team-a:app:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g==",
        "kamus:v1:local:team-a:app:k1:" + "A" * 2_000_000,
        "kamus:v1:local:team-a:app:k1:AAAA\u00e9",
    ],
)
def test_garbage_is_an_invalid_ciphertext(sealer: Sealer, garbage: str) -> None:
    with pytest.raises(InvalidCiphertextError):
        sealer.open(garbage)


@pytest.mark.parametrize("wrapping", ["\u00a0{}", "{}\u2028", "\u3000{}\u3000", "{}\x0b"])
def test_only_ascii_whitespace_around_a_ciphertext_is_tolerated(
    sealer: Sealer, team_a_app: Scope, wrapping: str
) -> None:
    text = sealer.seal(b"secret", team_a_app)
    assert sealer.open(f" \t{text}\r\n").plaintext == b"secret"
    with pytest.raises(InvalidCiphertextError):
        sealer.open(wrapping.format(text))


def test_a_ciphertext_is_bound_to_its_cluster_even_with_shared_keys(
    keyring: Keyring, team_a_app: Scope
) -> None:
    provider = LocalKeyringProvider(keyring)
    text = Sealer(provider, cluster="prod-eu").seal(b"cluster-bound", team_a_app)
    assert Sealer(provider, cluster="prod-eu").open(text, team_a_app).plaintext == b"cluster-bound"
    for other in ("prod-us", ""):
        with pytest.raises(InvalidCiphertextError):
            Sealer(provider, cluster=other).open(text, team_a_app)
    unbound = Sealer(provider).seal(b"unbound", team_a_app)
    with pytest.raises(InvalidCiphertextError):
        Sealer(provider, cluster="prod-eu").open(unbound, team_a_app)
