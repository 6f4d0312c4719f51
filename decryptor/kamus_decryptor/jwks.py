"""Hybrid token verification: an offline pre-check against the cluster's OIDC keys.

Garbage, expired, foreign-issuer or wrong-audience tokens are refused here without a TokenReview,
so an attacker cannot turn the decryptor into a load generator against the API server. A token
that passes still goes through TokenReview, which alone knows whether its pod or service account
still exists.

Keys are cached and refetched only for an unknown `kid`, at most once per interval; a failed fetch
backs off exponentially, and while it does, tokens the cached keys cannot judge get 503. One thread
fetches while the others wait for it outside the lock, so a slow OIDC endpoint never delays tokens
signed by a key already known. The keys are fetched through the kubernetes client (not PyJWT's
PyJWKClient) because the API server wants the decryptor's own credentials, which that client
manages: the kubelet-rotated token, client certificates, the cluster CA.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kamus_decryptor.tokenreview import Caller, TokenReviewer
from kamus_kms.errors import UnavailableError
from kamus_service.errors import AuthenticationError

_ALGORITHMS = ("RS256", "ES256")
# Kubernetes tolerates this much clock skew on exp/nbf/iat.
_LEEWAY_SECONDS = 60
_REFRESH_INTERVAL_SECONDS = 30.0
_FIRST_BACKOFF_SECONDS = 1.0
_MAX_BACKOFF_SECONDS = 30.0
JWKS_CONTENT_TYPE = "application/jwk-set+json"

Fetch = Callable[[], tuple[str, dict[str, Any]]]


class OfflineTokenCheck:
    """Verifies signature, issuer, audience and expiry of service-account JWTs."""

    def __init__(
        self,
        fetch: Fetch,
        audiences: tuple[str, ...],
        issuer: str | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait_seconds: float = 10.0,
    ) -> None:
        self._fetch = fetch
        self.audiences = audiences
        self._configured_issuer = issuer
        self._clock = clock
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._keys: dict[str, Any] | None = None
        self._issuer: str | None = issuer
        self._next_fetch = float("-inf")  # no fetch before: refresh interval or backoff
        self._failures = 0  # consecutive failed fetches
        self._flight: threading.Event | None = None  # set when the fetch in progress ends

    @classmethod
    def from_api(
        cls, api: client.ApiClient, audiences: tuple[str, ...], issuer: str | None, timeout: float
    ) -> OfflineTokenCheck:
        """A check whose keys come from the API server's OIDC discovery routes."""

        def get(path: str, content_type: str) -> dict[str, Any]:
            # kube-apiserver negotiates strictly: each route serves one type and answers 406 to
            # an Accept that does not name it (the key set is never application/json).
            request = api.param_serialize(
                "GET", path, header_params={"Accept": content_type}, auth_settings=["BearerToken"],
            )  # fmt: skip
            try:
                response = api.call_api(*request, _request_timeout=timeout)
                status, raw = getattr(response, "status", 0), response.read()  # type: ignore[no-untyped-call]
                data = json.loads(raw) if status == 200 else None
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                raise UnavailableError("the cluster's token signing keys are unavailable") from exc
            if not isinstance(data, dict):
                raise UnavailableError("the cluster's OIDC discovery answered something else")
            return data

        def fetch() -> tuple[str, dict[str, Any]]:
            discovery = get("/.well-known/openid-configuration", "application/json")
            return str(discovery.get("issuer", "")), get("/openid/v1/jwks", JWKS_CONTENT_TYPE)

        return cls(fetch, audiences, issuer, wait_seconds=timeout * 2)

    def _claim_fetch(self, kid: str | None) -> tuple[threading.Event | None, bool]:
        """Whether keys must be fetched to judge ``kid`` (None: any key at all).

        ``(None, False)``: no; ``(flight, True)``: this thread fetches and then sets ``flight``;
        ``(flight, False)``: another thread is fetching, wait for ``flight``.
        """
        with self._lock:
            if self._keys is not None and (kid is None or kid in self._keys):
                return None, False
            if self._flight is not None:
                return self._flight, False
            if self._clock() < self._next_fetch:
                return None, False
            self._flight = threading.Event()
            return self._flight, True

    def _refresh(self, flight: threading.Event) -> None:
        """Fetch the keys (no lock held meanwhile); on failure, back off before the next try."""
        try:
            issuer, document = self._fetch()
            try:
                keyset = jwt.PyJWKSet.from_dict(document)
            # A malformed set raises PyJWT's errors, or plain ones for entries of the wrong type.
            except (jwt.PyJWTError, AttributeError, KeyError, TypeError, ValueError) as exc:
                raise UnavailableError("the cluster's token signing keys are unreadable") from exc
        except UnavailableError:
            with self._lock:
                self._failures += 1
                backoff = _FIRST_BACKOFF_SECONDS * 2 ** (self._failures - 1)
                self._next_fetch = self._clock() + min(backoff, _MAX_BACKOFF_SECONDS)
            raise
        else:
            with self._lock:
                self._keys = {k.key_id: k.key for k in keyset.keys if k.key_id}
                self._issuer = self._configured_issuer or issuer
                self._failures = 0
                self._next_fetch = self._clock() + _REFRESH_INTERVAL_SECONDS
        finally:
            with self._lock:
                self._flight = None
            flight.set()

    def _key(self, kid: str | None) -> Any:
        """The key named ``kid`` (None: none needed), fetching the key set when it may help."""
        flight, leader = self._claim_fetch(kid)
        if leader:
            assert flight is not None
            self._refresh(flight)
        elif flight is not None:
            flight.wait(self._wait_seconds)
        with self._lock:
            known = self._keys is not None and (kid is None or kid in self._keys)
            # Without keys, or with the last fetch failed, an unknown key cannot be judged.
            if self._keys is None or (not known and self._failures):
                raise UnavailableError("the cluster's token signing keys are unavailable")
            return None if kid is None else self._keys.get(kid)

    def check(self, token: str) -> None:
        """Raise AuthenticationError for a token that cannot be valid, UnavailableError when the
        keys cannot be fetched."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError("the token is not a valid JWT") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in _ALGORITHMS or not isinstance(kid, str):
            raise AuthenticationError("the token is not signed like a service-account token")
        key = self._key(kid)
        if key is None:
            raise AuthenticationError("the token is signed by a key this cluster does not use")
        try:
            jwt.decode(
                token, key, algorithms=[algorithm], audience=list(self.audiences) or None,
                issuer=self._issuer or None, leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "sub"], "verify_aud": bool(self.audiences)},
            )  # fmt: skip
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationError("the token is not valid for the Kamus audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationError("the token was issued by another cluster") from exc
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            # TypeError/ValueError: an `alg` that does not fit the named key's type (a forged
            # header asking an RSA key to verify ES256), which PyJWT does not wrap.
            raise AuthenticationError("the token's signature or claims are invalid") from exc

    def check_ready(self) -> None:
        """Raise UnavailableError until the signing keys have been fetched once."""
        self._key(None)


class PrecheckedTokenReviewer:
    """The offline check first, then TokenReview for tokens that pass it."""

    def __init__(self, offline: OfflineTokenCheck, inner: TokenReviewer) -> None:
        self.offline = offline
        self.inner = inner

    def review(self, token: str) -> Caller:
        self.offline.check(token)
        return self.inner.review(token)

    def check_ready(self) -> None:
        self.offline.check_ready()
        self.inner.check_ready()
