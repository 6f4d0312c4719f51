"""Hybrid token verification: an offline pre-check against the cluster's OIDC keys.

Garbage, expired, foreign-issuer or wrong-audience tokens are refused here without a TokenReview,
so an attacker cannot turn the decryptor into a load generator against the API server. A token
that passes still goes through TokenReview, which alone knows whether its pod or service account
still exists. Keys are cached and refetched only for an unknown `kid`, at most once per interval.
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
from kamus_kms.errors import AuthenticationError, UnavailableError

_ALGORITHMS = ("RS256", "ES256")
# Kubernetes tolerates this much clock skew on exp/nbf/iat.
_LEEWAY_SECONDS = 60
_REFRESH_INTERVAL_SECONDS = 30.0
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
    ) -> None:
        self._fetch = fetch
        self.audiences = audiences
        self._configured_issuer = issuer
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, Any] | None = None
        self._issuer: str | None = issuer
        self._fetched_at = float("-inf")

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

        return cls(fetch, audiences, issuer)

    def _refresh(self) -> None:
        issuer, document = self._fetch()
        try:
            keys = {k.key_id: k.key for k in jwt.PyJWKSet.from_dict(document).keys if k.key_id}
        except jwt.PyJWTError as exc:
            raise UnavailableError("the cluster's token signing keys are unreadable") from exc
        self._keys = keys
        self._issuer = self._configured_issuer or issuer
        self._fetched_at = self._clock()

    def _key(self, kid: str) -> Any:
        with self._lock:
            stale = self._clock() - self._fetched_at >= _REFRESH_INTERVAL_SECONDS
            if self._keys is None or (kid not in self._keys and stale):
                self._refresh()
            assert self._keys is not None
            return self._keys.get(kid)

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
        with self._lock:
            if self._keys is None:
                self._refresh()


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
