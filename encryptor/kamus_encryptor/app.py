"""The encryptor's app factory and its one route, POST /api/v1/encrypt."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, Counter

from kamus_encryptor.openapi import OPENAPI
from kamus_encryptor.webpage import ASSETS, WebPage
from kamus_kms import offline
from kamus_kms.errors import (
    ConfigurationError,
    DefaultServiceAccountError,
    InvalidRequestError,
    KamusError,
)
from kamus_kms.offline import MAX_RECIPIENTS, SealingPublicKey
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
    public = encryptor.sealing.published(encryptor.settings.cluster_name)
    return Response(public.text() + "\n", content_type=_TEXT)


def _secret_and_scope(body: dict[str, Any], settings: Settings) -> tuple[bytes, Scope]:
    data = require_text(body, "data")
    if not data:
        # One rule with kamus-cli and kamus-init: an empty secret is a mistake (an unset
        # variable, an empty file), never something to protect.
        raise InvalidRequestError('the field "data" is empty; there is nothing to encrypt')
    scope = Scope(require_text(body, "namespace"), require_text(body, "service-account"))
    if scope.is_default_service_account and not settings.allow_default_service_account:
        raise DefaultServiceAccountError(
            "refusing to encrypt for the `default` service account: every pod of the namespace "
            "runs as it; create a dedicated service account"
        )
    return data.encode("utf-8"), scope


def _other_clusters(body: dict[str, Any]) -> list[SealingPublicKey]:
    keys = body.get("sealing-keys", [])
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise InvalidRequestError('"sealing-keys" must be a list of sealing keys (strings)')
    if len(keys) >= MAX_RECIPIENTS:
        raise InvalidRequestError(
            f'"sealing-keys" names {len(keys)} clusters; a ciphertext seals to at most '
            f"{MAX_RECIPIENTS} with this one"
        )
    parsed = []
    for index, key in enumerate(keys):
        try:
            parsed.append(SealingPublicKey.parse(key))
        except ConfigurationError as exc:
            raise InvalidRequestError(f'"sealing-keys"[{index}]: {exc}') from exc
    return parsed


def _answer(ciphertext: str, scope: Scope) -> Response:
    if _wants_json():
        return jsonify(
            {
                "data": ciphertext,
                "namespace": scope.namespace,
                "service-account": scope.service_account,
            }
        )
    return Response(ciphertext, mimetype="text/plain")


@routes.post("/api/v1/encrypt")
def encrypt() -> Response:
    encryptor: Encryptor = current_app.extensions["kamus_encryptor"]
    try:
        secret, scope = _secret_and_scope(read_json_object(request), encryptor.settings)
        ciphertext = encryptor.sealer.seal(secret, scope)
    except KamusError as exc:
        encryptor.outcomes.labels(exc.code).inc()
        raise
    encryptor.outcomes.labels("ok").inc()
    return _answer(ciphertext, scope)


@routes.post("/api/v1/seal")
def seal() -> Response:
    """One ciphertext for this cluster and the other clusters whose sealing keys are given.

    What `kamus-cli encrypt --sealing-key a.pub --sealing-key b.pub` makes offline, for clients
    without kamus-cli: sealed (HPKE) to this cluster's active sealing key and each given one, for
    the same scope, so it opens in each of those clusters and nowhere else.
    """
    encryptor: Encryptor = current_app.extensions["kamus_encryptor"]
    try:
        if encryptor.sealing is None:
            raise InvalidRequestError(
                "this Kamus has no sealing key (KAMUS_SEALING_KEYS): it cannot seal for several "
                "clusters; use /api/v1/encrypt"
            )
        body = read_json_object(request)
        secret, scope = _secret_and_scope(body, encryptor.settings)
        here = encryptor.sealing.published(encryptor.settings.cluster_name)
        recipients = [here, *_other_clusters(body)]
        ciphertext = offline.seal(
            secret, scope, recipients,
            max_plaintext=encryptor.settings.max_plaintext_bytes,
            padding_bucket=encryptor.settings.padding_bucket,
        )  # fmt: skip
    except KamusError as exc:
        encryptor.outcomes.labels(exc.code).inc()
        raise
    encryptor.outcomes.labels("ok").inc()
    return _answer(ciphertext, scope)


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
    with exit_on_configuration_error("kamus-encryptor"):
        sealing = SealingKeyring.parse(settings.sealing_keys) if settings.sealing_keys else None
    page = WebPage(sealing=sealing is not None) if settings.web_page else None
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
    app.extensions["kamus_encryptor"] = Encryptor(
        sealer_from_settings(settings, provider), settings, registry, sealing
    )
    app.register_blueprint(routes)
    return app
