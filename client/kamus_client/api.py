"""The client of the Kamus encryptor and decryptor APIs, shared by kamus-cli and kamus-init.

Each call is one request on a fresh connection (:mod:`kamus_client.transport`): kamus-init sends
one request per pod start, and kamus-cli few enough that connection reuse would not be felt.
Every non-200 answer becomes a :mod:`kamus_client.errors` error carrying the server's code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from kamus_client import transport
from kamus_client.errors import (
    ClientError,
    InputError,
    ServerRefusedError,
    ServerUnavailableError,
    TooManyRequestsError,
    UnexpectedResponseError,
)
from kamus_client.pinning import pin_check, tls_context
from kamus_client.terminal import escape_unsafe

TYPE_CHECKING = False  # not typing's: see kamus_client.transport
if TYPE_CHECKING:
    from typing import Any

ENCRYPT_PATH = "/api/v1/encrypt"
DECRYPT_PATH = "/api/v1/decrypt"
DECRYPT_BATCH_PATH = "/api/v1/decrypt/batch"
REWRAP_PATH = "/api/v1/rewrap"
SEALING_KEY_PATH = "/api/v1/sealing-key"
CIPHERTEXT_PREFIX = "kamus:"
# Statuses that say "try again later": a proxy or the service itself is briefly unavailable.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
_MAX_SERVER_MESSAGE = 300


def parse_base_url(url: str) -> str:
    """Return the Kamus base URL without trailing slashes; raise InputError unless http(s)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"the Kamus URL must be an http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise InputError(f"the Kamus URL must not have a query or fragment, got {url!r}")
    return url.strip().rstrip("/")


def is_insecure(url: str) -> bool:
    """Tell whether ``url`` sends data in clear text (plain http)."""
    return urlsplit(url).scheme == "http"


class KamusClient:
    """Calls the Kamus encrypt, decrypt, batch-decrypt and rewrap APIs.

    ``ca_bundle`` is a PEM file of the CAs to trust instead of the system's; ``cert_fingerprint``
    pins the server certificate instead of any CA validation. They exclude each other. The proxy
    comes from the environment (``environ``, default ``os.environ``) as described in
    :mod:`kamus_client.transport`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        user_agent: str,
        timeout: float,
        cert_fingerprint: str | None = None,
        ca_bundle: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._base_url = parse_base_url(base_url)
        self._origin = transport.Origin.of(self._base_url)
        self._path_prefix = urlsplit(self._base_url).path
        self._timeout = timeout
        self._user_agent = user_agent
        if cert_fingerprint is not None and ca_bundle is not None:
            raise InputError("a certificate pin and a CA bundle exclude each other; pass one")
        if cert_fingerprint is not None and is_insecure(self._base_url):
            raise InputError("--cert-fingerprint needs an https:// Kamus URL")
        if ca_bundle is not None and not ca_bundle.is_file():
            raise InputError(f"the CA bundle {ca_bundle} is not a readable file")
        self._check_peer = pin_check(cert_fingerprint) if cert_fingerprint is not None else None
        self._tls = (
            tls_context(ca_bundle=ca_bundle, pinned=cert_fingerprint is not None)
            if self._origin.scheme == "https"
            else None
        )
        self._proxy = transport.proxy_for(self._origin, environ)

    def __enter__(self) -> KamusClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: every request has its own connection (kept for callers' ``with``)."""

    def encrypt(self, data: str, *, namespace: str, service_account: str) -> str:
        """Return the ciphertext of ``data`` for the scope; raises a ClientError on failure."""
        body = {"data": data, "namespace": namespace, "service-account": service_account}
        response = self._post(ENCRYPT_PATH, body, headers={"Accept": "text/plain"})
        return _ciphertext_of(response, "encryptor")

    def decrypt(self, ciphertext: str, *, token: str) -> str:
        """Return the plaintext of one ciphertext, exactly as the decryptor sent it."""
        response = self._post(
            DECRYPT_PATH,
            {"data": ciphertext},
            headers={"Authorization": f"Bearer {token}", "Accept": "text/plain"},
        )
        try:
            return response.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnexpectedResponseError("the decryptor's answer is not UTF-8 text") from exc

    def rewrap(self, ciphertext: str, *, token: str) -> str:
        """Return ``ciphertext`` sealed again under the active key, for the same scope."""
        response = self._post(
            REWRAP_PATH,
            {"data": ciphertext},
            headers={"Authorization": f"Bearer {token}", "Accept": "text/plain"},
        )
        return _ciphertext_of(response, "decryptor")

    def decrypt_batch(
        self, items: Mapping[str, str], *, token: str, timeout: float | None = None
    ) -> dict[str, str]:
        """Return ``{name: plaintext}`` for every item, all or nothing; raises a ClientError."""
        response = self._post(
            DECRYPT_BATCH_PATH,
            {"items": dict(items)},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )
        try:
            body = json.loads(response.body)
        except ValueError as exc:
            raise UnexpectedResponseError("the decryptor's answer is not JSON") from exc
        plaintexts = body.get("items") if isinstance(body, dict) else None
        if (
            not isinstance(plaintexts, dict)
            or set(plaintexts) != set(items)
            or not all(isinstance(value, str) for value in plaintexts.values())
        ):
            raise UnexpectedResponseError(
                "the decryptor's answer does not hold one plaintext per requested item"
            )
        return {name: plaintexts[name] for name in items}

    def sealing_key(self) -> str:
        """The cluster's public sealing key line, as the encryptor publishes it."""
        response = self._post(SEALING_KEY_PATH, None, headers={"Accept": "text/plain"})
        try:
            text = response.body.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise UnexpectedResponseError("the encryptor's sealing key is not ASCII") from exc
        if not text.startswith("kamus-sealing-key:") or not text.isprintable():
            raise UnexpectedResponseError(
                "the answer is not a Kamus sealing key (is the URL the encryptor's?)"
            )
        return text

    def _post(
        self,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        headers: Mapping[str, str],
        timeout: float | None = None,
    ) -> transport.Response:
        # No body: a GET (the one read-only route a client uses).
        response = transport.post(
            self._origin,
            self._path_prefix + path,
            b"" if body is None else json.dumps(body).encode("utf-8"),
            {
                "User-Agent": self._user_agent,
                **({} if body is None else {"Content-Type": "application/json"}),
                "Accept-Encoding": "identity",
                **headers,
            },
            timeout=self._timeout if timeout is None else timeout,
            tls=self._tls,
            check_peer=self._check_peer,
            proxy=self._proxy,
            method="GET" if body is None else "POST",
        )
        if response.status != 200:
            raise error_for_response(response)
        return response


