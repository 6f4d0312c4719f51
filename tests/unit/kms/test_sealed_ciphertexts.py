"""Offline sealing (HPKE to a cluster's sealing key): format, vectors, tampering, clusters."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import (
    ConfigurationError,
    InvalidCiphertextError,
    InvalidRequestError,
    ScopeMismatchError,
)
from kamus_kms.keyring import Keyring
from kamus_kms.offline import (
    SealingKeys,
    SealingPrivateKey,
    SealingPublicKey,
    recipients_of,
    seal,
)
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealingkeys import SealingKeyring

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "sealed.json").read_text("utf-8"))
SCOPE = Scope("team-a", "app")


def _vector_key(name: str) -> SealingPrivateKey:
    key = VECTORS["keys"][name]
    return SealingPrivateKey(key["kem"], base64.b64decode(key["private"]), key["cluster"])


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: "+".join(v["recipients"]))
def test_committed_vectors_open_in_each_recipient_cluster_only(vector: dict[str, Any]) -> None:
    ciphertext = Ciphertext.parse(vector["ciphertext"])
    scope = Scope(vector["namespace"], vector["service_account"])
    for name in VECTORS["keys"]:
        keys = SealingKeys([_vector_key(name)])
        if name in vector["recipients"]:
            assert keys.open(ciphertext, scope).decode() == vector["plaintext"]
        else:
            with pytest.raises(InvalidCiphertextError):
                keys.open(ciphertext, scope)


def test_committed_public_keys_are_the_private_keys_halves() -> None:
    for name, key in VECTORS["keys"].items():
        public = _vector_key(name).public_key()
        assert public.text() == key["public"]
        assert public.fingerprint == key["fingerprint"]
        assert SealingPublicKey.parse(key["public"]) == public


@pytest.mark.parametrize("kem", ["MLKEM768-X25519", "X25519"])
def test_a_round_trip_with_each_kem(kem: str) -> None:
    key = SealingPrivateKey.generate(kem, "prod")
    text = seal(b"hunter2", SCOPE, [key.public_key()])
    assert text.startswith(f"kamus:v1:sealed:team-a:app:{key.public_key().key_id}:")
    assert SealingKeys([key]).open(Ciphertext.parse(text), SCOPE) == b"hunter2"


def test_the_default_kem_is_the_post_quantum_hybrid() -> None:
    assert SealingPrivateKey.generate().kem == "MLKEM768-X25519"


@pytest.mark.parametrize(
    ("edit", "caller"),
    [
        (lambda t: t.replace(":team-a:", ":team-b:"), Scope("team-b", "app")),
        (lambda t: t.replace(":app:", ":api:"), Scope("team-a", "api")),
    ],
    ids=["namespace", "service-account"],
)
def test_a_changed_header_opens_nowhere(edit: Any, caller: Scope) -> None:
    key = SealingPrivateKey.generate("X25519")
    text = seal(b"hunter2", SCOPE, [key.public_key()])
    with pytest.raises(InvalidCiphertextError):
        SealingKeys([key]).open(Ciphertext.parse(edit(text)), caller)


def test_dropping_a_recipient_from_the_header_breaks_the_ciphertext() -> None:
    eu, us = SealingPrivateKey.generate("X25519"), SealingPrivateKey.generate("X25519")
    text = seal(b"hunter2", SCOPE, [eu.public_key(), us.public_key()])
    ids = Ciphertext.parse(text).key_id
    edited = text.replace(ids, eu.public_key().key_id)
    with pytest.raises(InvalidCiphertextError):
        SealingKeys([eu]).open(Ciphertext.parse(edited), SCOPE)


def test_another_scope_is_a_scope_mismatch_before_any_key_is_used() -> None:
    key = SealingPrivateKey.generate("X25519")
    text = seal(b"hunter2", SCOPE, [key.public_key()])
    with pytest.raises(ScopeMismatchError):
        SealingKeys([key]).open(Ciphertext.parse(text), Scope("team-a", "other"))


def test_recipients_are_listed_once_in_order_and_checked_against_the_header() -> None:
    a, b = SealingPrivateKey.generate("X25519"), SealingPrivateKey.generate("X25519")
    text = seal(b"x", SCOPE, [b.public_key(), a.public_key(), b.public_key()])
    ciphertext = Ciphertext.parse(text)
    assert list(recipients_of(ciphertext)) == sorted([a.public_key().key_id, b.public_key().key_id])
    truncated = Ciphertext(
        ciphertext.provider,
        ciphertext.scope,
        ciphertext.key_id,
        ciphertext.wrapped_key[:-3],
        ciphertext.nonce,
        ciphertext.sealed,
    )
    with pytest.raises(InvalidCiphertextError):
        recipients_of(truncated)


def test_sealing_refuses_no_recipient_and_an_empty_secret() -> None:
    key = SealingPrivateKey.generate("X25519").public_key()
    with pytest.raises(InvalidRequestError):
        seal(b"x", SCOPE, [])
    with pytest.raises(InvalidRequestError):
        seal(b"", SCOPE, [key])


@pytest.mark.parametrize(
    "text",
    ["", "kamus-sealing-key:v1:X25519:prod:", "kamus-sealing-key:v1:RSA:prod:AAAA",
     "kamus-sealing-key:v1:X25519:prod:AAAA", "kamus-sealing-key:v1:X25519:Prod!:" + "A" * 43],
)  # fmt: skip
def test_a_malformed_public_key_file_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        SealingPublicKey.parse(text)


def _non_canonical(text: str) -> str:
    """``text`` with the unused low bits of its last base64url character set: same bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) + 1]


