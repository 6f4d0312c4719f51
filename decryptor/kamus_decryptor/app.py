"""The decryptor's app factory and routes: decrypt, batch decrypt and rewrap, for verified pods."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, Counter

from kamus_decryptor.audit import AuditEvent, AuditTrail, print_witnessed, witness_fields
from kamus_decryptor.auditfile import AuditDirectory, AuditFile, WitnessCallback
from kamus_decryptor.auditheads import ClusterWitness
from kamus_decryptor.jwks import OfflineTokenCheck, PrecheckedTokenReviewer
from kamus_decryptor.openapi import OPENAPI
from kamus_decryptor.ratelimit import FailureLimiter
from kamus_decryptor.tokencache import CachingTokenReviewer, token_key
from kamus_decryptor.tokenreview import (
    Caller,
    KubernetesTokenReviewer,
    ReviewMetrics,
    TokenReviewer,
    api_client,
)
from kamus_kms.auditsign import signing_key
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import (
    AuditWriteError,
    ConfigurationError,
    InvalidCiphertextError,
    InvalidRequestError,
    RequestError,
    UnavailableError,
)
from kamus_kms.legacy import PROVIDER_NAME as LEGACY_PROVIDER
from kamus_kms.legacy import LegacyCiphertext, LegacyKamusKey, is_legacy
from kamus_kms.offline import PROVIDER as SEALED
from kamus_kms.offline import SealingKeys
from kamus_kms.provider import KeyProvider
from kamus_kms.sealer import Sealer
from kamus_kms.sealingkeys import SealingKeyring
from kamus_service.bodies import read_json_object, require_text
from kamus_service.errors import (
    AuthenticationError,
    DefaultServiceAccountForbiddenError,
    RateLimitedError,
)
from kamus_service.keys import audit_key_from_settings
from kamus_service.logs import configure_logging
from kamus_service.providers import provider_from_settings, sealer_from_settings
from kamus_service.settings import Settings, exit_on_configuration_error, load_settings
from kamus_service.webapp import CLIENT_REQUEST_ID, REQUEST_ID, new_app

routes = Blueprint("decryptor", __name__)
Parsed = Ciphertext | LegacyCiphertext
T = TypeVar("T")
L = TypeVar("L", str, tuple[str, str])
_MAX_ITEM_NAME = 253
_TEXT = "text/plain; charset=utf-8"


def _bearer_token(environ: Mapping[str, Any]) -> str | None:
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class BoundedLabels(Generic[L]):
    """Label values of one metric, at most ``limit`` distinct ones per process (then ``other``).

    Key ids (per-service-account KMS keys are one per scope) and callers' scopes are bounded only
    by the cluster, and every distinct label value is a time series kept forever.
    """

    def __init__(self, other: L, limit: int = 100) -> None:
        self._other: L = other
        self._limit = limit
        self._seen: set[L] = set()

    def of(self, value: L) -> L:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return self._other
        self._seen.add(value)
        return value


# Label values of denials no verified caller is known for, and of callers past the bound: neither
# is a valid namespace or service-account name (DNS labels), so none can be mistaken for one.
UNVERIFIED = "(unverified)"
OTHER_CALLERS = "(other)"


class Decryptor:
    """What the decryptor routes need, attached to the app."""

    def __init__(
        self,
        sealer: Sealer,
        *,
        reviewer: TokenReviewer,
        audit: AuditTrail,
        limiter: FailureLimiter,
        settings: Settings,
        registry: CollectorRegistry,
        legacy: LegacyKamusKey | None = None,
        sealing: SealingKeyring | None = None,
    ) -> None:
        self.sealer = sealer
        self._sealing = sealing
        self._sealing_keys: SealingKeys | None = None
        self.reviewer = reviewer
        self.audit = audit
        self.limiter = limiter
        self.settings = settings
        self.legacy = legacy
        self.outcomes = Counter(
            "kamus_decrypt",
            "Decryptor attempts by action and reason",
            ["action", "reason"],
            registry=registry,
        )
        self.key_opens = Counter(
            "kamus_decrypt_key_opens",
            "Ciphertexts opened, by provider and key id (at most 100 key ids, then `other`)",
            ["provider", "key_id"],
            registry=registry,
        )
        self._key_labels = BoundedLabels("other")
        # Who is refused, for alerts on one scope probing others: the verified caller's namespace
        # and service account (UNVERIFIED before a token is verified), at most 200 of them.
        # Not `namespace`: Prometheus gives every scraped series the target's own namespace label
        # and would rename this one `exported_namespace`.
        self.denials = Counter(
            "kamus_decrypt_denials",
            "Refused decryptor attempts by caller namespace, service account and reason",
            ["caller_namespace", "caller_service_account", "reason"],
            registry=registry,
        )
        self._denied_callers = BoundedLabels((OTHER_CALLERS, OTHER_CALLERS), limit=200)
        self.legacy_opened = Counter(
            "kamus_legacy_ciphertexts_opened", "Original Kamus ciphertexts opened (to migrate)",
            registry=registry,
        )  # fmt: skip

    def attempt(self, action: str, work: Callable[[AuditEvent, Caller], T]) -> T:
        """Run ``work`` for the caller of the current request, as one accounted attempt.

        In order: the caller's failure budget is checked, its token verified, ``work`` run.
        However that ends, the attempt is audited (the outcome: audit.outcome_of) and counted by
        its reason, and a refusal caused by what the caller sent (400, 401, 403; not 429) is
        charged to its budget. An allowed attempt whose audit record cannot be kept fails
        (503, fail-closed policy): no plaintext leaves without its record.
        """
        environ = request.environ
        token = _bearer_token(environ)
        source = environ.get("REMOTE_ADDR") or "unknown"
        # Failures count against the caller: its token. Pods on one node, or behind SNAT or an
        # ingress, share a source address, so an address key would let one broken pod lock its
        # neighbours out. Only requests without a token (which no one can verify) count by address.
        budget = f"token:{token_key(token)}" if token else f"source:{source}"
        event = AuditEvent(
            action,
            environ.get(REQUEST_ID, ""),
            source,
            environ.get("HTTP_USER_AGENT"),
            client_request_id=environ.get(CLIENT_REQUEST_ID),
        )
        try:
            self.limiter.check(budget)
            caller = self.authenticate(event, token)
            result = work(event, caller)
        except Exception as exc:
            if isinstance(exc, RequestError) and not isinstance(exc, RateLimitedError):
                self.limiter.record_failure(budget)
            self.audit.emit(event, exc)
            self._count(action, event)
            raise
        try:
            self.audit.emit(event, None)
        except AuditWriteError:
            self._count(action, event)
            raise
        self._count(action, event)
        return result

    def _count(self, action: str, event: AuditEvent) -> None:
        """Count the attempt by the outcome its audit event was emitted with."""
        reason = event.reason
        self.outcomes.labels(action, reason).inc()
        if event.outcome == "denied":
            scope = event.scope
            caller = (scope.namespace, scope.service_account) if scope else (UNVERIFIED, UNVERIFIED)
            namespace, service_account = self._denied_callers.of(caller)
            self.denials.labels(namespace, service_account, reason).inc()

    def authenticate(self, event: AuditEvent, token: str | None) -> Caller:
        """The verified caller of this request, recorded in the audit event."""
        if token is None:
            raise AuthenticationError(
                "send the pod's service-account token as 'Authorization: Bearer <token>'"
            )
        caller = self.reviewer.review(token)
        event.set_caller(caller)
        allow_default = self.settings.allow_default_service_account
        if caller.scope.is_default_service_account and not allow_default:
            raise DefaultServiceAccountForbiddenError(
                "pods running as the `default` service account cannot decrypt; "
                "give the workload a dedicated service account"
            )
        return caller

    def parse_all(self, event: AuditEvent, texts: dict[str, str]) -> dict[str, Parsed]:
        """Parse every ciphertext and record it in the audit event, all or nothing.

        Every header is recorded before anything is opened, so a denied batch still shows all it
        asked for. Original Kamus texts are accepted only when the legacy key is configured.
        """
        parsed: dict[str, Parsed] = {}
        for name, text in texts.items():
            try:
                parsed[name] = self._parse(text)
            except InvalidCiphertextError:
                self.audit.record_item(event, text, None, name)
            else:
                self.audit.record_item(event, text, parsed[name], name)
        if len(parsed) != len(texts):
            raise InvalidCiphertextError
        return parsed

    def _parse(self, text: str) -> Parsed:
        if self.legacy is not None and is_legacy(text):
            return LegacyCiphertext.parse(text)
        return Ciphertext.parse(text)

    def open_all(self, event: AuditEvent, caller: Caller, texts: dict[str, str]) -> dict[str, str]:
        """Open every ciphertext for the caller, all or nothing."""
        parsed = self.parse_all(event, texts)
        opened = {name: self.open_bytes(ciphertext, caller) for name, ciphertext in parsed.items()}
        return {name: _text(plaintext) for name, plaintext in opened.items()}

    def sealing_keys(self) -> SealingKeys:
        """The private sealing keys, opened through the provider once per process."""
        if self._sealing is None:
            raise InvalidCiphertextError  # no sealing keys here: not a ciphertext of this Kamus
        keys = self._sealing_keys
        if keys is None:
            # UnavailableError (a KMS outage) propagates as 503 and the next request tries again.
            keys = self._sealing_keys = self._sealing.opener(
                self.sealer.provider, cluster=self.settings.cluster_name
            )
        return keys

    def open_bytes(self, ciphertext: Parsed, caller: Caller) -> bytes:
        """The plaintext of one parsed ciphertext, for the caller's scope only."""
        if isinstance(ciphertext, LegacyCiphertext):
            assert self.legacy is not None
            plaintext = self.legacy.open(ciphertext, caller.scope)
            self.legacy_opened.inc()
            self.key_opens.labels(LEGACY_PROVIDER, "-").inc()
            return plaintext
        if ciphertext.provider == SEALED:
            plaintext = self.sealing_keys().open(ciphertext, caller.scope)
        else:
            plaintext = self.sealer.open_parsed(ciphertext, caller.scope).plaintext
        # A key's last use is visible (kamus-cli keys scan tells where ciphertexts are stored;
        # this, which ones are still read).
        self.key_opens.labels(ciphertext.provider, self._key_labels.of(ciphertext.key_id)).inc()
        return plaintext


