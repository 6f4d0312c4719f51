"""POST /api/v1/seal: one ciphertext for this cluster and the other clusters whose sealing keys are
given (the API equivalent of `kamus-cli encrypt --sealing-key a.pub --sealing-key b.pub`)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask.testing import FlaskClient

from kamus_encryptor import create_app
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import InvalidCiphertextError, ScopeMismatchError
from kamus_kms.keyring import Keyring
from kamus_kms.offline import SealingKeys, SealingPrivateKey
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealingkeys import SealingKeyring
from kamus_service.settings import Settings

SCOPE = Scope("team-s", "app")


def _key_text(kem: str, raw: bytes) -> str:
    return f"kamus-sealing-key:v1:{kem}::" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


ZERO_X25519 = _key_text("X25519", bytes(32))
ZERO_HYBRID = _key_text("MLKEM768-X25519", bytes(1216))
BAD_HYBRID = _key_text("MLKEM768-X25519", b"\xff" * 1216)
BODY = {"data": "multi-cluster secret", "namespace": "team-s", "service-account": "app"}


class Cluster:
    """This encryptor's cluster: its keyring and sealing keys."""

    def __init__(self, name: str = "prod-eu") -> None:
        self.keyring = Keyring.generate()
        self.name = name
        provider = LocalKeyringProvider(self.keyring)
        self.ring, _ = SealingKeyring([]).with_new_key(provider, kem="X25519", cluster="prod-eu")
        self.opener = self.ring.opener(provider, cluster=name)

    def client(self) -> FlaskClient:
        settings = Settings(service="encryptor", keyring=self.keyring.to_json(),
                            sealing_keys=self.ring.dumps(), cluster_name=self.name)  # fmt: skip
        return create_app(settings).test_client()


def _seal(client: FlaskClient, body: dict[str, Any], **kwargs: Any) -> Any:
    return client.post("/api/v1/seal", json=body, **kwargs)


def test_one_ciphertext_opens_here_and_in_each_given_cluster_and_nowhere_else() -> None:
    here = Cluster()
    us = SealingPrivateKey.generate("MLKEM768-X25519", cluster="prod-us")
    response = _seal(here.client(), {**BODY, "sealing-keys": [us.public_key().text()]})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    ciphertext = Ciphertext.parse(text)
    assert text.startswith("kamus:v1:sealed:team-s:app:")
    assert ciphertext.key_id.count("+") == 1  # two recipients, named in the header
    for opener in (here.opener, SealingKeys([us], cluster="prod-us")):
        assert opener.open(ciphertext, SCOPE) == b"multi-cluster secret"
    with pytest.raises(ScopeMismatchError):
        here.opener.open(ciphertext, Scope("team-s", "intruder"))
    elsewhere = SealingKeys([SealingPrivateKey.generate("X25519", cluster="other")])
    with pytest.raises(InvalidCiphertextError):
        elsewhere.open(ciphertext, SCOPE)


def test_the_published_key_and_its_ciphertexts_name_this_cluster_not_the_documents_label() -> None:
    # The sealing-keys document says prod-eu (it is shared); this cluster is prod-us.
    here = Cluster("prod-us")
    client = here.client()
    published = client.get("/api/v1/sealing-key").get_data(as_text=True)
    assert published.startswith("kamus-sealing-key:v1:X25519:prod-us:")
    ciphertext = Ciphertext.parse(_seal(client, BODY).get_data(as_text=True))
    assert here.opener.open(ciphertext, SCOPE) == b"multi-cluster secret"
    named_in_the_document = here.ring.opener(LocalKeyringProvider(here.keyring), cluster="prod-eu")
    with pytest.raises(InvalidCiphertextError):
        named_in_the_document.open(ciphertext, SCOPE)


def test_without_other_keys_it_seals_for_this_cluster_and_answers_json_when_asked() -> None:
    here = Cluster()
    response = _seal(here.client(), BODY, headers={"Accept": "application/json"})
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["namespace"], answer["service-account"]) == ("team-s", "app")
    assert here.opener.open(Ciphertext.parse(answer["data"]), SCOPE) == b"multi-cluster secret"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sealing-keys": "kamus-sealing-key:v1:X25519::AAAA"}, "must be a list"),
        ({"sealing-keys": [42]}, "must be a list"),
        ({"sealing-keys": ["not a key"]}, '"sealing-keys"[0]: not a Kamus sealing key'),
        ({"sealing-keys": ["x"] * 15}, "at most 15"),
        # Well formed, but no usable key: all zeros (X25519 refuses the point in the exchange,
        # Kamus an empty ML-KEM half) and bytes ML-KEM refuses outright.
        ({"sealing-keys": [ZERO_X25519]}, "not a usable public key"),
        ({"sealing-keys": [ZERO_HYBRID]}, "its ML-KEM half is empty"),
        ({"sealing-keys": [BAD_HYBRID]}, "not a valid MLKEM768-X25519 public key"),
        ({"data": ""}, "nothing to encrypt"),
        ({"service-account": "default"}, "`default` service account"),
    ],
)
def test_bad_input_is_a_clear_400(extra: dict[str, Any], message: str) -> None:
    response = _seal(Cluster().client(), {**BODY, **extra})
    assert response.status_code == 400
    assert message in response.get_json()["message"]


def test_a_kamus_without_sealing_keys_says_to_use_encrypt(keyring: Keyring) -> None:
    client = create_app(Settings(service="encryptor", keyring=keyring.to_json())).test_client()
    response = _seal(client, BODY)
    assert response.status_code == 400
    assert "/api/v1/encrypt" in response.get_json()["message"]


def test_every_outcome_is_counted_like_encrypt() -> None:
    client = Cluster().client()
    _seal(client, BODY)
    _seal(client, {**BODY, "sealing-keys": ["bad"]})
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'kamus_encrypt_total{outcome="ok"} 1.0' in metrics
    assert 'kamus_encrypt_total{outcome="invalid_request"} 1.0' in metrics
