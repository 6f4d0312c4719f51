"""The decryptor's app factory and routes: decrypt and batch decrypt for verified callers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CollectorRegistry, Counter

from kamus_decryptor.audit import AuditEvent, AuditTrail
from kamus_decryptor.openapi import OPENAPI
from kamus_decryptor.tokenreview import (
    Caller,
    KubernetesTokenReviewer,
    TokenReviewer,
    api_client,
)
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import (
    AuthenticationError,
    DefaultServiceAccountForbiddenError,
    InvalidCiphertextError,
    InvalidRequestError,
    KamusError,
)
from kamus_kms.provider import KeyProvider
from kamus_kms.sealer import Sealer
from kamus_service.bodies import read_json_object, require_text
from kamus_service.keys import audit_key_from_settings, provider_from_settings, sealer_from_settings
from kamus_service.logs import configure_logging
from kamus_service.settings import Settings, exit_on_configuration_error, load_settings
from kamus_service.webapp import new_app

routes = Blueprint("decryptor", __name__)
_MAX_ITEM_NAME = 253


class Decryptor:
    """What the decrypt routes need, attached to the app."""

    def __init__(
        self,
        sealer: Sealer,
        reviewer: TokenReviewer,
        audit: AuditTrail,
        settings: Settings,
        registry: CollectorRegistry,
    ) -> None:
        self.sealer = sealer
        self.reviewer = reviewer
        self.audit = audit
        self.settings = settings
        self.outcomes = Counter(
            "kamus_decrypt", "Decrypt attempts by action and outcome", ["action", "reason"],
            registry=registry,
        )  # fmt: skip

    def authenticate(self, event: AuditEvent) -> Caller:
        """The verified caller of this request, recorded in the audit event."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(
                "send the pod's service-account token as 'Authorization: Bearer <token>'"
            )
        caller = self.reviewer.review(token)
        event.set_caller(caller)
        if (
            caller.scope.is_default_service_account
            and not self.settings.allow_default_service_account
        ):
            raise DefaultServiceAccountForbiddenError(
                "pods running as the `default` service account cannot decrypt; "
                "give the workload a dedicated service account"
            )
        return caller

    def open_all(self, event: AuditEvent, caller: Caller, texts: dict[str, str]) -> dict[str, str]:
        """Open every ciphertext for the caller, all or nothing.

        Every header is parsed and recorded in the audit event before any is opened, so a denied
        batch still shows everything it asked for.
        """
        parsed: dict[str, Ciphertext] = {}
        for name, text in texts.items():
            try:
                parsed[name] = Ciphertext.parse(text)
            except InvalidCiphertextError:
                self.audit.record_item(event, text, None, name)
            else:
                self.audit.record_item(event, text, parsed[name], name)
        if len(parsed) != len(texts):
            raise InvalidCiphertextError
        return {name: self._open(ciphertext, caller) for name, ciphertext in parsed.items()}

    def _open(self, ciphertext: Ciphertext, caller: Caller) -> str:
        plaintext = self.sealer.open_parsed(ciphertext, caller.scope).plaintext
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidCiphertextError from exc


def _decryptor() -> Decryptor:
    decryptor: Decryptor = current_app.extensions["kamus_decryptor"]
    return decryptor


def _audited(action: str) -> Any:
    decryptor = _decryptor()
    return decryptor.audit.attempt(
        action, g.request_id, request.remote_addr, request.headers.get("User-Agent")
    )


@routes.post("/api/v1/decrypt")
def decrypt() -> Response:
    decryptor = _decryptor()
    try:
        with _audited("decrypt") as event:
            caller = decryptor.authenticate(event)
            text = require_text(read_json_object(request), "data")
            plaintext = decryptor.open_all(event, caller, {"data": text})["data"]
    except KamusError as exc:
        decryptor.outcomes.labels("decrypt", exc.code).inc()
        raise
    decryptor.outcomes.labels("decrypt", "ok").inc()
    return Response(plaintext, mimetype="text/plain")


@routes.post("/api/v1/decrypt/batch")
def decrypt_batch() -> Response:
    decryptor = _decryptor()
    try:
        with _audited("decrypt_batch") as event:
            caller = decryptor.authenticate(event)
            items = _batch_items(read_json_object(request), decryptor.settings.max_batch_items)
            opened = decryptor.open_all(event, caller, items)
    except KamusError as exc:
        decryptor.outcomes.labels("decrypt_batch", exc.code).inc()
        raise
    decryptor.outcomes.labels("decrypt_batch", "ok").inc()
    return jsonify(items=opened)


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


def create_app(
    settings: Settings | None = None,
    *,
    provider: KeyProvider | None = None,
    reviewer: TokenReviewer | None = None,
    registry: CollectorRegistry | None = None,
) -> Flask:
    """The decryptor app; settings from the environment unless given."""
    if settings is None:
        with exit_on_configuration_error("kamus-decryptor"):
            return create_app(
                load_settings("decryptor"), provider=provider, reviewer=reviewer, registry=registry
            )
    configure_logging(settings.log_level)
    provider = provider or provider_from_settings(settings)
    if reviewer is None:
        reviewer = KubernetesTokenReviewer(
            api_client(settings.kubeconfig),
            settings.token_audiences,
            settings.tokenreview_timeout_seconds,
        )
    registry = registry or CollectorRegistry()
    app = new_app(
        "kamus_decryptor",
        settings,
        readiness=[provider.check_ready, reviewer.check_ready],
        openapi=OPENAPI,
        registry=registry,
    )
    app.extensions["kamus_decryptor"] = Decryptor(
        sealer_from_settings(settings, provider),
        reviewer,
        AuditTrail(audit_key_from_settings(settings)),
        settings,
        registry,
    )
    app.register_blueprint(routes)
    return app
