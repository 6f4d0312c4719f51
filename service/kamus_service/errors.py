"""The one place where Kamus errors become HTTP responses, and the errors only HTTP raises.

The core tree is in ``kamus_kms.errors``; the services add these request errors to it::

    RequestError (kamus_kms.errors)
    ├── NotFoundError                   the resource is not configured here             404
    ├── UnsupportedMediaTypeError       body is not JSON                                415
    ├── RateLimitedError                too many failed attempts from a source or token 429
    ├── AuthenticationError             token missing, invalid, wrong audience          401
    └── ForbiddenError (kamus_kms.errors)
        ├── NotServiceAccountError      the token is not a service account's            403
        └── DefaultServiceAccountForbiddenError  decrypting as `default`                403

Every response an error produces is JSON ``{"error": code, "message": sentence}``. Anything that is
not a KamusError or a routing error is a bug: it is logged with its traceback (never with request
data) and answered 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from kamus_kms.errors import (
    ForbiddenError,
    KamusError,
    PayloadTooLargeError,
    RequestError,
    UnavailableError,
)

log = logging.getLogger("kamus.errors")


class NotFoundError(RequestError):
    """What the request asks for is not configured on this service."""

    code = "not_found"


class UnsupportedMediaTypeError(RequestError):
    """The request body is not JSON."""

    code = "unsupported_media_type"


class RateLimitedError(RequestError):
    """Too many failed attempts from this source or with this token; retry later."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 60) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class AuthenticationError(RequestError):
    """The bearer token is missing, invalid, expired or for another audience."""

    code = "unauthorized"


class NotServiceAccountError(ForbiddenError):
    """The token belongs to a user or node, not a service account."""

    code = "not_service_account"


class DefaultServiceAccountForbiddenError(ForbiddenError):
    """The caller runs as the `default` service account, which operators have not allowed."""

    code = "default_service_account"


# Most specific class first; a subclass inherits its parent's status.
_STATUS: tuple[tuple[type[KamusError], int], ...] = (
    (NotFoundError, 404),
    (AuthenticationError, 401),
    (ForbiddenError, 403),
    (PayloadTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (RateLimitedError, 429),
    (RequestError, 400),
    (UnavailableError, 503),
)

_UNAVAILABLE = {
    "unavailable": "a service Kamus depends on (token verification or the key provider) is "
    "unavailable; retry later",
    "audit_unavailable": "the audit trail cannot be written, so nothing is decrypted; retry later",
}

_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def status_for(error: KamusError) -> int:
    """The HTTP status of a Kamus error; 500 for anything unexpected."""
    return next((status for cls, status in _STATUS if isinstance(error, cls)), 500)


def error_response(status: int, code: str, message: str) -> Response:
    """A JSON error response."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    return response


def _kamus_error(error: KamusError) -> Response:
    status = status_for(error)
    if status == 500:
        log.error("unexpected error", exc_info=error)
        return error_response(500, "internal_error", "internal error; this is a bug in Kamus")
    message = str(error)
    if isinstance(error, UnavailableError):
        # The detail (KMS key names, addresses, the missing permission) is for operators: it goes
        # to the log, and callers, who may be anonymous, get a fixed sentence.
        log.warning("dependency unavailable", extra={"code": error.code, "detail": message})
        message = _UNAVAILABLE.get(error.code, _UNAVAILABLE["unavailable"])
    response = error_response(status, error.code, message)
    if isinstance(error, UnavailableError | RateLimitedError):
        response.headers["Retry-After"] = str(error.retry_after)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="kamus"'
    return response


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    message = {
        404: "no such route",
        405: "method not allowed on this route",
        413: "the request body is too large",
    }.get(status, error.description or "bad request")
    response = error_response(status, code, message)
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def _unexpected(error: Exception) -> Response:
    log.error("unexpected error", exc_info=error)
    return error_response(500, "internal_error", "internal error; this is a bug in Kamus")


def register_error_handlers(app: Flask) -> None:
    """Map every error to its JSON response."""
    app.register_error_handler(KamusError, _kamus_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
