"""The Flask application both services start from: request ids, request log, errors, health."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from kamus_kms.errors import KamusError
from kamus_service.errors import error_response, register_error_handlers
from kamus_service.logs import write_event
from kamus_service.settings import Settings

log = logging.getLogger("kamus.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

ReadinessCheck = Callable[[], None]


class HttpMetrics:
    """Request counters and latency of one service."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "kamus_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "kamus_http_request_duration_seconds", "HTTP request latency by route",
            ["route"], registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip


def new_app(
    name: str,
    settings: Settings,
    *,
    readiness: list[ReadinessCheck],
    openapi: dict[str, Any],
    registry: CollectorRegistry,
) -> Flask:
    """A Flask app with the routes and plumbing every Kamus service has."""
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics = HttpMetrics(registry)
    register_error_handlers(app)

    @app.before_request
    def _start() -> None:
        supplied = request.headers.get("X-Request-Id", "")
        g.request_id = supplied if _REQUEST_ID.fullmatch(supplied) else os.urandom(16).hex()
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(elapsed)
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Only the route and outcome: bodies, headers and query strings may hold secrets.
        if log.isEnabledFor(logging.INFO):
            write_event(
                "kamus.http",
                "request",
                {
                    "request_id": g.get("request_id"),
                    "method": request.method,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "remote_addr": request.remote_addr,
                },
            )
        return response

    @app.get("/api/v1/isAlive")
    def is_alive() -> Response:
        return jsonify(True)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        for check in readiness:
            try:
                check()
            except Exception as exc:
                message = str(exc) if isinstance(exc, KamusError) else "a dependency failed"
                log.warning("not ready", extra={"error": type(exc).__name__})
                response = error_response(503, "not_ready", message)
                response.headers["Retry-After"] = "5"
                return response
        return jsonify(status="ready")

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi_route() -> Response:
        return jsonify(openapi)

    return app
