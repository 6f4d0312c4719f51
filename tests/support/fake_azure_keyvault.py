"""A local stand-in of Azure Key Vault and of its token service, over HTTPS on 127.0.0.1.

It implements the documented REST operations the Azure provider uses, as the real services
answer them, so that the real ``azure-keyvault-keys`` and ``azure-identity`` clients can talk to
it unchanged:

- Microsoft identity platform, client-credentials flow: ``GET /{tenant}/v2.0/.well-known/
  openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token`` (form ``client_id``,
  ``client_secret``, ``scope``, ``grant_type=client_credentials``); a wrong secret gets 401
  ``invalid_client``, a scope of another resource a token that the vault refuses.
- Key Vault keys (any ``api-version``): the bearer challenge (401 with ``WWW-Authenticate: Bearer
  authorization="<authority>/<tenant>", resource="https://vault.azure.net"`` to any request
  without a valid token), ``GET /keys``, ``GET /keys/{name}[/{version}]``, ``GET
  /keys/{name}/versions``, ``POST /keys/{name}/create``, ``PATCH /keys/{name}/{version}`` (key
  operations, enabled), ``POST /keys/{name}/{version}/wrapkey`` and ``unwrapkey`` with
  RSA-OAEP-256 (RSA, RSA-HSM keys) and A256KW (oct-HSM keys, as on a Managed HSM). Errors are
  ``{"error": {"code", "message"}}``: 404 ``KeyNotFound``, 400 ``BadParameter`` (a wrapped key
  that does not unwrap, a wrong algorithm), 403 ``Forbidden`` (an operation the key version does
  not allow, or a disabled version).

Not covered (docs/providers/azure.md): RBAC and access policies (any valid token may do
anything), soft delete and purge, backup, import, rotation policies, HSM attestation, throttling
(429) and every other operation.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from canned_server import Certificate, _QuietHandler
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from flask import Flask, Response, request
from werkzeug.serving import make_server

RESOURCE = "https://vault.azure.net"
_OAEP_256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


@dataclass
class KeyVersion:
    """One version of a key: its material, operations and attributes."""

    name: str
    version: str
    kty: str
    key_ops: list[str]
    private: rsa.RSAPrivateKey | None = None
    secret: bytes = b""
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))


class FakeKeyVault:
    """The state of one vault and its tenant; ``serve`` runs it over HTTPS."""

    def __init__(self, tenant: str = "72f988bf-0000-4000-8000-00000000ca11") -> None:
        self.tenant = tenant
        self.client_id = "0a1b2c3d-0000-4000-8000-000000000001"
        self.client_secret = secrets.token_urlsafe(24)
        self.url = ""
        self.keys: dict[str, list[KeyVersion]] = {}
        self.tokens: dict[str, str] = {}  # access token -> scope
        self.calls: list[tuple[str, str]] = []  # (operation, key name)
        self.token_requests = 0
        self.challenges = 0
        self._lock = threading.Lock()

    # State helpers for tests -------------------------------------------------------------
    def create(self, name: str, kty: str = "RSA", key_ops: list[str] | None = None) -> KeyVersion:
        """Create a new version of ``name`` (as Key Vault does for an existing name)."""
        version = KeyVersion(name, secrets.token_hex(16), kty,
                             key_ops or ["wrapKey", "unwrapKey"])  # fmt: skip
        if kty.startswith("RSA"):
            version.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            version.secret = secrets.token_bytes(32)
        with self._lock:
            self.keys.setdefault(name, []).append(version)
        return version

    def latest(self, name: str) -> KeyVersion:
        """The current version of ``name``."""
        return self.keys[name][-1]

    def count(self, operation: str) -> int:
        """How many calls of ``operation`` the vault answered."""
        return sum(1 for done, _ in self.calls if done == operation)

    # The HTTP side -------------------------------------------------------------------------
    def _bundle(self, key: KeyVersion) -> dict[str, Any]:
        material: dict[str, Any] = {
            "kid": f"{self.url}/keys/{key.name}/{key.version}",
            "kty": key.kty,
            "key_ops": key.key_ops,
        }
        if key.private is not None:
            numbers = key.private.public_key().public_numbers()
            material |= {"n": _b64url(_int_bytes(numbers.n)), "e": _b64url(_int_bytes(numbers.e))}
        return {
            "key": material,
            "attributes": {
                "enabled": key.enabled, "created": key.created, "updated": key.created,
                "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90,
            },
        }  # fmt: skip

    def app(self) -> Flask:
        """The Flask app of the vault and its token service."""
        app = Flask("fake_azure_keyvault")

        def error(status: int, code: str, message: str) -> Response:
            body = json.dumps({"error": {"code": code, "message": message}})
            return Response(body, status, content_type="application/json; charset=utf-8")

        def ok(document: dict[str, Any]) -> Response:
            return Response(json.dumps(document), 200,
                            content_type="application/json; charset=utf-8")  # fmt: skip

        def find(name: str, version: str | None) -> KeyVersion | None:
            versions = self.keys.get(name) or []
            if version is None:
                return versions[-1] if versions else None
            return next((key for key in versions if key.version == version), None)

        @app.before_request
        def challenge() -> Response | None:
            path = request.path
            if path.startswith(f"/{self.tenant}/"):
                return None  # the token service
            header = request.headers.get("Authorization", "")
            token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
            if self.tokens.get(token) == f"{RESOURCE}/.default":
                return None
            self.challenges += 1
            response = error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP"
                                                  " token.")  # fmt: skip
            response.headers["WWW-Authenticate"] = (
                f'Bearer authorization="{self.url}/{self.tenant}", resource="{RESOURCE}"'
            )
            return response

        @app.get("/<tenant>/v2.0/.well-known/openid-configuration")
        def discovery(tenant: str) -> Response:
            base = f"{self.url}/{tenant}"
            return ok({
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
            })  # fmt: skip

        @app.post("/<tenant>/oauth2/v2.0/token")
        def token(tenant: str) -> Response:
            self.token_requests += 1
            form = request.form
            if tenant != self.tenant or form.get("grant_type") != "client_credentials":
                return Response(json.dumps({"error": "invalid_request"}), 400,
                                content_type="application/json")  # fmt: skip
            if form.get("client_id") != self.client_id or not secrets.compare_digest(
                form.get("client_secret", ""), self.client_secret
            ):
                return Response(
                    json.dumps({"error": "invalid_client",
                                "error_description": "AADSTS7000215: Invalid client secret."}),
                    401, content_type="application/json",
                )  # fmt: skip
            access = secrets.token_urlsafe(32)
            self.tokens[access] = form.get("scope", "")
            return ok({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                       "access_token": access})  # fmt: skip

        @app.get("/keys")
        def list_keys() -> Response:
            self.calls.append(("list", ""))
            value = [
                {"kid": f"{self.url}/keys/{name}", "attributes": self._bundle(v[-1])["attributes"]}
                for name, v in self.keys.items()
            ]
            return ok({"value": value, "nextLink": None})

        @app.get("/keys/<name>")
        @app.get("/keys/<name>/")  # the SDK's "latest version": an empty version segment
        @app.get("/keys/<name>/<version>")
        def get_key(name: str, version: str | None = None) -> Response:
            if version == "versions":
                versions = self.keys.get(name) or []
                return ok({"value": [{"kid": self._bundle(k)["key"]["kid"],
                                      "attributes": self._bundle(k)["attributes"]}
                                     for k in versions], "nextLink": None})  # fmt: skip
            self.calls.append(("get", name))
            key = find(name, version)
            if key is None:
                return error(404, "KeyNotFound", f"A key with (name/id) {name} was not found in"
                                                 " this key vault.")  # fmt: skip
            return ok(self._bundle(key))

        @app.post("/keys/<name>/create")
        def create_key(name: str) -> Response:
            self.calls.append(("create", name))
            body = request.get_json(force=True)
            kty = body.get("kty")
            if kty not in ("RSA", "RSA-HSM", "oct-HSM"):
                return error(400, "BadParameter", f"Key type {kty} is not supported here.")
            return ok(self._bundle(self.create(name, kty, body.get("key_ops"))))

        @app.patch("/keys/<name>/<version>")
        def update_key(name: str, version: str) -> Response:
            key = find(name, version)
            if key is None:
                return error(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not"
                                                 " found in this key vault.")  # fmt: skip
            body = request.get_json(force=True)
            if "key_ops" in body:
                key.key_ops = list(body["key_ops"])
            if "enabled" in (body.get("attributes") or {}):
                key.enabled = bool(body["attributes"]["enabled"])
            return ok(self._bundle(key))

        def crypto(name: str, version: str, operation: str) -> Response:
            self.calls.append((operation, name))
            key = find(name, version)
            if key is None:
                return error(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not"
                                                 " found in this key vault.")  # fmt: skip
            if not key.enabled:
                return error(403, "Forbidden", "Operation is not allowed on a disabled key.")
            if operation not in key.key_ops:
                return error(403, "Forbidden", f"Operation {operation} is not permitted on this"
                                               " key.")  # fmt: skip
            body = request.get_json(force=True)
            algorithm, value = body.get("alg"), _unb64url(str(body.get("value", "")))
            expected = "RSA-OAEP-256" if key.private is not None else "A256KW"
            if algorithm != expected:
                return error(400, "BadParameter", f"Invalid algorithm {algorithm} for key type"
                                                  f" {key.kty}.")  # fmt: skip
            try:
                result = _apply(key, operation, value)
            except (ValueError, InvalidUnwrap):
                return error(400, "BadParameter", "Error performing the operation.")
            return ok({"kid": f"{self.url}/keys/{name}/{version}", "value": _b64url(result)})

        @app.post("/keys/<name>/<version>/wrapkey")
        def wrap_key(name: str, version: str) -> Response:
            return crypto(name, version, "wrapKey")

        @app.post("/keys/<name>/<version>/unwrapkey")
        def unwrap_key(name: str, version: str) -> Response:
            return crypto(name, version, "unwrapKey")

        @app.errorhandler(404)
        @app.errorhandler(405)
        def unknown(_exc: Exception) -> Response:
            message = f"The request URI {request.path} is not a supported operation."
            return error(404 if request.method == "GET" else 400, "BadParameter", message)

        return app


def _apply(key: KeyVersion, operation: str, value: bytes) -> bytes:
    if key.private is not None:
        if operation == "wrapKey":
            return key.private.public_key().encrypt(value, _OAEP_256)
        return key.private.decrypt(value, _OAEP_256)
    if operation == "wrapKey":
        return aes_key_wrap(key.secret, value)
    return aes_key_unwrap(key.secret, value)


class VaultServer:
    """``vault`` served over HTTPS on 127.0.0.1; stopped and started again on the same port (an
    outage keeps every key: the state is the FakeKeyVault's)."""

    def __init__(self, vault: FakeKeyVault, certificate: Certificate) -> None:
        self.vault = vault
        self.certificate = certificate
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen (again) and serve in a thread."""
        self._server = make_server("127.0.0.1", self.port, self.vault.app(), threaded=True,
                                   request_handler=_QuietHandler,
                                   ssl_context=self.certificate.server_context())  # fmt: skip
        # A client that aborts its TLS handshake must not print a traceback.
        self._server.handle_error = lambda request, client_address: None
        self.port = self._server.server_port
        self.vault.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the port: connections are refused until start()."""
        if self._server is not None:
            self._server.shutdown()
            if self._thread is not None:
                self._thread.join()
            self._server.server_close()
            self._server = None


@contextmanager
def serve(vault: FakeKeyVault, certificate: Certificate) -> Iterator[VaultServer]:
    """Serve ``vault`` over HTTPS on 127.0.0.1 until the block ends."""
    server = VaultServer(vault, certificate)
    server.start()
    try:
        yield server
    finally:
        server.stop()
