"""Reading Kamus request bodies: JSON objects with string fields, whatever the transfer encoding."""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from kamus_kms.errors import InvalidRequestError, PayloadTooLargeError
from kamus_service.errors import UnsupportedMediaTypeError


def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; 415 when not declared JSON, 400 when not a JSON object.

    Reads the server's input directly, so chunked bodies work and MAX_CONTENT_LENGTH applies to
    them too (413).
    """
    if not _declares_json(request.environ.get("CONTENT_TYPE", "")):
        raise UnsupportedMediaTypeError("send the body as JSON with Content-Type: application/json")
    raw = _read_body(request)
    if not raw.strip():
        raise InvalidRequestError("the request body is empty; expected a JSON object")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError("the request body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return document


def _declares_json(content_type: str) -> bool:
    # What werkzeug's `is_json` accepts: application/json and application/*+json, any parameters.
    mimetype = content_type.partition(";")[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _read_body(request: Request) -> bytes:
    limit = request.max_content_length
    too_large = PayloadTooLargeError(f"the request body is larger than {limit} bytes")
    environ = request.environ
    declared = environ.get("CONTENT_LENGTH", "")
    if declared.isdigit() and declared.isascii():
        length = int(declared)
        if limit is not None and length > limit:
            raise too_large
        # The server's input stops at the declared length (gunicorn and werkzeug both bound it).
        return _read(environ["wsgi.input"], length) if length else b""
    if declared:
        raise InvalidRequestError("the Content-Length header is not a number")
    # No length: a chunked body, which the server de-chunks. Read one byte more than the limit
    # to tell "exactly the limit" from "too large" (a plain read would be cut at the limit).
    if not environ.get("wsgi.input_terminated"):
        return b""
    raw = _read(environ["wsgi.input"], limit + 1 if limit is not None else -1)
    if limit is not None and len(raw) > limit:
        raise too_large
    return raw


def _read(stream: Any, size: int) -> bytes:
    """Up to ``size`` bytes of the body (-1: all); 400 when the client's framing is broken."""
    try:
        raw: bytes = stream.read(size)
    # The server de-chunks while we read, and raises its own parser errors for a bad chunk size,
    # a missing terminator, a bad trailer or a body cut short (gunicorn: ParseException and
    # NoMoreData; werkzeug: ClientDisconnected): all the client's doing, none a server fault.
    except Exception as exc:
        raise InvalidRequestError(
            "the request body is malformed (bad chunked encoding or cut short)"
        ) from exc
    return raw


def require_text(document: dict[str, Any], field: str) -> str:
    """A required string field that encodes to UTF-8 (lone surrogates are refused)."""
    value = document.get(field)
    if value is None:
        raise InvalidRequestError(f'the field "{field}" is required')
    if not isinstance(value, str):
        raise InvalidRequestError(f'the field "{field}" must be a string')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(f'the field "{field}" is not valid Unicode text') from exc
    return value
