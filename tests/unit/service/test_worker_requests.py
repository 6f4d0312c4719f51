"""When the worker's event loop has a whole request to hand to a thread: never before the request
is complete, and at once when its framing is malformed (the parser then answers 400)."""

from __future__ import annotations

import pytest

from kamus_service.worker import request_complete

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
