"""The encryptor's app factory and its one route, POST /api/v1/encrypt."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, Counter

from kamus_encryptor.openapi import OPENAPI
from kamus_encryptor.webpage import ASSETS, WebPage
from kamus_kms.errors import DefaultServiceAccountError, InvalidRequestError, KamusError
from kamus_kms.provider import KeyProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_kms.sealingkeys import SealingKeyring
from kamus_service.bodies import read_json_object, require_text
from kamus_service.errors import NotFoundError
from kamus_service.logs import configure_logging
from kamus_service.providers import provider_from_settings, sealer_from_settings
from kamus_service.settings import Settings, exit_on_configuration_error, load_settings
from kamus_service.webapp import new_app

_TEXT = "text/plain; charset=utf-8"
routes = Blueprint("encryptor", __name__)


class Encryptor:
    """What the encrypt route needs, attached to the app."""

    def __init__(
        self,
        sealer: Sealer,
        settings: Settings,
        registry: CollectorRegistry,
        sealing: SealingKeyring | None = None,
    ) -> None:
        self.sealer = sealer
        self.settings = settings
        self.sealing = sealing
        self.outcomes = Counter(
            "kamus_encrypt", "Encrypt requests by outcome", ["outcome"], registry=registry
        )


def _wants_json() -> bool:
    # JSON only for clients that ask for it alone: Kamus clients sending
    # "application/json, text/plain, */*" keep getting the text/plain body they expect.
    accepted = {value for value, _ in request.accept_mimetypes}
    return "application/json" in accepted and not accepted & {"text/plain", "*/*", "text/*"}


@routes.get("/api/v1/sealing-key")
def sealing_key() -> Response:
    """The cluster's active public sealing key, for offline encryption (kamus-cli --sealing-key)."""
    encryptor: Encryptor = current_app.extensions["kamus_encryptor"]
    if encryptor.sealing is None:
        raise NotFoundError(
            "this Kamus has no sealing key (KAMUS_SEALING_KEYS); encrypt through the API instead"
        )
    return Response(encryptor.sealing.active.public.text() + "\n", content_type=_TEXT)


@routes.post("/api/v1/encrypt")
def encrypt() -> Response:
    encryptor: Encryptor = current_app.extensions["kamus_encryptor"]
    try:
        body = read_json_object(request)
        data = require_text(body, "data")
        if not data:
            # One rule with kamus-cli and kamus-init: an empty secret is a mistake (an unset
            # variable, an empty file), never something to protect.
            raise InvalidRequestError('the field "data" is empty; there is nothing to encrypt')
        scope = Scope(require_text(body, "namespace"), require_text(body, "service-account"))
        if (
            scope.is_default_service_account
            and not encryptor.settings.allow_default_service_account
        ):
            raise DefaultServiceAccountError(
                "refusing to encrypt for the `default` service account: every pod of the namespace "
                "runs as it; create a dedicated service account"
            )
        ciphertext = encryptor.sealer.seal(data.encode("utf-8"), scope)
    except KamusError as exc:
        encryptor.outcomes.labels(exc.code).inc()
        raise
    encryptor.outcomes.labels("ok").inc()
    if _wants_json():
        return jsonify(
            {
                "data": ciphertext,
                "namespace": scope.namespace,
                "service-account": scope.service_account,
            }
        )
    return Response(ciphertext, mimetype="text/plain")


def create_app(
    settings: Settings | None = None,
    *,
    provider: KeyProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> Flask:
    """The encryptor app; settings from the environment unless given."""
    if settings is None:
        with exit_on_configuration_error("kamus-encryptor"):
            return create_app(load_settings("encryptor"), provider=provider, registry=registry)
    configure_logging(settings.log_level)
    registry = registry or CollectorRegistry()
    provider = provider or provider_from_settings(settings, registry)
    page = WebPage() if settings.web_page else None
    app = new_app(
        "kamus_encryptor",
        settings,
        readiness={"kms": provider.check_ready},
        openapi=OPENAPI,
        registry=registry,
        browser_page=page.page if page else None,
    )
    if page is not None:
        for route in ASSETS:
            app.add_url_rule(route, route, partial(page.asset, route), methods=["GET"])
    with exit_on_configuration_error("kamus-encryptor"):
        sealing = SealingKeyring.parse(settings.sealing_keys) if settings.sealing_keys else None
    app.extensions["kamus_encryptor"] = Encryptor(
        sealer_from_settings(settings, provider), settings, registry, sealing
    )
    app.register_blueprint(routes)
    return app
