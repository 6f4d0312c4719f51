"""Malformed chunked bodies, sent on raw sockets to the services under real gunicorn: a clear 400
`invalid_request`, never a 500, and counted by the decryptor's failure limit like any bad
request."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gunicorn_process import Service, gunicorn

pytestmark = pytest.mark.integration

TokenFactory = Callable[..., str]
BODY = json.dumps({"data": "x", "namespace": "team-a", "service-account": "app"}).encode()
# Each a chunked body that a conforming server must refuse: the framing, not the JSON, is wrong.
MALFORMED = {
    "size-not-hex": b"zz\r\n" + BODY + b"\r\n0\r\n\r\n",
    "size-with-0x": b"0x10\r\n" + BODY[:16] + b"\r\n0\r\n\r\n",
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk-shorter-than-its-size": b"ff\r\n" + BODY + b"\r\n0\r\n\r\n",
    "missing-chunk-terminator": hex(len(BODY))[2:].encode() + b"\r\n" + BODY + b"XX0\r\n\r\n",
    "bad-trailer": hex(len(BODY))[2:].encode() + b"\r\n" + BODY + b"\r\n0\r\nbad trailer\r\n\r\n",
}


def _send(url: str, path: str, body: bytes, token: str | None = None) -> tuple[int, dict[str, str]]:
    """POST a raw chunked ``body``; the status and the JSON error of the answer."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n"
        + (f"Authorization: Bearer {token}\r\n" if token else "")
        + "\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)  # a short chunk ends where the client stops sending
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload) if payload.startswith(b"{") else {}


@pytest.mark.parametrize("framing", sorted(MALFORMED))
def test_a_malformed_chunked_body_is_a_400_on_the_encryptor(
    encryptor: Service, framing: str
) -> None:
    status, error = _send(encryptor.url, "/api/v1/encrypt", MALFORMED[framing])
    assert (status, error.get("error")) == (400, "invalid_request")


@pytest.mark.parametrize("framing", sorted(MALFORMED))
def test_a_malformed_chunked_body_is_a_400_on_the_decryptor(
    decryptor: Service, token: TokenFactory, framing: str
) -> None:
    status, error = _send(
        decryptor.url, "/api/v1/decrypt", MALFORMED[framing], token("team-a", "app")
    )
    assert (status, error.get("error")) == (400, "invalid_request")


@pytest.fixture(scope="module")
def strict_decryptor(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A decryptor allowing 3 failures a minute, one worker (so one limiter sees them all)."""
    env = {**service_env, "KAMUS_RATE_LIMIT_FAILURES_PER_MINUTE": "3"}
    logs: Path = tmp_path_factory.mktemp("strict")
    with gunicorn("kamus_decryptor:create_app()", env, logs, workers=1) as service:
        yield service


def test_malformed_bodies_count_against_the_failure_limit(
    strict_decryptor: Service, token: TokenFactory
) -> None:
    minted = token("team-a", "app")
    statuses = [
        _send(strict_decryptor.url, "/api/v1/decrypt", MALFORMED["size-not-hex"], minted)[0]
        for _ in range(4)
    ]
    assert statuses == [400, 400, 400, 429]


# What gunicorn's own parser refuses before the application sees a request.
UNPARSABLE = {
    "request-line-with-extra-words": (b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    "header-name-with-a-space": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400),
    "request-line-too-long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
}


@pytest.mark.parametrize("service", ["encryptor", "decryptor"])
@pytest.mark.parametrize("request_bytes", sorted(UNPARSABLE))
def test_a_request_gunicorn_cannot_parse_is_answered_with_the_json_error(
    request: pytest.FixtureRequest, service: str, request_bytes: str
) -> None:
    url: str = request.getfixturevalue(service).url
    sent, expected = UNPARSABLE[request_bytes]
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(sent)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    assert int(status_line.split()[1]) == expected
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)
    assert set(error) == {"error", "message"}
    assert error["error"] == {400: "invalid_request", 414: "uri_too_long"}[expected]
    # The request is not echoed.
    assert b"extra" not in body
    assert b"Bad Name" not in body
