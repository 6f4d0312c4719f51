"""The hybrid mode's offline check refuses forged headers cleanly (401, never a 500)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from kamus_decryptor.jwks import OfflineTokenCheck
from kamus_dev.tokens import TokenSigner, generate_signing_key
from kamus_kms.errors import AuthenticationError

ISSUER = "https://kubernetes.default.svc.cluster.local"


@pytest.fixture
def signer() -> TokenSigner:
    """The cluster's signing key."""
    return TokenSigner(generate_signing_key(), ISSUER)


@pytest.fixture
def check(signer: TokenSigner) -> OfflineTokenCheck:
    """An offline check fed with the cluster's JWKS."""
    return OfflineTokenCheck(lambda: (ISSUER, {"keys": [signer.jwk()]}), ("kamus",), None)


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _token(signer: TokenSigner, audiences: list[str]) -> str:
    now = int(time.time())
    return signer.sign(namespace="team-a", service_account="app", service_account_uid="u",
                       audiences=audiences, issued_at=now, expires_at=now + 600)  # fmt: skip


def test_a_valid_token_passes(check: OfflineTokenCheck, signer: TokenSigner) -> None:
    check.check(_token(signer, ["kamus"]))


@pytest.mark.parametrize("alg", ["ES256", "HS256", "none"])
def test_a_header_naming_the_rsa_key_with_another_algorithm_is_a_401(
    check: OfflineTokenCheck, signer: TokenSigner, alg: str
) -> None:
    forged = f"{_b64({'alg': alg, 'kid': signer.kid})}.{_b64({'sub': 'x'})}.c2ln"
    with pytest.raises(AuthenticationError):
        check.check(forged)


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", f"{_b64({'alg': 'RS256', 'kid': 'unknown'})}.{_b64({})}.c2ln"],
)
def test_garbage_and_unknown_keys_are_a_401(check: OfflineTokenCheck, token: str) -> None:
    with pytest.raises(AuthenticationError):
        check.check(token)


def test_a_token_for_another_audience_is_a_401(
    check: OfflineTokenCheck, signer: TokenSigner
) -> None:
    with pytest.raises(AuthenticationError, match="audience"):
        check.check(_token(signer, ["vault"]))
    assert jwt.get_unverified_header(_token(signer, ["kamus"]))["kid"] == signer.kid
