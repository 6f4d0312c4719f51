"""The development token authority: a small stand-in of the Kubernetes API on 127.0.0.1.

It serves just enough of kube-apiserver for Kamus, answering as a real one does (see
docs/TESTING.md, "What a real API server does"), so the decryptor talks to it through the official
``kubernetes`` client:

    POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token   TokenRequest  201 / 400 / 404 / 422
    POST /apis/authentication.k8s.io/v1/tokenreviews         TokenReview   201, even for bad tokens
    POST /api/v1/namespaces/{ns}/pods, DELETE .../pods/{name}  pod objects  201 / 409, 200 / 404
    POST /api/v1/namespaces/{ns}/serviceaccounts, DELETE .../serviceaccounts/{name}  the same
    GET  /.well-known/openid-configuration, /openid/v1/jwks   OIDC discovery
    anything else                                            404 / 405 Status

Every route wants a bearer token: the admin token may do everything; a service-account token of
this authority may only read the OIDC documents (``system:service-account-issuer-discovery``).
Every service account with a valid name exists until it is deleted; a pod exists only once
created (``POST .../pods``, :meth:`TokenAuthority.create_pod`), as TokenRequest binds tokens to
existing pods only. Created again, either gets a new UID, which the tokens of its previous life do
not carry.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import flask
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from kamus_dev.tokens import BoundPod, TokenSigner, generate_signing_key
from kamus_kms.errors import InvalidScopeError
from kamus_kms.scope import Scope

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600
_MAX_EXPIRATION_SECONDS = 2**32
# kube-apiserver caches successful token reviews for about 10 s (docs/TESTING.md).
REVIEW_CACHE_SECONDS = 10.0
_REVIEW_CACHE_ENTRIES = 10_000
_GROUP = "authentication.k8s.io"
_VERSION = f"{_GROUP}/v1"
_ANONYMOUS = "system:anonymous"
_ADMIN = "kamus-dev-admin"

Fault = Literal["error500"] | tuple[Literal["slow"], float] | None


class ManualClock:
    """A clock that moves only when told to, for tests of expiry."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