def _all_zero_ml_kem_half() -> str:
    classic = SealingPrivateKey.generate("X25519").public_key().raw
    return "kamus-sealing-key:v1:MLKEM768-X25519:prod:" + base64.urlsafe_b64encode(
        bytes(1184) + classic
    ).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        _all_zero_ml_kem_half(),
        _non_canonical(SealingPrivateKey.generate("X25519").public_key().text()),
        _non_canonical(SealingPrivateKey.generate("MLKEM768-X25519").public_key().text()),
    ],
    ids=["all-zero-ml-kem-half", "non-canonical-x25519", "non-canonical-hybrid"],
)
def test_a_key_without_its_ml_kem_half_or_in_non_canonical_base64_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        SealingPublicKey.parse(text)


def test_private_sealing_keys_are_kept_sealed_by_the_provider() -> None:
    provider = LocalKeyringProvider(Keyring.generate())
    ring, public = SealingKeyring([]).with_new_key(provider, kem="X25519", cluster="prod")
    document = ring.dumps()
    private = SealingKeyring.parse(document).opener(provider)
    text = seal(b"hunter2", SCOPE, [public])

    assert private.open(Ciphertext.parse(text), SCOPE) == b"hunter2"
    # The document holds no private key in the clear, and another keyring cannot open it.
    raw = json.loads(document)["keys"][0]["private"]
    assert raw.startswith("local:")
    with pytest.raises(ConfigurationError, match="does not open with this provider"):
        SealingKeyring.parse(document).opener(LocalKeyringProvider(Keyring.generate()))


def test_rotation_keeps_old_keys_decrypt_only_until_retired() -> None:
    provider = LocalKeyringProvider(Keyring.generate())
    first, old = SealingKeyring([]).with_new_key(provider, kem="X25519", cluster="prod")
    second, new = first.with_new_key(provider, kem="MLKEM768-X25519", cluster="prod")
    old_text = seal(b"before", SCOPE, [old])

    assert [entry.state for entry in second.entries] == ["decrypt-only", "active"]
    assert second.active.public == new
    assert second.opener(provider).open(Ciphertext.parse(old_text), SCOPE) == b"before"
    retired = second.retired(old.key_id)
    with pytest.raises(InvalidCiphertextError):
        retired.opener(provider).open(Ciphertext.parse(old_text), SCOPE)
    with pytest.raises(ConfigurationError, match="active sealing key cannot be retired"):
        second.retired(new.key_id)
