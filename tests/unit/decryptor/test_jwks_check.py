"""The hybrid mode's offline check: forged headers refused cleanly (401, never a 500), and the
key set fetched sparingly, with backoff, and never under a lock other checks need."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import jwt
import pytest

from kamus_decryptor.jwks import OfflineTokenCheck
from kamus_dev.authority import ManualClock
from kamus_dev.tokens import TokenSigner, generate_signing_key
from kamus_kms.errors import UnavailableError
from kamus_service.errors import AuthenticationError

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


class Keys:
    """A key-set endpoint that counts fetches, can fail, and can be held mid-fetch."""

    def __init__(self, signer: TokenSigner) -> None:
        self.signer = signer
        self.fetches = 0
        self.failing = False
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self) -> tuple[str, dict[str, Any]]:
        self.fetches += 1
        self.entered.set()
        self.release.wait()
        if self.failing:
            raise UnavailableError("the cluster's token signing keys are unavailable")
        return ISSUER, {"keys": [self.signer.jwk()]}


@pytest.fixture
def keys(signer: TokenSigner) -> Keys:
    """The cluster's key-set endpoint, observed."""
    return Keys(signer)


@pytest.fixture
def clock() -> ManualClock:
    """The check's monotonic clock, moved by the tests."""
    return ManualClock(1000.0)


@pytest.fixture
def observed(keys: Keys, clock: ManualClock) -> OfflineTokenCheck:
    """An offline check over the observed endpoint and the manual clock."""
    return OfflineTokenCheck(keys, ("kamus",), None, clock=clock, wait_seconds=10)


UNKNOWN_KID = f"{_b64({'alg': 'RS256', 'kid': 'junk'})}.{_b64({})}.c2ln"


def test_tokens_of_unknown_keys_refetch_the_key_set_at_most_once_per_interval(
    observed: OfflineTokenCheck, keys: Keys, clock: ManualClock, signer: TokenSigner
) -> None:
    observed.check(_token(signer, ["kamus"]))
    for _ in range(50):
        with pytest.raises(AuthenticationError, match="key this cluster does not use"):
            observed.check(UNKNOWN_KID)
    assert keys.fetches == 1
    clock.advance(31)
    with pytest.raises(AuthenticationError):
        observed.check(UNKNOWN_KID)
    assert keys.fetches == 2


def test_a_failed_fetch_answers_503_and_backs_off_before_trying_again(
    observed: OfflineTokenCheck, keys: Keys, clock: ManualClock, signer: TokenSigner
) -> None:
    keys.failing = True
    attempts = []
    for _ in range(8):  # at 0, 0.5, 1.0, ... 3.5 s
        with pytest.raises(UnavailableError):
            observed.check(_token(signer, ["kamus"]))
        attempts.append(keys.fetches)
        clock.advance(0.5)
    # Tried at 0 s, then after 1 s, then after 2 s more: never on every check.
    assert attempts == [1, 1, 2, 2, 2, 2, 3, 3]
    keys.failing = False
    clock.advance(4)
    observed.check(_token(signer, ["kamus"]))
    assert keys.fetches == 4


def test_an_unknown_key_while_the_last_fetch_failed_is_a_503_not_a_401(
    observed: OfflineTokenCheck, keys: Keys, clock: ManualClock, signer: TokenSigner
) -> None:
    observed.check(_token(signer, ["kamus"]))
    keys.failing = True
    clock.advance(31)
    for _ in range(3):
        with pytest.raises(UnavailableError):
            observed.check(UNKNOWN_KID)
    observed.check(_token(signer, ["kamus"]))  # known keys still verify meanwhile
    assert keys.fetches == 2


def test_a_slow_fetch_never_delays_tokens_of_a_known_key(
    observed: OfflineTokenCheck, keys: Keys, clock: ManualClock, signer: TokenSigner
) -> None:
    observed.check(_token(signer, ["kamus"]))
    clock.advance(31)
    keys.release.clear()
    keys.entered.clear()
    refused: list[bool] = []

    def send_junk() -> None:
        try:
            observed.check(UNKNOWN_KID)
        except AuthenticationError:
            refused.append(True)

    junk = threading.Thread(target=send_junk)
    junk.start()
    try:
        assert keys.entered.wait(10)  # the refetch is now in flight, and held
        done = threading.Event()
        token = _token(signer, ["kamus"])

        def send_valid() -> None:
            observed.check(token)
            done.set()

        threading.Thread(target=send_valid).start()
        # Completes while the fetch is still held: no lock is kept across the network call.
        assert done.wait(10)
    finally:
        keys.release.set()
        junk.join()
    assert (refused, keys.fetches) == ([True], 2)


def test_concurrent_first_checks_share_one_fetch(
    observed: OfflineTokenCheck, keys: Keys, signer: TokenSigner
) -> None:
    keys.release.clear()
    token = _token(signer, ["kamus"])
    results: list[str] = []

    def check() -> None:
        observed.check(token)
        results.append("ok")

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert keys.entered.wait(10)
    keys.release.set()
    for thread in threads:
        thread.join()
    assert (results, keys.fetches) == (["ok"] * 8, 1)