def _text(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCiphertextError from exc


def _decryptor() -> Decryptor:
    decryptor: Decryptor = current_app.extensions["kamus_decryptor"]
    return decryptor


@routes.post("/api/v1/decrypt")
def decrypt() -> Response:
    decryptor = _decryptor()

    def work(event: AuditEvent, caller: Caller) -> str:
        text = require_text(read_json_object(request), "data")
        return decryptor.open_all(event, caller, {"data": text})["data"]

    return Response(decryptor.attempt("decrypt", work), content_type=_TEXT)


@routes.post("/api/v1/decrypt/batch")
def decrypt_batch() -> Response:
    decryptor = _decryptor()

    def work(event: AuditEvent, caller: Caller) -> dict[str, str]:
        items = _batch_items(read_json_object(request), decryptor.settings.max_batch_items)
        return decryptor.open_all(event, caller, items)

    return jsonify(items=decryptor.attempt("decrypt_batch", work))


@routes.post("/api/v1/rewrap")
def rewrap() -> Response:
    decryptor = _decryptor()

    def work(event: AuditEvent, caller: Caller) -> str:
        text = require_text(read_json_object(request), "data")
        ciphertext = decryptor.parse_all(event, {"data": text})["data"]
        # The plaintext exists only inside this call: it is sealed again at once, for the
        # caller's own scope (the only one it could open), under the provider's current key.
        plaintext = decryptor.open_bytes(ciphertext, caller)
        return decryptor.sealer.seal(plaintext, caller.scope)

    return Response(decryptor.attempt("rewrap", work), content_type=_TEXT)


def _batch_items(body: dict[str, Any], limit: int) -> dict[str, str]:
    items = body.get("items")
    if not isinstance(items, dict) or not items:
        raise InvalidRequestError('"items" must be a non-empty object of name: ciphertext')
    if len(items) > limit:
        raise InvalidRequestError(f"a batch holds at most {limit} items, got {len(items)}")
    for name, text in items.items():
        if not name or len(name) > _MAX_ITEM_NAME:
            raise InvalidRequestError(f"item names must be 1-{_MAX_ITEM_NAME} characters")
        if not isinstance(text, str):
            raise InvalidRequestError(f'item "{name[:64]}" must be a ciphertext string')
    return items


def _reviewer(settings: Settings, metrics: ReviewMetrics) -> TokenReviewer:
    api = api_client(settings.kubeconfig)
    reviewer: TokenReviewer = KubernetesTokenReviewer(
        api, settings.token_audiences, settings.tokenreview_timeout_seconds, metrics
    )
    if settings.token_verification == "hybrid":  # noqa: S105 (a mode name)
        offline = OfflineTokenCheck.from_api(
            api, settings.token_audiences, settings.token_issuer,
            settings.tokenreview_timeout_seconds,
        )  # fmt: skip
        reviewer = PrecheckedTokenReviewer(offline, reviewer)
    return reviewer


# Waits between attempts to open a sealed signing key while the KMS does not answer at start: a
# blip during a rollout should not put the pod into CrashLoopBackOff (7 s in all, well inside
# gunicorn's worker timeout).
SIGNER_RETRY_WAITS = (1.0, 2.0, 4.0)


def _signer(
    settings: Settings, provider: KeyProvider, sleep: Callable[[float], None] = time.sleep
) -> Ed25519PrivateKey | None:
    if not settings.audit_signing_key:
        return None
    with exit_on_configuration_error("kamus-decryptor"):
        return _open_signing_key(settings.audit_signing_key, provider, sleep)


def _open_signing_key(
    text: str, provider: KeyProvider, sleep: Callable[[float], None]
) -> Ed25519PrivateKey:
    for wait in SIGNER_RETRY_WAITS:
        try:
            return signing_key(text, provider)
        except UnavailableError:
            sleep(wait)
    try:
        return signing_key(text, provider)
    except UnavailableError as exc:
        # No chain is written without its checkpoints: the restarted pod tries again.
        raise ConfigurationError(
            "the audit signing key is sealed by the key provider, which did not answer; "
            "the decryptor cannot start without it"
        ) from exc


def _witness(settings: Settings, registry: CollectorRegistry) -> WitnessCallback:
    """Where the records the audit writer adds by itself go: stdout, and each checkpoint to the
    cluster witness too when one is configured."""
    if settings.audit_witness_configmap is None:
        return print_witnessed
    cluster = ClusterWitness(
        api_client(settings.kubeconfig), settings.audit_witness_configmap, registry
    )

    replaced: dict[str, str] = {}  # a new chain -> the chain its chain start names

    def witness(chain: str, record: dict[str, Any]) -> None:
        print_witnessed(chain, record)
        kind, fields = witness_fields(chain, record)
        previous = record.get("previous")
        if kind == "audit_chain_start" and isinstance(previous, dict):
            replaced[chain] = str(previous.get("chain"))
        elif kind == "audit_checkpoint":
            cluster.offer(chain, {"event": kind, **fields}, replaces=replaced.pop(chain, None))

    return witness


def _audit_file(
    settings: Settings, audit_key: bytes, provider: KeyProvider, registry: CollectorRegistry
) -> AuditFile | AuditDirectory | None:
    signer = _signer(settings, provider)

    options: dict[str, Any] = {
        "fsync": settings.audit_fsync,
        "signer": signer,
        "checkpoint_records": settings.audit_checkpoint_records,
        "checkpoint_seconds": settings.audit_checkpoint_seconds,
        "witness": _witness(settings, registry),
        "origin": settings.audit_origin,
    }
    if settings.audit_dir is not None:
        return AuditDirectory(settings.audit_dir, audit_key, **options)
    if settings.audit_file is not None:
        return AuditFile(settings.audit_file, audit_key, **options)
    return None


def create_app(
    settings: Settings | None = None,
    *,
    provider: KeyProvider | None = None,
    reviewer: TokenReviewer | None = None,
    registry: CollectorRegistry | None = None,
) -> Flask:
    """The decryptor app; settings from the environment unless given.

    A given `reviewer` is used as is; the one built from settings is wrapped in the review cache.
    """
    if settings is None:
        with exit_on_configuration_error("kamus-decryptor"):
            return create_app(
                load_settings("decryptor"), provider=provider, reviewer=reviewer, registry=registry
            )
    configure_logging(settings.log_level)
    registry = registry or CollectorRegistry()
    provider = provider or provider_from_settings(settings, registry)
    metrics = ReviewMetrics(registry)
    if reviewer is None:
        reviewer = CachingTokenReviewer(
            _reviewer(settings, metrics),
            ttl=settings.tokenreview_cache_seconds,
            failure_ttl=settings.tokenreview_failure_cache_seconds,
            max_concurrent=settings.tokenreview_max_concurrent,
            wait_timeout=settings.tokenreview_timeout_seconds,
            metrics=metrics,
        )
    with exit_on_configuration_error("kamus-decryptor"):
        sealing = SealingKeyring.parse(settings.sealing_keys) if settings.sealing_keys else None
    audit_key = audit_key_from_settings(settings)
    audit_file = _audit_file(settings, audit_key, provider, registry)
    audit = AuditTrail(
        audit_key,
        file=audit_file,
        fail_closed=settings.audit_policy == "fail-closed",
        registry=registry,
    )
    readiness = {"kms": provider.check_ready, "tokenreview": reviewer.check_ready}
    if audit_file is not None:
        readiness["audit"] = audit.check_ready
    app = new_app(
        "kamus_decryptor",
        settings,
        readiness=readiness,
        # Unlike the shared dependencies, the pod's own volume: a pod that cannot write it refuses
        # every decrypt (fail-closed), so it leaves the Service (docs/DEPLOY.md, "Readiness").
        enforced=("audit",) if audit_file is not None and audit.fail_closed else (),
        openapi=OPENAPI,
        registry=registry,
    )
    app.extensions["kamus_decryptor"] = Decryptor(
        sealer_from_settings(settings, provider),
        reviewer=reviewer,
        audit=audit,
        limiter=FailureLimiter(settings.rate_limit_failures_per_minute),
        settings=settings,
        registry=registry,
        legacy=(
            LegacyKamusKey(
                settings.legacy_key, derive_per_service_account=settings.legacy_key_derivation
            )
            if settings.legacy_key is not None
            else None
        ),
        sealing=sealing,
    )
    if sealing is not None:
        # A sealing key this provider cannot open is a configuration error: say so at start. A
        # KMS that does not answer yet is not: the first sealed ciphertext tries again (503).
        with exit_on_configuration_error("kamus-decryptor"), suppress(UnavailableError):
            app.extensions["kamus_decryptor"].sealing_keys()
    app.register_blueprint(routes)
    return app