class TokenAuthority:
    """The signing key, issuer and service accounts of one development cluster.

    ``clock`` returns unix time and drives issuing and expiry; ``leeway`` is the clock skew
    tolerated on ``exp``/``nbf``/``iat`` (kube-apiserver allows 60 s; the default 0 keeps test
    boundaries exact). ``fault`` makes TokenReview fail on purpose: ``"error500"`` answers 500,
    ``("slow", seconds)`` sleeps first. ``kubernetes_version`` shapes the tokens: from (1, 29)
    they carry a ``jti``, which reviews report as the credential id.
    """

    def __init__(
        self,
        *,
        signing_key: rsa.RSAPrivateKey | None = None,
        issuer: str = DEFAULT_ISSUER,
        audiences: Sequence[str] | None = None,
        admin_token: str | None = None,
        clock: Callable[[], float] = time.time,
        leeway: float = 0.0,
        review_cache_seconds: float = REVIEW_CACHE_SECONDS,
        kubernetes_version: tuple[int, int] = (1, 29),
    ) -> None:
        self.signing_key = signing_key or generate_signing_key()
        self._signer = TokenSigner(self.signing_key, issuer)
        self.issuer = issuer
        self.kid = self._signer.kid
        self.audiences: tuple[str, ...] = tuple(audiences) if audiences else (issuer,)
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self.clock = clock
        self.leeway = leeway
        # 1.29 and later give each token a `jti` (and reviews its credential id); 1.28 does not.
        self.token_ids = kubernetes_version >= (1, 29)
        self.fault: Fault = None
        # Derived from the key so that processes sharing a key agree on every UID.
        self._uid_namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"{issuer}#{self.kid}")
        self._lock = threading.Lock()
        self._calls = {"tokenreview": 0, "tokenrequest": 0}
        self._generations: dict[tuple[str, str], int] = {}
        self._pod_generations: dict[tuple[str, str], int] = {}  # bumped at each deletion
        self._deleted_service_accounts: set[tuple[str, str]] = set()
        self._pods: set[tuple[str, str]] = set()  # pods exist only once created, as in a cluster
        # Cleared by hung(): every route then waits, as a stopped API server process does.
        self._answering = threading.Event()
        self._answering.set()
        # kube-apiserver keeps successful token authentications for ~10 s (failures not at
        # all): a deleted pod's or service account's token still passes meanwhile.
        self.review_cache_seconds = review_cache_seconds
        self._reviewed: dict[tuple[str, tuple[str, ...]], tuple[float, dict[str, Any]]] = {}

    @property
    def tokenreview_calls(self) -> int:
        """How many requests reached the TokenReview route."""
        return self._calls["tokenreview"]

    @property
    def tokenrequest_calls(self) -> int:
        """How many requests reached the TokenRequest route."""
        return self._calls["tokenrequest"]

    def count(self, route: Literal["tokenreview", "tokenrequest"]) -> None:
        """Count one request to ``route``."""
        with self._lock:
            self._calls[route] += 1

    def service_account_uid(self, namespace: str, service_account: str) -> str:
        """The UID of the service account; stable until it is deleted and created again."""
        with self._lock:
            generation = self._generations.get((namespace, service_account), 0)
        return str(
            uuid.uuid5(self._uid_namespace, f"sa/{namespace}/{service_account}/{generation}")
        )

    def pod_uid(self, namespace: str, pod: str) -> str:
        """The UID of the pod; stable until it is deleted and created again."""
        with self._lock:
            generation = self._pod_generations.get((namespace, pod), 0)
        return str(uuid.uuid5(self._uid_namespace, f"pod/{namespace}/{pod}/{generation}"))

    def service_account_exists(self, namespace: str, service_account: str) -> bool:
        """False once the service account was deleted (and not created again)."""
        with self._lock:
            return (namespace, service_account) not in self._deleted_service_accounts

    def pod_exists(self, namespace: str, pod: str) -> bool:
        """True from the pod's creation to its deletion."""
        with self._lock:
            return (namespace, pod) in self._pods

    def delete_service_account(self, namespace: str, service_account: str) -> None:
        """Delete a service account: its tokens stop passing TokenReview."""
        with self._lock:
            self._deleted_service_accounts.add((namespace, service_account))

    def create_service_account(self, namespace: str, service_account: str) -> None:
        """Create a deleted service account again, with a new UID that old tokens do not carry."""
        key = (namespace, service_account)
        with self._lock:
            if key in self._deleted_service_accounts:
                self._deleted_service_accounts.discard(key)
                self._generations[key] = self._generations.get(key, 0) + 1

    def delete_pod(self, namespace: str, pod: str) -> bool:
        """Delete a pod (False: there was none): tokens bound to it stop passing TokenReview,
        and a pod created again under its name gets a new UID."""
        key = (namespace, pod)
        with self._lock:
            if key not in self._pods:
                return False
            self._pods.discard(key)
            self._pod_generations[key] = self._pod_generations.get(key, 0) + 1
            return True

    def create_pod(self, namespace: str, pod: str) -> str | None:
        """Create a pod object (nothing runs it); its UID, or None when it exists already."""
        with self._lock:
            if (namespace, pod) in self._pods:
                return None
            self._pods.add((namespace, pod))
        return self.pod_uid(namespace, pod)

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        """Every request waits, unanswered, until the block ends (an API server that hangs)."""
        self._answering.clear()
        try:
            yield
        finally:
            self._answering.set()

    def wait_until_answering(self) -> None:
        """Return at once, or when a :meth:`hung` block ends."""
        self._answering.wait()

    def issue_token(
        self,
        namespace: str,
        service_account: str,
        audiences: Sequence[str] = (),
        expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS,
        pod: BoundPod | None = None,
    ) -> tuple[str, int]:
        """A token and its expiry (unix time), as TokenRequest makes them, without HTTP."""
        now = int(self.clock())
        expires_at = now + expiration_seconds
        token = self._signer.sign(
            namespace=namespace,
            service_account=service_account,
            service_account_uid=self.service_account_uid(namespace, service_account),
            audiences=list(audiences) or list(self.audiences),
            issued_at=now,
            expires_at=expires_at,
            pod=pod,
            jti=self.token_ids,
        )
        return token, expires_at

    def review(self, token: str, audiences: Sequence[str] = ()) -> dict[str, Any]:
        """The ``status`` kube-apiserver gives a TokenReview of ``token`` for ``audiences``.

        Like kube-apiserver, a success is answered again from a cache for
        ``review_cache_seconds`` (never past the token's expiry), whatever was deleted meanwhile.
        """
        targets = list(audiences) or list(self.audiences)
        key = (token, tuple(targets))
        now = self.clock()
        with self._lock:
            cached = self._reviewed.get(key)
        if cached is not None and now < cached[0]:
            return copy.deepcopy(cached[1])
        status = self._review(token, targets)
        if status.get("authenticated") and self.review_cache_seconds > 0:
            claims = self._signer.verify(token)
            assert claims is not None
            until = min(now + self.review_cache_seconds, claims.expires_at + self.leeway)
            with self._lock:
                if len(self._reviewed) >= _REVIEW_CACHE_ENTRIES:
                    self._reviewed = {k: v for k, v in self._reviewed.items() if now < v[0]}
                self._reviewed[key] = (until, copy.deepcopy(status))
        return status

    def _review(self, token: str, targets: list[str]) -> dict[str, Any]:
        claims = self._signer.verify(token)
        if claims is None:
            return {"user": {}, "error": "invalid bearer token"}
        matched = [audience for audience in claims.audiences if audience in targets]
        if not matched:
            return _denied(
                f"token audiences {_go_quote(claims.audiences)} is invalid for the target "
                f"audiences {_go_quote(targets)}"
            )
        # The same checks and order as go-jose's Claims.ValidateWithLeeway.
        now = self.clock()
        if now + self.leeway < claims.not_before:
            return _denied("service account token is not valid yet")
        if now - self.leeway > claims.expires_at:
            return _denied("service account token has expired")
        if now + self.leeway < claims.issued_at:
            return _denied("service account token is issued in the future")
        if not self.service_account_exists(claims.namespace, claims.service_account):
            return _denied(f'serviceaccounts "{claims.service_account}" not found')
        uid = self.service_account_uid(claims.namespace, claims.service_account)
        if uid != claims.service_account_uid:
            return _denied(
                f"service account UID ({uid}) does not match claim ({claims.service_account_uid})"
            )
        extra: dict[str, list[str]] = {}
        if claims.pod is not None:
            if not self.pod_exists(claims.namespace, claims.pod.name):
                return _denied("service account token has been invalidated")
            pod_uid = self.pod_uid(claims.namespace, claims.pod.name)
            if pod_uid != claims.pod.uid:
                return _denied(
                    f"pod UID ({pod_uid}) does not match service account pod ref claim "
                    f"({claims.pod.uid})"
                )
            extra["authentication.kubernetes.io/pod-name"] = [claims.pod.name]
            extra["authentication.kubernetes.io/pod-uid"] = [claims.pod.uid]
        if claims.jti is not None:
            extra["authentication.kubernetes.io/credential-id"] = [f"JTI={claims.jti}"]
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{claims.namespace}"]
        return {
            "authenticated": True,
            "user": {
                "username": claims.username,
                "uid": uid,
                "groups": [*groups, "system:authenticated"],
                "extra": extra,
            },
            "audiences": matched,
        }

    def caller(self, authorization: str | None) -> str | None:
        """The user an ``Authorization`` header authenticates, ``system:anonymous`` without one.

        None when the header is there but authenticates nobody (kube-apiserver answers 401).
        """
        if authorization is None:
            return _ANONYMOUS
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        if secrets.compare_digest(credential.encode(), self.admin_token.encode()):
            return _ADMIN
        status = self.review(credential)
        return str(status["user"]["username"]) if status.get("authenticated") else None

    def openid_configuration(self, base_url: str) -> dict[str, Any]:
        """The OIDC discovery document, with the JWKS under ``base_url``."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{base_url.rstrip('/')}/openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set kube-apiserver serves at ``/openid/v1/jwks``."""
        return {"keys": [self._signer.jwk()]}


