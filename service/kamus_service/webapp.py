"""The Flask application both services start from: request ids, request log, errors, health."""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response, jsonify, request
from flask.sessions import NullSession, SessionInterface, SessionMixin
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from werkzeug.routing import Map

from kamus_service.errors import register_error_handlers
from kamus_service.logs import write_event
from kamus_service.readiness import Readiness, ReadinessCheck
from kamus_service.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("kamus.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Methods outside this set are counted as "other": a client must not grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The environ keys under which routes find this request's id, always made here (a client could
# forge its own to confuse an audit), and the X-Request-Id the client sent, when well-formed.
REQUEST_ID = "kamus.request_id"
CLIENT_REQUEST_ID = "kamus.client_request_id"
_SLASHES = re.compile(r"//+")


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

    def observe(self, route: str, method: str, status: str, seconds: float) -> None:
        """Count one request and record its latency."""
        self.requests.labels(route, method, status).inc()
        self.latency.labels(route).observe(seconds)


class _NoSessions(SessionInterface):
    """Sessions are refused (NullSession raises on any write), at no cost per request."""

    _null = NullSession()

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        return self._null

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return


class RequestPlumbing:
    """WSGI layer around the Flask app: request id, common headers, metrics, the request line.

    Done on the WSGI environ and the header list rather than in Flask hooks: on a service whose
    requests take a fraction of a millisecond, context-local lookups and header objects were a
    measurable share of each request (docs/PERFORMANCE.md).
    """

    def __init__(self, app: WSGIApplication, metrics: HttpMetrics, url_map: Map) -> None:
        self.app = app
        self.metrics = metrics
        self.url_map = url_map
        self._routes: frozenset[str] | None = None

    @property
    def routes(self) -> frozenset[str]:
        """The app's routes; read at the first request, after which Flask allows no new ones.

        Every Kamus route is a fixed path, so the path is the route label when it is one of
        them; anything else is "unmatched" (a client must not grow the label set either).
        """
        if self._routes is None:
            rules = self.url_map.iter_rules()
            self._routes = frozenset(rule.rule for rule in rules if not rule.arguments)
        return self._routes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # A correlation id, not a secret: the process's PRNG (reseeded in each forked worker) is
        # enough and costs no system call.
        rid = f"{random.getrandbits(128):032x}"
        environ[REQUEST_ID] = rid
        supplied = environ.get("HTTP_X_REQUEST_ID")
        if supplied is not None and _REQUEST_ID.fullmatch(supplied):
            environ[CLIENT_REQUEST_ID] = supplied
        started = time.perf_counter()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            elapsed = time.perf_counter() - started
            headers.append(("X-Request-Id", rid))
            headers.append(("Cache-Control", "no-store"))
            headers.append(("X-Content-Type-Options", "nosniff"))
            self._account(environ, status[:3], elapsed)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)

    def _account(self, environ: WSGIEnvironment, status: str, elapsed: float) -> None:
        path = environ.get("PATH_INFO", "")
        routes = self._routes or self.routes
        if path not in routes:
            # The router serves `//api/v1/decrypt` as `/api/v1/decrypt` (and redirects
            # `/api//v1/...` there): count them under that route too.
            path = _SLASHES.sub("/", path)
        route = path if path in routes else "unmatched"
        method = environ.get("REQUEST_METHOD", "")
        self.metrics.observe(route, method if method in _METHODS else "other", status, elapsed)
        # Only the route and outcome: bodies, headers and query strings may hold secrets.
        if log.isEnabledFor(logging.INFO):
            write_event(
                "kamus.http",
                "request",
                {
                    "request_id": environ[REQUEST_ID],
                    "client_request_id": environ.get(CLIENT_REQUEST_ID),
                    "method": method[:16],
                    "route": route,
                    "status": int(status),
                    "duration_ms": round(elapsed * 1000, 3),
                    "remote_addr": environ.get("REMOTE_ADDR"),
                },
            )


# prometheus_client chose where values live when it was imported (just above): in files only if
# the folder was named then. With gunicorn's --preload the app is imported before the worker
# class names it, and every process then keeps its own values: answer with those.
_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _scraped(registry: CollectorRegistry) -> CollectorRegistry:
    """What a scrape shows: under gunicorn, every worker process of the pod added up
    (kamus_service.worker.prepare_metrics_directory); otherwise this process's registry."""
    if not _MULTIPROCESS:
        return registry
    pod = CollectorRegistry()
    multiprocess.MultiProcessCollector(pod)  # type: ignore[no-untyped-call]
    return pod


def new_app(
    name: str,
    settings: Settings,
    *,
    readiness: Mapping[str, ReadinessCheck],
    openapi: dict[str, Any],
    registry: CollectorRegistry,
    enforced: Collection[str] = (),
    browser_page: Callable[[], Response] | None = None,
) -> Flask:
    """A Flask app with the routes and plumbing every Kamus service has.

    ``readiness`` names each dependency's check (kamus_service.readiness), ``enforced`` those of
    them that are conditions of the process itself and fail a plain `/readyz`;
    ``browser_page``, what `/` answers browsers (everyone else gets Kamus's `welcome`).
    """
    app = Flask(name)
    # Kamus services keep no sessions: every request gets the same read-only null session
    # instead of a signing check and a fresh object.
    app.session_interface = _NoSessions()
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.wsgi_app = RequestPlumbing(  # type: ignore[method-assign]
        app.wsgi_app, HttpMetrics(registry), app.url_map
    )
    register_error_handlers(app)

    # Kamus's own answers, byte for byte (ASP.NET Core's): a JSON `true` without a line break,
    # and the plain-text welcome at the root.
    @app.get("/api/v1/isAlive")
    def is_alive() -> Response:
        return Response("true", content_type="application/json; charset=utf-8")

    @app.get("/")
    def welcome() -> Response:
        if browser_page is None:
            return Response("welcome", content_type="text/plain; charset=utf-8")
        # Browsers ask for HTML first; Kamus's clients, curl and probes take text (or anything),
        # and for them `/` stays Kamus's `welcome`.
        if request.accept_mimetypes.best_match(["text/plain", "text/html"]) == "text/html":
            response = browser_page()
        else:
            response = Response("welcome", content_type="text/plain; charset=utf-8")
        response.headers["Vary"] = "Accept"
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    dependencies = Readiness(
        readiness, registry, enforced=enforced, interval=settings.readiness_check_seconds
    )

    @app.get("/readyz")
    def readyz() -> Response:
        verbose = "verbose" in request.args
        states = dependencies.states(wait=verbose)
        ready = dependencies.ready(states)
        status = "ready" if ready else "not_ready"
        if not verbose:
            response = jsonify(status=status)
        else:
            response = jsonify(
                status=status,
                dependencies={
                    name: {
                        "ready": state.ready,
                        "error": state.error,
                        "reason": state.reason,
                        "enforced": name in dependencies.enforced,
                        "since": datetime.fromtimestamp(state.since, UTC).isoformat(),
                    }
                    for name, state in states.items()
                },
            )
        # 503 takes the pod out of the Service's endpoints until an enforced check passes again.
        response.status_code = 200 if ready else 503
        return response

    @app.get("/metrics")
    def metrics_route() -> Response:
        # CONTENT_TYPE_LATEST names its charset already: as `mimetype`, Flask would add another.
        return Response(generate_latest(_scraped(registry)), content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi_route() -> Response:
        return jsonify(openapi)

    return app
