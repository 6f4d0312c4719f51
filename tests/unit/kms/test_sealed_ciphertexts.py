"""Offline sealing (HPKE to a cluster's sealing key): format, vectors, tampering, clusters."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
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
    MAX_RECIPIENTS,
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


def _vector_id(vector: dict[str, Any]) -> str:
    return f"{vector.get('form', 'first')}:{'+'.join(vector['recipients'])}"


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=_vector_id)
def test_committed_vectors_open_in_each_recipient_cluster_only(vector: dict[str, Any]) -> None:
    ciphertext = Ciphertext.parse(vector["ciphertext"])
    scope = Scope(vector["namespace"], vector["service_account"])
    for name in VECTORS["keys"]:
        keys = SealingKeys([_vector_key(name)], cluster=VECTORS["keys"][name]["cluster"])
        if name in vector["recipients"]:
            assert keys.open(ciphertext, scope).decode() == vector["plaintext"]
        else:
            with pytest.raises(InvalidCiphertextError):
                keys.open(ciphertext, scope)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=_vector_id)
def test_committed_vectors_open_under_another_cluster_name_in_the_first_form_only(
    vector: dict[str, Any],
) -> None:
    ciphertext = Ciphertext.parse(vector["ciphertext"])
    scope = Scope(vector["namespace"], vector["service_account"])
    for name in vector["recipients"]:
        for cluster in ("", "elsewhere"):
            keys = SealingKeys([_vector_key(name)], cluster=cluster)
            if vector.get("form") == "bound":
                with pytest.raises(InvalidCiphertextError):
                    keys.open(ciphertext, scope)
            else:  # the first form was bound to no cluster: it still opens (docs/FORMAT.md)
                assert keys.open(ciphertext, scope).decode() == vector["plaintext"]


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
    assert SealingKeys([key], cluster="prod").open(Ciphertext.parse(text), SCOPE) == b"hunter2"


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
    private = SealingKeyring.parse(document).opener(provider, cluster="prod")
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
    opened = second.opener(provider, cluster="prod").open(Ciphertext.parse(old_text), SCOPE)
    assert opened == b"before"
    retired = second.retired(old.key_id)
    with pytest.raises(InvalidCiphertextError):
        retired.opener(provider, cluster="prod").open(Ciphertext.parse(old_text), SCOPE)
    with pytest.raises(ConfigurationError, match="active sealing key cannot be retired"):
        second.retired(new.key_id)


def _with_wrapped(ciphertext: Ciphertext, wrapped: bytes) -> Ciphertext:
    return Ciphertext(ciphertext.provider, ciphertext.scope, ciphertext.key_id, wrapped,
                      ciphertext.nonce, ciphertext.sealed)  # fmt: skip


def _entries(wrapped: bytes) -> tuple[bytes, list[bytes]]:
    """The envelope's lead (up to and including the count) and its entries, as bytes."""
    lead = 1 if wrapped[0] else 3  # the first form starts with the count, the second with 0, 2
    entries, position = [], lead
    while position < len(wrapped):
        length = int.from_bytes(wrapped[position + 8 : position + 10], "big")
        entries.append(wrapped[position : position + 10 + length])
        position += 10 + length
    return wrapped[:lead], entries


def _envelope(lead: bytes, entries: list[bytes]) -> bytes:
    return lead[:-1] + bytes([len(entries) % 256]) + b"".join(entries)


def _two_recipients() -> tuple[SealingPrivateKey, Ciphertext]:
    a, b = SealingPrivateKey.generate("X25519"), SealingPrivateKey.generate("X25519")
    return a, Ciphertext.parse(seal(b"hunter2", SCOPE, [a.public_key(), b.public_key()]))


def _edits(wrapped: bytes) -> dict[str, bytes]:
    lead, (first, second) = _entries(wrapped)
    short = min(first, second, key=len)
    garbage = short[:10] + bytes(len(short) - 10)
    return {
        "duplicated": _envelope(lead, [first, first, second]),
        "reordered": _envelope(lead, [second, first]),
        "255 entries": _envelope(lead, [garbage] * 253 + [first, second]),
        "garbage before": _envelope(lead, [garbage, first, second]),
        "other recipient's entry garbled": _envelope(lead, [first, garbage]),
    }