def _denied(reason: str) -> dict[str, Any]:
    return {"user": {}, "error": f"[invalid bearer token, {reason}]"}


def _go_quote(values: Sequence[str]) -> str:
    """Go's ``%q`` of a string slice, which Kubernetes uses in its audience error."""
    return "[" + " ".join(json.dumps(value, ensure_ascii=False) for value in values) + "]"


def create_authority_app(authority: TokenAuthority) -> flask.Flask:
    """The Flask app serving ``authority`` as kube-apiserver would."""
    app = flask.Flask(__name__)

    @app.post("/api/v1/namespaces/<namespace>/serviceaccounts/<name>/token")
    def token_request(namespace: str, name: str) -> tuple[flask.Response, int]:
        authority.count("tokenrequest")
        _authorize(
            authority,
            f'serviceaccounts "{name}" is forbidden: User "{{user}}" cannot create resource '
            f'"serviceaccounts/token" in API group "" in the namespace "{namespace}"',
            admin_only=True,
        )
        return flask.jsonify(_token_request(authority, namespace, name)), 201

    @app.post("/apis/authentication.k8s.io/v1/tokenreviews")
    def token_review() -> tuple[flask.Response, int]:
        authority.count("tokenreview")
        _authorize(
            authority,
            f'tokenreviews.{_GROUP} is forbidden: User "{{user}}" cannot create resource '
            f'"tokenreviews" in API group "{_GROUP}" at the cluster scope',
            admin_only=True,
        )
        fault = authority.fault
        if fault == "error500":
            _abort(500, "InternalError", "Internal error occurred: injected fault")
        if isinstance(fault, tuple):
            time.sleep(fault[1])
        return flask.jsonify(_token_review(authority)), 201

    @app.post("/api/v1/namespaces/<namespace>/pods")
    def create_pod(namespace: str) -> tuple[flask.Response, int]:
        _authorize(authority, _FORBIDDEN_OBJECTS.format(kind="pods", ns=namespace), admin_only=True)
        name = _object_name("Pod")
        uid = authority.create_pod(namespace, name)
        if uid is None:
            _abort(409, "AlreadyExists", f'pods "{name}" already exists', name, "pods")
        return flask.jsonify(_object("Pod", namespace, name, uid)), 201

    @app.delete("/api/v1/namespaces/<namespace>/pods/<name>")
    def delete_pod(namespace: str, name: str) -> flask.Response:
        _authorize(authority, _FORBIDDEN_OBJECTS.format(kind="pods", ns=namespace), admin_only=True)
        uid = authority.pod_uid(namespace, name)
        if not authority.delete_pod(namespace, name):
            _abort(404, "NotFound", f'pods "{name}" not found', name, "pods")
        return flask.jsonify(_object("Pod", namespace, name, uid))

    @app.post("/api/v1/namespaces/<namespace>/serviceaccounts")
    def create_service_account(namespace: str) -> tuple[flask.Response, int]:
        forbidden = _FORBIDDEN_OBJECTS.format(kind="serviceaccounts", ns=namespace)
        _authorize(authority, forbidden, admin_only=True)
        name = _object_name("ServiceAccount")
        if authority.service_account_exists(namespace, name):
            _abort(409, "AlreadyExists", f'serviceaccounts "{name}" already exists', name,
                   "serviceaccounts")  # fmt: skip
        authority.create_service_account(namespace, name)
        uid = authority.service_account_uid(namespace, name)
        return flask.jsonify(_object("ServiceAccount", namespace, name, uid)), 201

    @app.delete("/api/v1/namespaces/<namespace>/serviceaccounts/<name>")
    def delete_service_account(namespace: str, name: str) -> flask.Response:
        forbidden = _FORBIDDEN_OBJECTS.format(kind="serviceaccounts", ns=namespace)
        _authorize(authority, forbidden, admin_only=True)
        if not authority.service_account_exists(namespace, name):
            _abort(404, "NotFound", f'serviceaccounts "{name}" not found', name,
                   "serviceaccounts")  # fmt: skip
        uid = authority.service_account_uid(namespace, name)
        authority.delete_service_account(namespace, name)
        return flask.jsonify(_object("ServiceAccount", namespace, name, uid))

    @app.get("/.well-known/openid-configuration")
    def openid_configuration() -> flask.Response:
        _authorize(authority, _PATH_FORBIDDEN.format(path=flask.request.path), admin_only=False)
        _negotiate("application/json")
        return flask.jsonify(authority.openid_configuration(flask.request.host_url))

    @app.get("/openid/v1/jwks")
    def jwks() -> flask.Response:
        _authorize(authority, _PATH_FORBIDDEN.format(path=flask.request.path), admin_only=False)
        _negotiate(JWKS_CONTENT_TYPE)
        response = flask.jsonify(authority.jwks())
        response.mimetype = JWKS_CONTENT_TYPE
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        code = exc.code or 500
        reason, message = _HTTP_ERRORS.get(code, (exc.name.replace(" ", ""), exc.name))
        return _status(code, reason, message)

    return app