def _ciphertext_of(response: transport.Response, service: str) -> str:
    try:
        ciphertext = response.body.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise UnexpectedResponseError(f"the {service} returned a non-ASCII ciphertext") from exc
    # Printable ASCII only: it is printed, and no control character belongs in a ciphertext.
    if not ciphertext.startswith(CIPHERTEXT_PREFIX) or not ciphertext.isprintable():
        raise UnexpectedResponseError(
            f"the {service}'s answer is not a Kamus ciphertext (is the URL the {service}'s?)"
        )
    return ciphertext


def error_for_response(response: transport.Response) -> ClientError:
    """Translate a non-200 answer into a ClientError carrying the server's code and message."""
    status = response.status
    code, message = _error_body(response)
    described = f"{message} [{code}, HTTP {status}]" if code else f"{message} [HTTP {status}]"
    if status == 429:
        return TooManyRequestsError(
            f"the server refused the request: {described}",
            error_code=code,
            retry_after=_retry_after(response),
        )
    if 400 <= status < 500:
        return ServerRefusedError(
            f"the server refused the request: {described}", status=status, error_code=code
        )
    if status >= 500:
        return ServerUnavailableError(
            f"the server could not answer: {described}",
            transient=status in TRANSIENT_STATUSES,
            status=status,
            retry_after=_retry_after(response),
        )
    return UnexpectedResponseError(f"unexpected answer from the server [HTTP {status}]")


def _error_body(response: transport.Response) -> tuple[str | None, str]:
    try:
        body = json.loads(response.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error")
        return (_shown(code) if isinstance(code, str) else None), _shown(body["message"])
    return None, response.reason or "no message"  # escaped by the transport


def _shown(text: str) -> str:
    # Server text lands on a terminal: kept short, with control, bidi and line-separator
    # characters escaped (as kamus-audit escapes audit records).
    return escape_unsafe(text.strip()[:_MAX_SERVER_MESSAGE])


def _retry_after(response: transport.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return seconds if seconds >= 0 else None
