"""Reading Kamus request bodies: JSON objects with string fields, whatever the transfer encoding."""

from __future__ import annotations

import json
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from kamus_kms.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError


def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; 415 when not declared JSON, 400 when not a JSON object.

    Reads through werkzeug's limited stream, so chunked bodies work and MAX_CONTENT_LENGTH applies
    to them too (413).
    """
    if not request.is_json:
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


def _read_body(request: Request) -> bytes:
    limit = request.max_content_length
    too_large = PayloadTooLargeError(f"the request body is larger than {limit} bytes")
    if request.content_length is None and limit is not None:
        # Chunked body: werkzeug would silently cut it at the limit, so read one byte more from
        # the server's (already de-chunked) input to tell "exactly the limit" from "too large".
        if not request.environ.get("wsgi.input_terminated"):
            return b""
        raw: bytes = request.environ["wsgi.input"].read(limit + 1)
        if len(raw) > limit:
            raise too_large
        return raw
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge as exc:
        raise too_large from exc


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
