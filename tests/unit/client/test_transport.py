"""The clients' HTTP transport against raw sockets on 127.0.0.1: framing, failures and proxies.

The Kamus services answer with Content-Length; proxies and ingresses in front of them may answer
chunked, or close the connection to end the answer. Each server here writes exact bytes.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from canned_server import CannedServer, Reply, self_signed_certificate, serve

from kamus_client.api import KamusClient
from kamus_client.errors import (
    InputError,
    ServerUnavailableError,
    UnexpectedResponseError,
)
from kamus_client.transport import Origin, Proxy, post, proxy_for

Handler = Callable[[socket.socket, bytes], None]


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest


@contextmanager
def raw_server(handler: Handler) -> Iterator[tuple[int, list[bytes]]]:
    """A one-connection-at-a-time server on 127.0.0.1 calling ``handler(conn, request)``."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    stop = threading.Event()

    def loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                request = _read_request(conn)
                received.append(request)
                handler(conn, request)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def answer(data: bytes) -> Handler:
    def handler(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(data)

    return handler


def call(port: int, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    response = post(
        Origin("http", "127.0.0.1", port),
        "/api/v1/decrypt",
        b'{"data": "x"}',
        {"Accept": "text/plain"},
        timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )
    return response.status, dict(response.headers), response.body


def test_content_length_frames_the_answer_and_the_request_is_well_formed() -> None:
    with raw_server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) as (port, got):
        status, headers, body = call(port)

    assert (status, body) == (200, b"hello")
    assert headers["content-length"] == "5"
    head, _, sent = got[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /api/v1/decrypt HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Connection: close" in lines
    assert "Content-Length: 13" in lines
    assert sent == b'{"data": "x"}'


def test_chunked_answers_are_decoded() -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nkamu\r\n2\r\ns:\r\n0\r\nTrailer: x\r\n\r\n"
    )
    with raw_server(answer(reply)) as (port, _):
        assert call(port)[2] == b"kamus:"


def test_an_answer_ended_by_the_connection_close_is_read_whole() -> None:
    with raw_server(answer(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")) as (
        port,
        _,
    ):
        assert call(port)[2] == b"all of it"


def test_interim_answers_are_skipped() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with raw_server(answer(reply)) as (port, _):
        assert call(port)[:3:2] == (200, b"ok")


def test_repeated_headers_are_joined() -> None:
    reply = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n"
    with raw_server(answer(reply)) as (port, _):
        assert call(port)[1]["x-a"] == "1, 2"


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort",
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
    ids=["truncated-length", "truncated-chunk", "no-answer", "truncated-head"],
)
def test_an_answer_cut_short_is_a_transient_unavailability(reply: bytes) -> None:
    with raw_server(answer(reply)) as (port, _), pytest.raises(ServerUnavailableError) as caught:
        call(port)
    assert caught.value.transient


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["not-http", "negative", "conflicting", "huge", "coding", "header", "chunk-size"],
)
def test_an_answer_that_is_not_http_is_refused(reply: bytes) -> None:
    with raw_server(answer(reply)) as (port, _), pytest.raises(UnexpectedResponseError):
        call(port)


def test_an_endless_head_is_refused() -> None:
    def flood(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):
            try:
                conn.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            except OSError:
                return

    with raw_server(flood) as (port, _), pytest.raises(UnexpectedResponseError):
        call(port)


def test_a_silent_server_times_out_as_transient() -> None:
    release = threading.Event()

    def silent(_conn: socket.socket, _request: bytes) -> None:
        release.wait(5)

    with raw_server(silent) as (port, _):
        with pytest.raises(ServerUnavailableError, match="did not answer in time") as caught:
            post(Origin("http", "127.0.0.1", port), "/", b"", {}, timeout=0.3)
        release.set()
    assert caught.value.transient


def test_a_refused_connection_is_transient() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ServerUnavailableError, match="cannot connect") as caught:
        call(port)
    assert caught.value.transient


def test_a_line_break_in_a_header_value_is_refused_before_connecting() -> None:
    with pytest.raises(InputError, match="line break"):
        post(Origin("http", "127.0.0.1", 9), "/", b"", {"Authorization": "a\r\nX: y"}, timeout=1)


def test_a_redirect_is_returned_not_followed() -> None:
    reply = b"HTTP/1.1 307 Moved\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"
    with raw_server(answer(reply)) as (port, got):
        assert call(port)[0] == 307
    assert len(got) == 1


