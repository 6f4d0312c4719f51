"""A small HTTP client of the Kamus encryptor and decryptor, shared by kamus-cli and kamus-init.

Every ``requests`` error is translated here into :mod:`kamus_cli.errors`; callers never see a
``requests`` exception.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import MaxRetryError

from kamus_cli.errors import (
    ClientError,
    InputError,
    RateLimitedError,
    ServerRefusedError,
    ServerUnavailableError,
    TLSError,
    UnexpectedResponseError,
)
from kamus_cli.pinning import FingerprintAdapter

ENCRYPT_PATH = "/api/v1/encrypt"
DECRYPT_PATH = "/api/v1/decrypt"
DECRYPT_BATCH_PATH = "/api/v1/decrypt/batch"
REWRAP_PATH = "/api/v1/rewrap"
CIPHERTEXT_PREFIX = "kamus:"
# Statuses that say "try again later": a proxy or the service itself is briefly unavailable.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
_MAX_SERVER_MESSAGE = 300


def package_version() -> str:
    """Return the installed version of the ``kamus`` distribution, or ``0+unknown``."""
    try:
        return importlib.metadata.version("kamus")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def user_agent(program: str) -> str:
    """Return the User-Agent of ``program`` (``kamus-cli`` or ``kamus-init``), as Kamus sends it."""
    return f"{program}-{package_version()}"


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
    """Calls the Kamus encrypt, decrypt, batch-decrypt and rewrap APIs over one pooled session.

    ``ca_bundle`` is a PEM file of the CAs to trust instead of the system's; ``cert_fingerprint``
    pins the server certificate instead of any CA validation. They exclude each other.
    """

    def __init__(
        self,
        base_url: str,
        *,
        user_agent: str,
        timeout: float,
        cert_fingerprint: str | None = None,
        ca_bundle: Path | None = None,
    ) -> None:
        self._base_url = parse_base_url(base_url)
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = user_agent
        if cert_fingerprint is not None and ca_bundle is not None:
            raise InputError("a certificate pin and a CA bundle exclude each other; pass one")
        if cert_fingerprint is not None:
            if is_insecure(self._base_url):
                raise InputError("--cert-fingerprint needs an https:// Kamus URL")
            self._session.mount("https://", FingerprintAdapter(cert_fingerprint))
        if ca_bundle is not None and not ca_bundle.is_file():
            raise InputError(f"the CA bundle {ca_bundle} is not a readable file")
        # Passed with every request: requests lets $REQUESTS_CA_BUNDLE override session.verify.
        self._verify: str | None = str(ca_bundle) if ca_bundle is not None else None

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
        """Release pooled connections."""
        self._session.close()

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
            return response.content.decode("utf-8")
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
            body = response.json()
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

    def _post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str],
        timeout: float | None = None,
    ) -> requests.Response:
        url = self._base_url + path
        try:
            # Never follow redirects: a redirect could carry the secret or token to another host.
            response = self._session.post(
                url,
                json=body,
                headers=dict(headers),
                timeout=self._timeout if timeout is None else timeout,
                allow_redirects=False,
                verify=self._verify,
            )
        except requests.exceptions.SSLError as exc:
            raise TLSError(f"TLS with {self._base_url} failed: {_reason(exc)}") from exc
        except requests.exceptions.Timeout as exc:
            raise ServerUnavailableError(
                f"{self._base_url} did not answer in time", transient=True
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise ServerUnavailableError(
                f"cannot connect to {self._base_url}: {_reason(exc)}", transient=True
            ) from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise InputError(f"the Kamus URL {self._base_url!r} is not usable") from exc
        except requests.exceptions.RequestException as exc:
            raise ServerUnavailableError(
                f"the request to {self._base_url} failed: {type(exc).__name__}", transient=False
            ) from exc
        if response.status_code != 200:
            raise error_for_response(response)
        return response


def _ciphertext_of(response: requests.Response, service: str) -> str:
    try:
        ciphertext = response.content.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise UnexpectedResponseError(f"the {service} returned a non-ASCII ciphertext") from exc
    if not ciphertext.startswith(CIPHERTEXT_PREFIX) or "\n" in ciphertext:
        raise UnexpectedResponseError(
            f"the {service}'s answer is not a Kamus ciphertext (is the URL the {service}'s?)"
        )
    return ciphertext


def error_for_response(response: requests.Response) -> ClientError:
    """Translate a non-200 answer into a ClientError carrying the server's code and message."""
    status = response.status_code
    code, message = _error_body(response)
    described = f"{message} [{code}, HTTP {status}]" if code else f"{message} [HTTP {status}]"
    if status == 429:
        return RateLimitedError(
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


def _error_body(response: requests.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error")
        return (_printable(code) if isinstance(code, str) else None), _printable(body["message"])
    return None, response.reason or "no message"


def _printable(text: str) -> str:
    # Server text lands on a terminal: drop control characters, keep it short.
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:_MAX_SERVER_MESSAGE]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return seconds if seconds >= 0 else None


def _reason(exc: requests.exceptions.RequestException) -> str:
    # requests wraps urllib3's MaxRetryError, whose reason is the short, useful part.
    inner: object = exc.args[0] if exc.args else exc
    if isinstance(inner, MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    return _printable(str(inner)) or type(exc).__name__
