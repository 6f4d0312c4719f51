"""A canned Kamus server for the client tests: a real Flask app on 127.0.0.1, in a thread.

Shared by the kamus-cli and kamus-init tests, with a self-signed certificate for https. Every POST
is recorded and answered with the next queued reply (a Reply, or a function of the recorded
request); once the queue is empty the ``otherwise`` reply answers.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server


@dataclass(frozen=True)
class Reply:
    """One canned HTTP answer."""

    status: int = 200
    body: str = ""
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    """Return a JSON reply, as the Kamus services send errors and batch results."""
    return Reply(status, json.dumps(payload), "application/json", headers or {})


def error_reply(status: int, code: str, message: str, **headers: str) -> Reply:
    """Return a Kamus error body ``{"error", "message"}`` with ``status``."""
    return json_reply(status, {"error": code, "message": message}, headers)


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    headers: Mapping[str, str]
    body: Any


Responder = Reply | Callable[[Recorded], Reply]


class CannedServer:
    """Answers every POST with the next queued reply and records what it received."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Recorded] = []
        self.otherwise: Responder = Reply(500, "no canned reply left")
        self._queue: deque[Responder] = deque()
        self._lock = threading.Lock()

    def queue(self, *replies: Responder) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self._queue.extend(replies)

    def app(self) -> Flask:
        """Return the Flask app serving the canned replies."""
        app = Flask("canned_server")

        @app.post("/<path:path>")
        def answer(path: str) -> Response:
            recorded = Recorded(
                "/" + path, dict(request.headers), request.get_json(silent=True, force=True)
            )
            with self._lock:
                self.requests.append(recorded)
                responder = self._queue.popleft() if self._queue else self.otherwise
            reply = responder(recorded) if callable(responder) else responder
            time.sleep(reply.delay)
            return Response(
                reply.body,
                reply.status,
                headers=dict(reply.headers),
                content_type=reply.content_type,
            )

        return app


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        """Keep the test output free of access logs."""


@contextmanager
def serve(server: CannedServer, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``server`` on 127.0.0.1 on a free port until the block ends; yield its URL."""
    http = make_server(
        "127.0.0.1",
        0,
        server.app(),
        threaded=True,
        request_handler=_QuietHandler,
        ssl_context=ssl_context,
    )
    # A client that aborts the TLS handshake (wrong pin) is expected; don't print its traceback.
    http.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    scheme = "https" if ssl_context is not None else "http"
    server.url = f"{scheme}://127.0.0.1:{http.server_port}"
    # A short poll interval keeps shutdown, and so every test, fast.
    thread = threading.Thread(target=http.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        http.shutdown()
        thread.join()
        http.server_close()


@dataclass(frozen=True)
class Certificate:
    """A self-signed server certificate for 127.0.0.1 (its own CA) and its fingerprints."""

    cert_path: Path
    key_path: Path
    sha256: str
    sha1: str

    def server_context(self) -> ssl.SSLContext:
        """Return a server-side TLS context presenting this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def self_signed_certificate(folder: Path) -> Certificate:
    """Write a fresh self-signed certificate and key for 127.0.0.1 into ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kamus-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        # The IP address lets a client trusting this certificate as its CA bundle verify the host.
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Certificate(
        cert_path,
        key_path,
        hashlib.sha256(der).hexdigest(),
        hashlib.sha1(der).hexdigest(),  # the fingerprint Kamus users have
    )