def test_plain_http_through_a_proxy_names_the_whole_url_with_proxy_credentials() -> None:
    with raw_server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as (port, got):
        proxy = proxy_for(
            Origin("http", "kamus.example", 80), {"HTTP_PROXY": f"http://u%40x:p@127.0.0.1:{port}"}
        )
        assert proxy is not None
        response = post(
            Origin("http", "kamus.example", 80),
            "/api/v1/encrypt",
            b"{}",
            {},
            timeout=5,
            proxy=proxy,
        )
    assert response.body == b"ok"
    head = got[0].decode().split("\r\n")
    assert head[0] == "POST http://kamus.example:80/api/v1/encrypt HTTP/1.1"
    assert "Proxy-Authorization: Basic dUB4OnA=" in head  # u@x:p


def test_https_through_a_proxy_opens_a_connect_tunnel() -> None:
    # The proxy refuses the tunnel: the client must have asked for it, and say so clearly.
    with raw_server(answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")) as (port, got):
        proxy = Proxy(Origin("http", "127.0.0.1", port))
        with pytest.raises(ServerUnavailableError, match="refused to connect") as caught:
            post(
                Origin("https", "kamus.example", 443),
                "/",
                b"",
                {},
                timeout=5,
                proxy=proxy,
                tls=ssl.create_default_context(),
            )
    assert got[0].startswith(b"CONNECT kamus.example:443 HTTP/1.1\r\nHost: kamus.example:443\r\n")
    assert not caught.value.transient


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("", "kamus.example", 443, False),
        ("*", "kamus.example", 443, True),
        ("example", "kamus.example", 443, True),
        (".example", "kamus.example", 443, True),
        ("xample", "kamus.example", 443, False),
        ("kamus.example:8443", "kamus.example", 443, False),
        ("kamus.example:443", "kamus.example", 443, True),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        (" svc.cluster.local , 127.0.0.1", "kamus.ns.svc.cluster.local", 443, True),
    ],
)
def test_no_proxy_is_honoured(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    environ = {"HTTPS_PROXY": "proxy.corp:3128", "NO_PROXY": no_proxy}
    found = proxy_for(Origin("https", host, port), environ)
    assert (found is None) is bypassed
    if found is not None:
        assert found.origin == Origin("http", "proxy.corp", 3128)


def test_lower_case_proxy_variables_win_and_only_the_scheme_s_own_applies() -> None:
    environ = {
        "https_proxy": "http://low:1",
        "HTTPS_PROXY": "http://up:2",
        "HTTP_PROXY": "http://h:3",
    }
    found = proxy_for(Origin("https", "kamus.example", 443), environ)
    assert found is not None
    assert found.origin.host == "low"
    assert proxy_for(Origin("https", "k", 443), {"HTTP_PROXY": "http://h:3"}) is None


def test_a_tls_proxy_url_is_refused_clearly() -> None:
    with pytest.raises(InputError, match="http:// proxy"):
        proxy_for(Origin("https", "k", 443), {"HTTPS_PROXY": "https://proxy:443"})


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        target.close()


def test_kamus_client_reaches_an_https_service_through_a_connect_proxy(tmp_path: Path) -> None:
    certificate = self_signed_certificate(tmp_path)
    service = CannedServer()
    service.queue(Reply(200, "kamus:v2:sealed"))
    tunnels: list[bytes] = []

    def tunnel(conn: socket.socket, request: bytes) -> None:
        tunnels.append(request)
        target = request.split(b" ")[1].decode()
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        back = threading.Thread(target=_pipe, args=(upstream, conn.dup()))
        back.start()
        _pipe(conn, upstream)
        back.join(5)

    with (
        serve(service, ssl_context=certificate.server_context()) as url,
        raw_server(tunnel) as (proxy_port, _),
    ):
        client = KamusClient(
            url,
            user_agent="kamus-cli-test",
            timeout=5,
            cert_fingerprint=certificate.sha256,
            environ={"HTTPS_PROXY": f"127.0.0.1:{proxy_port}"},
        )
        ciphertext = client.encrypt("s3cr3t", namespace="team", service_account="app")

    assert ciphertext == "kamus:v2:sealed"
    assert tunnels[0].startswith(f"CONNECT {url.removeprefix('https://')} HTTP/1.1".encode())
    # TLS ran end to end: the proxy saw the tunnel request, never the secret.
    assert b"s3cr3t" not in b"".join(tunnels)
    assert service.requests[0].body["data"] == "s3cr3t"