_PATH_FORBIDDEN = 'forbidden: User "{{user}}" cannot get path "{path}"'
_FORBIDDEN_OBJECTS = (
    '{kind} is forbidden: User "{{user}}" cannot change resource "{kind}" in API group "" in the '
    'namespace "{ns}"'
)


def _object_name(kind: str) -> str:
    """``metadata.name`` of the ``kind`` object in the request body (or a 400/422)."""
    try:
        body = json.loads(flask.request.get_data() or b"{}")
    except ValueError as exc:
        _undecodable(kind, str(exc))
    name = body.get("metadata", {}).get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        _abort(
            422, "Invalid", f"{kind} is invalid: metadata.name: Required value: name is required"
        )
    return name


def _object(kind: str, namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "uid": uid}}  # fmt: skip


JWKS_CONTENT_TYPE = "application/jwk-set+json"


def _negotiate(served: str) -> None:
    """406 unless the request's ``Accept`` admits ``served``, the only type the route serves.

    kube-apiserver is strict here: the key set is served only as ``application/jwk-set+json``,
    so ``Accept: application/json`` gets 406 (docs/TESTING.md, "What a real API server does").
    """
    accept = flask.request.headers.get("Accept", "").strip()
    kind = served.split("/", 1)[0]
    ranges = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if not accept or ranges & {served, f"{kind}/*", "*/*"}:
        return
    flask.abort(_status(
        406, "NotAcceptable", f"406: Not Acceptable\n\nAvailable representations: {served}", {}
    ))  # fmt: skip


