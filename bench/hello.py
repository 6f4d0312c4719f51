"""A bare Flask hello-world: the baseline every Kamus rate is compared with."""

from __future__ import annotations

from flask import Flask, Response


def create_app() -> Flask:
    """POST / answers "hello" (text/plain); GET /healthz tells the harness it is up."""
    app = Flask("hello")

    @app.post("/")
    def hello() -> Response:
        return Response("hello", mimetype="text/plain")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok", mimetype="text/plain")

    return app
