"""Verifying callers' service-account tokens with the Kubernetes TokenReview API.

The decryptor reaches the API server only through the official `kubernetes` client, so the same
code runs against a real cluster and against the development token authority. Every way the review
can fail to give an answer is UnavailableError (503): the decryptor fails closed.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Histogram

from kamus_kms.errors import ConfigurationError, RequestError, UnavailableError
from kamus_kms.scope import Scope
from kamus_service.errors import AuthenticationError, NotServiceAccountError

log = logging.getLogger("kamus.tokenreview")

_EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
_EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
_EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
_EXTRA_CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
_MAX_REASON = 300
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified service account, as TokenReview described it."""

    scope: Scope
    username: str
    uid: str
    extra: dict[str, list[str]] = field(default_factory=dict)

    # What the audit records of this caller, worked out once: a cached review answers many
    # requests with the same Caller.
    _audit: dict[str, str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_audit",
            {
                "username": self.username,
                "uid": self.uid,
                "pod": self._first(_EXTRA_POD_NAME),
                "pod_uid": self._first(_EXTRA_POD_UID),
                "node": self._first(_EXTRA_NODE_NAME),
                "credential_id": self._first(_EXTRA_CREDENTIAL_ID),
            },
        )

    def _first(self, key: str) -> str | None:
        values = self.extra.get(key) or []
        return values[0] if values else None

    def audit_fields(self) -> dict[str, str | None]:
        """Who called, for the audit record (no token material)."""
        return dict(self._audit)


class TokenReviewer(Protocol):
    """Turns a bearer token into a verified caller."""

    def review(self, token: str) -> Caller:
        """The caller the token proves.

        Raises AuthenticationError (401) for invalid tokens, NotServiceAccountError (403) for
        tokens of users or nodes, UnavailableError (503) when no answer can be had.
        """
        ...

    def check_ready(self) -> None:
        """Raise UnavailableError when TokenReview cannot be reached or is not permitted."""
        ...


def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """A kubernetes ApiClient from a kubeconfig file, or in-cluster configuration."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or "the in-cluster service account"
        raise ConfigurationError(f"cannot load Kubernetes credentials from {where}: {exc}") from exc
    # Retry a refused connection once; never retry a read that timed out, so a slow API server
    # costs one timeout, not several.
    configuration.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0)
    return client.ApiClient(configuration)


def _reason(status: Any) -> str:
    text = str(getattr(status, "error", None) or "the token was not accepted")
    return text[:_MAX_REASON]


class ReviewMetrics:
    """Prometheus metrics of token verification."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reviews = Counter(
            "kamus_tokenreview_calls",
            "TokenReview calls by result (authenticated, rejected, unavailable)",
            ["result"],
            registry=registry,
        )
        self.latency = Histogram(
            "kamus_tokenreview_duration_seconds",
            "TokenReview call latency",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.cache = Counter(
            "kamus_tokenreview_cache", "Token verification cache lookups by result (hit, miss)",
            ["result"], registry=registry,
        )  # fmt: skip
        # Looked up once: labels() takes a lock and checks the values on every call.
        self.cache_hits = self.cache.labels("hit")
        self.cache_misses = self.cache.labels("miss")


class KubernetesTokenReviewer:
    """TokenReview through the official client, scoped to the configured audiences."""

    def __init__(
        self,
        api: client.ApiClient,
        audiences: tuple[str, ...],
        timeout: float,
        metrics: ReviewMetrics | None = None,
    ) -> None:
        self._api = client.AuthenticationV1Api(api)
        self.audiences = audiences
        self.timeout = timeout
        self.metrics = metrics or ReviewMetrics(CollectorRegistry())

    def review(self, token: str) -> Caller:
        if not _JWT.fullmatch(token):
            # Service-account tokens are always JWTs: anything else is refused without an API
            # call, so a flood of junk costs the API server nothing.
            raise AuthenticationError("the token is not a service-account token (not a JWT)")
        started = time.perf_counter()
        try:
            caller = self._review(token)
        except RequestError:
            self.metrics.reviews.labels("rejected").inc()
            raise
        except UnavailableError:
            self.metrics.reviews.labels("unavailable").inc()
            raise
        finally:
            self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.reviews.labels("authenticated").inc()
        return caller

    def _create(self, token: str) -> Any:
        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token, audiences=list(self.audiences) or None),
        )
        try:
            return self._api.create_token_review(body, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status in (401, 403):
                # Our own credentials are wrong: an operator must act, callers can only retry.
                log.error(
                    "TokenReview refused the decryptor's credentials; its service account needs "
                    "`create` on `tokenreviews` (authentication.k8s.io), as the chart's "
                    "ClusterRole grants",
                    extra={"status": exc.status},
                )
            else:
                log.warning("TokenReview failed", extra={"status": exc.status})
            raise UnavailableError("token verification is unavailable; retry later") from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            # ValueError: an answer the client cannot read (not JSON, not a TokenReview).
            log.warning(
                "TokenReview unreachable or unreadable", extra={"error": type(exc).__name__}
            )
            raise UnavailableError("token verification is unavailable; retry later") from exc

    def _review(self, token: str) -> Caller:
        status = self._create(token).status
        if status is None or not status.authenticated:
            # The API server's reason names its internals and which service accounts exist
            # (`serviceaccounts "ghost" not found`): for the operator's log, not for the caller.
            log.info("TokenReview rejected a token", extra={"reason": _reason(status)})
            raise AuthenticationError("the token was rejected")
        # Defence in depth: the API server already matched audiences, but a review that does not
        # echo one of ours must not pass.
        if self.audiences and not set(status.audiences or ()) & set(self.audiences):
            raise AuthenticationError("the token is not valid for the Kamus audience")
        user = status.user
        username = str(getattr(user, "username", "") or "")
        scope = Scope.from_username(username)
        if scope is None:
            raise NotServiceAccountError(
                "only service-account tokens can decrypt; this token belongs to "
                f"{username or 'an unnamed user'}"
            )
        extra = {
            str(k): [str(x) for x in v] for k, v in (getattr(user, "extra", None) or {}).items()
        }
        return Caller(scope, username, str(getattr(user, "uid", "") or ""), extra)

    def check_ready(self) -> None:
        # A review of a token that cannot be valid proves the API is reachable and that our
        # credentials may create TokenReviews (401/403 would raise UnavailableError).
        self._create("kamus-readiness-probe")
