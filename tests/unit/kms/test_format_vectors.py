"""The committed v1 vectors must decrypt forever, and docs/FORMAT.md must describe them exactly."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "v1.json").read_text("utf-8"))
KEYRING = Keyring.from_json(json.dumps(VECTORS["keyring"]))


@pytest.fixture(params=VECTORS["vectors"], ids=lambda v: f"{v['namespace']}-{v['key_id']}")
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One committed test vector."""
    return dict(request.param)


def test_committed_vectors_decrypt(vector: dict[str, Any]) -> None:
    sealer = Sealer(LocalKeyringProvider(KEYRING))
    scope = Scope(vector["namespace"], vector["service_account"])
    assert sealer.open(vector["ciphertext"], scope).plaintext.decode() == vector["plaintext"]


def test_sealing_with_the_pinned_nonce_reproduces_the_vector(vector: dict[str, Any]) -> None:
    single = Keyring.from_json(json.dumps(VECTORS["keyring"]))
    version = single.get(vector["key_id"])
    assert version is not None
    only = Keyring((version.__class__(version.id, single.active.state, version.secret),))
    nonce = bytes.fromhex(vector["nonce_hex"])
    sealer = Sealer(LocalKeyringProvider(only), random=lambda n: nonce)
    scope = Scope(vector["namespace"], vector["service_account"])
    assert sealer.seal(vector["plaintext"].encode(), scope) == vector["ciphertext"]


def test_format_md_recipe_decrypts_the_vectors_without_kamus_code(vector: dict[str, Any]) -> None:
    """Follows docs/FORMAT.md step by step with raw primitives, so the document stays exact."""
    text: str = vector["ciphertext"]
    header, _, body_text = text.rpartition(":")
    header += ":"
    _, _, _provider, namespace, service_account, key_id = header[:-1].split(":")
    body = base64.urlsafe_b64decode(body_text + "=" * (-len(body_text) % 4))
    (wrapped_len,) = struct.unpack(">H", body[:2])
    assert wrapped_len == 0
    nonce, sealed = body[2:14], body[14:]
    master = next(
        base64.b64decode(k["secret"]) for k in VECTORS["keyring"]["keys"] if k["id"] == key_id
    )
    info = f"kamus:v1:scope:{namespace}:{service_account}".encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)
    padded = AESGCM(key).decrypt(nonce, sealed, header.encode("ascii"))
    plaintext = padded.rstrip(b"\x00")[:-1]
    assert padded.rstrip(b"\x00")[-1:] == b"\x80"
    assert len(padded) % VECTORS["padding_bucket"] == 0
    assert plaintext.decode() == vector["plaintext"]