@pytest.mark.parametrize(
    "edit", ["duplicated", "reordered", "255 entries", "garbage before",
             "other recipient's entry garbled"],
)  # fmt: skip
def test_an_edited_recipient_list_opens_nowhere(edit: str) -> None:
    a, ciphertext = _two_recipients()
    edited = _with_wrapped(ciphertext, _edits(ciphertext.wrapped_key)[edit])
    with pytest.raises(InvalidCiphertextError):
        SealingKeys([a]).open(Ciphertext.parse(edited.encode()), SCOPE)


def test_every_byte_of_the_envelope_matters() -> None:
    a, ciphertext = _two_recipients()
    wrapped = ciphertext.wrapped_key
    for position in range(len(wrapped)):
        flipped = wrapped[:position] + bytes([wrapped[position] ^ 1]) + wrapped[position + 1 :]
        with pytest.raises(InvalidCiphertextError):
            SealingKeys([a]).open(_with_wrapped(ciphertext, flipped), SCOPE)


@pytest.mark.parametrize("edit", ["duplicated", "reordered", "255 entries", "garbage before"])
def test_a_committed_first_form_ciphertext_opens_only_with_its_recipient_list_as_sealed(
    edit: str,
) -> None:
    vector = next(v for v in VECTORS["vectors"] if len(v["recipients"]) == 2)
    ciphertext = Ciphertext.parse(vector["ciphertext"])
    edited = _with_wrapped(ciphertext, _edits(ciphertext.wrapped_key)[edit])
    scope = Scope(vector["namespace"], vector["service_account"])
    for name in vector["recipients"]:
        with pytest.raises(InvalidCiphertextError):
            SealingKeys([_vector_key(name)]).open(edited, scope)


def test_a_ciphertext_opens_only_in_the_cluster_its_sealing_key_names() -> None:
    # Two clusters share one sealing-keys document; each publishes the key under its own name.
    shared = SealingPrivateKey.generate("MLKEM768-X25519", cluster="prod-eu")
    for_eu = seal(b"hunter2", SCOPE, [shared.public_key()])
    for_us = seal(b"hunter2", SCOPE, [replace(shared.public_key(), cluster="prod-us")])
    eu, us = SealingKeys([shared], cluster="prod-eu"), SealingKeys([shared], cluster="prod-us")
    unnamed = SealingKeys([shared])

    assert eu.open(Ciphertext.parse(for_eu), SCOPE) == b"hunter2"
    assert us.open(Ciphertext.parse(for_us), SCOPE) == b"hunter2"
    for keys, text in ((us, for_eu), (eu, for_us), (unnamed, for_eu), (unnamed, for_us)):
        with pytest.raises(InvalidCiphertextError):
            keys.open(Ciphertext.parse(text), SCOPE)


def test_the_opener_of_a_sealing_keyring_binds_the_cluster_it_is_given() -> None:
    provider = LocalKeyringProvider(Keyring.generate())
    ring, public = SealingKeyring([]).with_new_key(provider, kem="X25519", cluster="prod-eu")
    text = seal(b"hunter2", SCOPE, [public])
    opened = ring.opener(provider, cluster="prod-eu").open(Ciphertext.parse(text), SCOPE)
    assert opened == b"hunter2"
    with pytest.raises(InvalidCiphertextError):
        ring.opener(provider, cluster="prod-us").open(Ciphertext.parse(text), SCOPE)


def test_a_ciphertext_seals_to_at_most_max_recipients_and_opens_at_the_limit() -> None:
    keys = [SealingPrivateKey.generate("X25519") for _ in range(MAX_RECIPIENTS + 1)]
    publics = [key.public_key() for key in keys]
    text = seal(b"hunter2", SCOPE, publics[:MAX_RECIPIENTS])
    for key in keys[:MAX_RECIPIENTS]:
        assert SealingKeys([key]).open(Ciphertext.parse(text), SCOPE) == b"hunter2"
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_RECIPIENTS} clusters"):
        seal(b"hunter2", SCOPE, publics)
