"""When the worker's event loop has a whole request to hand to a thread: never before the request
is complete, and at once when its framing is malformed (the parser then answers 400)."""

from __future__ import annotations

import pytest

from kamus_service.worker import RequestScan, request_complete

MAX_BODY = 1000
HEAD = b"POST /api/v1/decrypt HTTP/1.1\r\nHost: kamus\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("received", "complete"),
    [
        pytest.param(b"", False, id="nothing"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: k", False, id="partial-headers"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n", True, id="no-body"),
        pytest.param(HEAD + b"Content-Length: 4\r\n\r\n{}", False, id="partial-body"),
        pytest.param(HEAD + b"Content-Length: 2\r\n\r\n{}", True, id="whole-body"),
        pytest.param(HEAD + b"Content-Length: 2\r\n\r\n{}GET /", True, id="pipelined-next"),
        pytest.param(HEAD + b"Content-Length: 5000\r\n\r\n{", True, id="too-large-for-413"),
        pytest.param(HEAD + b"Content-Length: x\r\n\r\n", True, id="bad-length"),
        pytest.param(
            HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n", True, id="two-lengths"
        ),
        pytest.param(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", False, id="chunked-unfinished"
        ),
        pytest.param(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n",
            False,
            id="chunked-no-final-line",
        ),
        pytest.param(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            True,
            id="chunked-whole",
        ),
        pytest.param(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;x=y\r\n{}\r\n0\r\nA: b\r\n",
            False,
            id="chunked-unfinished-trailer",
        ),
        pytest.param(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;x=y\r\n{}\r\n0\r\nA: b\r\n\r\n",
            True,
            id="chunked-with-trailer",
        ),
        pytest.param(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", True, id="size-not-hex"),
        pytest.param(HEAD + b"Transfer-Encoding: chunked\r\n\r\n-5\r\n", True, id="size-negative"),
        pytest.param(HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\n", True, id="size-0x"),
        pytest.param(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 2000, True, id="endless-size-line"
        ),
        pytest.param(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n7d0\r\n", True, id="chunk-over-the-limit"
        ),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 70_000, True, id="endless-headers"),
    ],
)
def test_a_request_is_handed_over_when_whole_or_malformed(received: bytes, complete: bool) -> None:
    assert request_complete(received, MAX_BODY) is complete


def test_a_request_arriving_byte_by_byte_is_complete_exactly_at_its_last_byte() -> None:
    request = (
        b"POST /api/v1/decrypt HTTP/1.1\r\nHost: kamus\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"1\r\n" + bytes([c]) + b"\r\n" for c in b'{"data": "x"}')
        + b"0\r\n\r\n"
    )
    scan = RequestScan(MAX_BODY)
    received = bytearray()
    answers = []
    for byte in request:
        received.append(byte)
        answers.append(scan.update(received))
    assert answers == [False] * (len(request) - 1) + [True]


def test_a_chunked_body_over_the_limit_is_handed_over_however_it_arrives() -> None:
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"100\r\n" + b"x" * 256 + b"\r\n"
    scan = RequestScan(MAX_BODY)
    received = bytearray()
    for _ in range(4):  # four chunks of 256 bytes: 1,024 > 1,000
        received += request if not received else b"100\r\n" + b"x" * 256 + b"\r\n"
        complete = scan.update(received)
    assert complete


def test_a_content_length_of_thousands_of_digits_is_handed_over_not_an_error() -> None:
    assert request_complete(HEAD + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", MAX_BODY)