_HTTP_ERRORS = {
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
}


def _token_request(authority: TokenAuthority, namespace: str, name: str) -> dict[str, Any]:
    try:
        Scope(namespace, name)
    except InvalidScopeError:
        _abort(404, "NotFound", f'serviceaccounts "{name}" not found', name, "serviceaccounts")
    if not authority.service_account_exists(namespace, name):
        _abort(404, "NotFound", f'serviceaccounts "{name}" not found', name, "serviceaccounts")
    spec = _spec("TokenRequest")
    audiences = _strings(spec.get("audiences"), "spec.audiences", "TokenRequest")
    seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        _undecodable("TokenRequest", "spec.expirationSeconds must be an integer")
    if seconds < MIN_EXPIRATION_SECONDS:
        _invalid(name, seconds, "may not specify a duration less than 10 minutes")
    if seconds > _MAX_EXPIRATION_SECONDS:
        _invalid(name, seconds, "may not specify a duration larger than 2^32 seconds")
    pod = None
    reference = spec.get("boundObjectRef")
    if reference is not None:
        kind = reference.get("kind") if isinstance(reference, dict) else None
        if kind != "Pod" or reference.get("apiVersion", "v1") != "v1":
            _abort(400, "BadRequest", f"cannot bind token to object of type /v1, Kind={kind}")
        pod_name = reference.get("name")
        if not isinstance(pod_name, str) or not authority.pod_exists(namespace, pod_name):
            _abort(404, "NotFound", f'pods "{pod_name}" not found', str(pod_name), "pods")
        pod = BoundPod(pod_name, authority.pod_uid(namespace, pod_name))
        if reference.get("uid") and reference["uid"] != pod.uid:
            _abort(
                409, "Conflict",
                f'Operation cannot be fulfilled on Pod "{pod_name}": the UID in the bound object '
                f"reference ({reference['uid']}) does not match the UID in record. The object "
                "might have been deleted and then recreated",
                pod_name, "Pod",
            )  # fmt: skip
        spec["boundObjectRef"] = {**reference, "apiVersion": "v1", "uid": pod.uid}
    audiences = audiences or list(authority.audiences)
    token, expires_at = authority.issue_token(namespace, name, audiences, seconds, pod)
    spec.update(audiences=audiences, expirationSeconds=seconds)
    return {
        "kind": "TokenRequest",
        "apiVersion": _VERSION,
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
        "spec": spec,
        "status": {
            "token": token,
            "expirationTimestamp": datetime.fromtimestamp(expires_at, tz=UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        },
    }


def _token_review(authority: TokenAuthority) -> dict[str, Any]:
    spec = _spec("TokenReview")
    token = spec.get("token") or ""
    audiences = _strings(spec.get("audiences"), "spec.audiences", "TokenReview")
    if not isinstance(token, str):
        _undecodable("TokenReview", "spec.token must be a string")
    if not token:
        _abort(400, "BadRequest", "token is required for TokenReview in authentication")
    return {
        "kind": "TokenReview",
        "apiVersion": _VERSION,
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": authority.review(token, audiences),
    }


def _authorize(authority: TokenAuthority, forbidden: str, *, admin_only: bool) -> None:
    """Answer 401/403 unless the caller may use the route; ``forbidden`` has a ``{user}`` slot."""
    authority.wait_until_answering()
    user = authority.caller(flask.request.headers.get("Authorization"))
    if user is None:
        _abort(401, "Unauthorized", "Unauthorized")
    if user == _ANONYMOUS or (admin_only and user != _ADMIN):
        _abort(403, "Forbidden", forbidden.format(user=user))


def _spec(kind: str) -> dict[str, Any]:
    """The ``spec`` of the request body, which must be a ``kind`` object (or a 400)."""
    try:
        body = json.loads(flask.request.get_data() or b"{}")
    except ValueError as exc:
        _undecodable(kind, str(exc))
    if not isinstance(body, dict):
        _undecodable(kind, f"expected a {kind} object")
    if body.get("kind", kind) != kind or body.get("apiVersion", _VERSION) != _VERSION:
        _undecodable(kind, f"expected {_VERSION} {kind}")
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        _undecodable(kind, "spec must be an object")
    return dict(spec)


def _strings(value: object, field: str, kind: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        _undecodable(kind, f"{field} must be a list of strings")
    return value


def _undecodable(kind: str, problem: str) -> NoReturn:
    _abort(400, "BadRequest", f'{kind} in version "v1" cannot be handled as a {kind}: {problem}')


def _invalid(name: str, seconds: int, problem: str) -> NoReturn:
    field, cause = "spec.expirationSeconds", f"Invalid value: {seconds}: {problem}"
    causes = [{"reason": "FieldValueInvalid", "message": cause, "field": field}]
    details = {"name": name, "group": _GROUP, "kind": "TokenRequest", "causes": causes}
    message = f'TokenRequest.{_GROUP} "{name}" is invalid: {field}: {cause}'
    flask.abort(_status(422, "Invalid", message, details))


def _abort(code: int, reason: str, message: str, name: str = "", kind: str = "") -> NoReturn:
    details = {"name": name, "kind": kind} if kind else None
    flask.abort(_status(code, reason, message, details))


def _status(code: int, reason: str, message: str, details: Any = None) -> flask.Response:
    """A ``Status`` object, the body of every kube-apiserver failure."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    body |= {"message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    response = flask.jsonify(body | {"code": code})
    response.status_code = code
    return response


@contextlib.contextmanager
def serve_in_thread(app: WSGIApplication, port: int = 0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at ``port`` (0: any free one); yields the URL, stops on exit."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    # A short poll interval makes shutdown quick; the default 0.5 s adds up over a test suite.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="serve-in-thread"
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
