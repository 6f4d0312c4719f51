"""The gunicorn worker of both services: each request is read whole before a thread handles it.

gunicorn's gthread worker gives a connection to a thread as soon as it has data, and the thread
then blocks on the socket until the request line, headers and body have all arrived. A client that
sends half a request and waits holds a thread for as long as it likes: a few dozen such
connections stopped both services, health checks included.

This worker keeps gthread's thread pool and request handling, but its event loop reads every
request into memory first, non-blocking, under a deadline: ``KAMUS_CLIENT_TIMEOUT_SECONDS`` from
the connection's start (or, on a kept-alive connection, from the request's first byte). A
connection that misses it is closed; one that goes quiet between requests is closed after
gunicorn's ``--keep-alive``. A thread only ever parses a request that is already in memory, and
writes its answer with the same timeout, so slow or idle clients cost a socket and a buffer, never
a thread. Requests are HTTP/1.x (TLS included, handshaken in the loop); HTTP/2 is not offered.

Limits: ``--worker-connections`` connections per worker process (reading, handled or kept
alive); beyond them the worker stops accepting until some close. Bodies are buffered up to
``KAMUS_MAX_BODY_BYTES`` (a larger one is handed over at once and answered 413), and all requests
being received by one worker together up to the larger of 64 MiB and eight maximal bodies: a
connection that would pass that is closed, so slow uploads cannot exhaust memory.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import re
import resource
import selectors
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn import sock as gunicorn_sock
from gunicorn import util as gunicorn_util
from gunicorn.workers.gthread import TConn, ThreadWorker

from kamus_service.settings import setting

_HEAD_LIMIT = 64 * 1024  # a request line and headers longer than this go to gunicorn's parser
_RECV_SIZE = 256 * 1024
_LINGER_SECONDS = 2.0  # how long a closing connection may still send (RFC 9112, section 9.6)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MIN_BUFFER_BUDGET = 64 * 1024 * 1024
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# The JSON error (kamus_service.errors) of each status gunicorn's parser answers itself.
_PARSER_ERRORS = {
    400: ("invalid_request", "the request is not valid HTTP/1.1"),
    403: ("forbidden", "the request was refused"),
    414: ("uri_too_long", "the request line is too long"),
    417: ("expectation_failed", "only 'Expect: 100-continue' is supported"),
    431: ("headers_too_large", "the request headers are too large"),
    501: ("not_implemented", "the transfer coding is not supported"),
}
_INTERNAL_ERROR = ("internal_error", "internal error; this is a bug in Kamus")


class RequestScan:
    """Tells, as a request's bytes arrive, when they hold the whole request (or enough for the
    parser to refuse it), looking at each byte once: a body of a million one-byte chunks must not
    be re-read from its start on every arrival.

    Malformed framing counts as complete: gunicorn's parser then answers 400 at once, rather than
    the connection waiting for bytes that would not make it valid. So does a body over
    ``max_body``: the app answers 413 without reading it.
    """

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._searched = 0  # the head's end was not found before this offset
        self._body: int | None = None  # where the body starts, once the head is complete
        self._length = 0  # Content-Length, when not chunked
        self._chunked = False
        self._position = 0  # chunked: where the next chunk-size line starts
        self._total = 0  # chunked: the body bytes announced so far
        self.complete = False

    def update(self, data: bytes | bytearray) -> bool:
        """Whether ``data`` (all bytes received so far for this request) is complete."""
        if not self.complete:
            self.complete = self._scan(data)
        return self.complete

    def _scan(self, data: bytes | bytearray) -> bool:
        if self._body is None:
            end = data.find(b"\r\n\r\n", max(self._searched - 3, 0))
            if end < 0:
                self._searched = len(data)
                return len(data) > _HEAD_LIMIT
            if self._read_head(bytes(data[:end])):
                return True
            self._body = self._position = end + 4
        if self._chunked:
            return self._chunks_complete(data)
        return len(data) - self._body >= self._length

    def _read_head(self, head: bytes) -> bool:
        """Take the framing from the head; True when it is malformed or the body too large."""
        length: int | None = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"transfer-encoding":
                self._chunked = self._chunked or b"chunked" in value.lower()
            elif name == b"content-length":
                # 18 digits already exceed any body limit; int() refuses over 4,300.
                if length is not None or not value.isdigit() or len(value) > 18:
                    return True
                length = int(value)
        self._length = length or 0
        return not self._chunked and self._length > self._max_body

    def _chunks_complete(self, data: bytes | bytearray) -> bool:
        while True:
            eol = data.find(b"\r\n", self._position)
            if eol < 0:
                return len(data) - self._position > 1024  # an endless size line is malformed
            size_text = bytes(data[self._position : eol]).partition(b";")[0].strip()
            if not _HEX.fullmatch(size_text):
                return True
            size = int(size_text, 16)
            if size == 0:
                # The trailer section, possibly empty, ends with an empty line.
                return data.find(b"\r\n\r\n", eol) >= 0 or len(data) - eol > _HEAD_LIMIT
            if self._total + size > self._max_body:
                return True
            following = eol + 2 + size + 2
            if len(data) < following:
                return False  # this chunk again next time, with more of it received
            self._total += size
            self._position = following


def request_complete(data: bytes | bytearray, max_body: int) -> bool:
    """Whether ``data`` holds one whole HTTP/1.x request (see RequestScan)."""
    return RequestScan(max_body).update(data)


class _ReceivedSocket:
    """A connection's socket as a handling thread sees it: reads come from the request already
    received, then end of stream; writes go to the network with the client timeout."""

    def __init__(self, raw: socket.socket, timeout: float) -> None:
        self._raw = raw
        self._timeout = timeout
        self._data = b""
        self._position = 0
        self.exhausted = False  # a read found nothing more: the request may be cut short

    def load(self, data: bytes) -> None:
        self._data, self._position, self.exhausted = data, 0, False

    def unread(self) -> bytes:
        """What the thread did not read (a pipelined next request)."""
        return self._data[self._position :]

    def recv(self, size: int, flags: int = 0) -> bytes:
        chunk = self._data[self._position : self._position + size]
        self._position += len(chunk)
        if not chunk:
            self.exhausted = True
        return chunk

    def setblocking(self, flag: bool) -> None:
        # Blocking writes, but never longer than the client timeout per call.
        if flag:
            self._raw.settimeout(self._timeout)
        else:
            self._raw.setblocking(False)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        """Send all of ``data`` within the client timeout, in total.

        A TLS socket's own sendall() restarts its timeout for each record: a client reading one
        16 KiB record just before each timeout could hold a thread for as long as it likes.
        """
        deadline = time.monotonic() + self._timeout
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the client did not take the answer in time")
            self._raw.settimeout(remaining)
            view = view[self._raw.send(view) :]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Connection(TConn):  # type: ignore[misc]
    """One client connection and the request being received on it."""

    def __init__(
        self, cfg: Any, raw: socket.socket, client: Any, server: Any, *, timeout: float,
        max_body: int,
    ) -> None:  # fmt: skip
        super().__init__(cfg, raw, client, server)  # leaves ``raw`` non-blocking
        self.raw = raw
        self.received = bytearray()
        self.scan = RequestScan(max_body)
        self.deadline = time.monotonic() + timeout
        # A kept-alive connection waits idle for its next request; the deadline of that request
        # starts at its first byte. A new connection's deadline runs from the start.
        self.idle = False
        self.handshaking = isinstance(raw, ssl.SSLSocket)
        self.continued = False
        self.sock = _ReceivedSocket(raw, timeout)
        self.parser = http.get_parser(cfg, self.sock, client)
        # What gthread's handle() would otherwise do first: wait for data, wrap TLS, make a parser.
        self.initialized = True
        self.data_ready = True

    def close(self, graceful: bool = False) -> None:
        with contextlib.suppress(OSError):
            self.raw.close()


METRICS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_directory(under: str | None = None) -> str:
    """Where the worker processes keep their metrics, empty, named in the environment they inherit.

    prometheus_client's multiprocess mode: each worker writes its numbers to files there and a
    scrape of any worker adds them all up, so one scrape shows the whole pod. An existing
    ``PROMETHEUS_MULTIPROC_DIR`` is emptied (a restarted container keeps its emptyDir); without
    one, a new private folder is made under ``under`` (gunicorn's --worker-tmp-dir) or the
    system's temporary folder.
    """
    directory = os.environ.get(METRICS_DIRECTORY)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    else:
        directory = tempfile.mkdtemp(prefix="kamus-metrics-", dir=under)
        os.environ[METRICS_DIRECTORY] = directory
        atexit.register(_remove_from, os.getpid(), directory)
    return directory


def _remove_from(master: int, directory: str) -> None:
    # Forked workers inherit atexit handlers: only the master, exiting last, removes the folder.
    if os.getpid() == master:
        shutil.rmtree(directory, ignore_errors=True)


def write_json_error(sock: socket.socket, status: int, reason: str, detail: str) -> None:
    """Answer a request gunicorn could not parse with the JSON error and headers of every other
    answer, not gunicorn's HTML page. ``detail`` quotes the request: gunicorn has logged it, the
    caller gets a fixed sentence."""
    code, message = _PARSER_ERRORS.get(status, _INTERNAL_ERROR)
    body = json.dumps({"error": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class BufferingWorker(ThreadWorker):  # type: ignore[misc]
    """gthread whose event loop receives whole requests before handing them to threads."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        # Runs once in the master before any worker is forked: the workers inherit the folder.
        super().check_config(cfg, log)
        prepare_metrics_directory(cfg.worker_tmp_dir)

    def init_process(self) -> None:
        self._timeout: float = setting("CLIENT_TIMEOUT_SECONDS")
        self._max_body: int = setting("MAX_BODY_BYTES")
        self._tls = gunicorn_sock.ssl_context(self.cfg) if self.cfg.is_ssl else None
        self._receiving: set[_Connection] = set()
        self._budget = max(_MIN_BUFFER_BUDGET, 8 * self._max_body)
        self._buffered = 0  # bytes held by the connections being received
        # Each idle client is one descriptor; the soft limit is often 1024 in containers.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # gunicorn's Worker.handle_error writes its refusals through util.write_error, which has
        # no hook: replaced in this worker process only.
        gunicorn_util.write_error = write_json_error
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        try:
            raw, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self.log.warning("out of file descriptors: not accepting for a moment")
                time.sleep(0.1)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        raw.setblocking(False)
        if self._tls is not None:
            try:
                raw = self._tls.wrap_socket(
                    raw, server_side=True, do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                )  # fmt: skip
            except OSError:  # the client is gone already (reset before the handshake)
                raw.close()
                return
        self.nr_conns += 1
        conn = _Connection(
            self.cfg, raw, client, listener.getsockname(), timeout=self._timeout,
            max_body=self._max_body,
        )  # fmt: skip
        self._receive(conn)

    def _receive(self, conn: _Connection) -> None:
        """Wait for (the rest of) a request on ``conn`` in the event loop."""
        conn.raw.setblocking(False)  # a handling thread left it blocking, with a timeout
        self._receiving.add(conn)
        self._buffered += len(conn.received)
        self._watch(conn, self._on_readable)

    def _watch(self, conn: _Connection, callback: Callable[[_Connection, Any], None]) -> None:
        self.poller.register(conn.raw, selectors.EVENT_READ, partial(callback, conn))

    def _on_readable(self, conn: _Connection, _raw: Any) -> None:
        try:
            self._receive_more(conn)
        except Exception as exc:
            # Whatever a client sends must not end the event loop, and with it every connection
            # of this worker.
            self.log.error("dropping a connection: %s", type(exc).__name__)
            self._drop(conn)

    def _receive_more(self, conn: _Connection) -> None:
        if conn.handshaking and not self._handshake(conn):
            return
        ended = False
        while True:
            try:
                data = conn.raw.recv(_RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                self._drop(conn)
                return
            if not data:
                ended = True
                break
            if conn.idle:
                conn.idle = False
                conn.deadline = time.monotonic() + self._timeout
            if self._buffered + len(data) > self._budget:
                self.log.warning("request buffers full: closing a connection still sending")
                self._drop(conn)
                return
            self._buffered += len(data)
            conn.received += data
            if len(conn.received) > self._max_body + _HEAD_LIMIT:
                break
        too_long = len(conn.received) > self._max_body + _HEAD_LIMIT
        if conn.scan.update(conn.received) or too_long:
            self._hand_over(conn)
        elif ended:
            # Cut short: the parser reports it (a 400 for a body, nothing for a bare close).
            self._hand_over(conn) if conn.received else self._drop(conn)
        elif not conn.continued and b"\r\n\r\n" in conn.received:
            head = bytes(conn.received).partition(b"\r\n\r\n")[0].lower()
            if b"\r\nexpect: 100-continue" in head and b" http/1.1\r\n" in head + b"\r\n":
                conn.continued = True
                self._send_quietly(conn, _CONTINUE)

    def _handshake(self, conn: _Connection) -> bool:
        try:
            conn.raw.do_handshake()  # type: ignore[attr-defined]
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (ssl.SSLError, OSError):
            self._drop(conn)
            return False
        conn.handshaking = False
        return True

    def _send_quietly(self, conn: _Connection, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a full buffer: the client waits 1 s and sends
            conn.raw.send(data)

    def _hand_over(self, conn: _Connection) -> None:
        self._stop_receiving(conn)
        conn.sock.load(bytes(conn.received))
        conn.received = bytearray()
        conn.scan = RequestScan(self._max_body)
        self.enqueue_req(conn)

    def _stop_receiving(self, conn: _Connection) -> None:
        self._unwatch(conn)
        if conn in self._receiving:
            self._receiving.discard(conn)
            self._buffered -= len(conn.received)

    def _unwatch(self, conn: _Connection) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.raw)

    def _drop(self, conn: _Connection) -> None:
        self._stop_receiving(conn)
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn: _Connection, fs: Any) -> None:
        try:
            keepalive = bool(not fs.cancelled() and fs.result())
        except Exception:
            keepalive = False
        if keepalive and self.alive and not conn.sock.exhausted:
            # The next request may already be here, pipelined behind this one.
            conn.received = bytearray(conn.parser.unreader.take_buffered() + conn.sock.unread())
            conn.continued = False
            conn.idle = not conn.received
            conn.deadline = time.monotonic() + (self.cfg.keepalive if conn.idle else self._timeout)
            self._receive(conn)
            if conn.received and conn.scan.update(conn.received):
                self._hand_over(conn)
            return
        self._linger(conn)

    def _linger(self, conn: _Connection) -> None:
        """Close after the client has had a moment to stop sending, without blocking the loop."""
        try:
            conn.raw.setblocking(False)
            conn.raw.shutdown(socket.SHUT_WR)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        conn.received = bytearray()
        conn.deadline = time.monotonic() + _LINGER_SECONDS
        self._receiving.add(conn)
        self._watch(conn, self._on_lingering_readable)

    def _on_lingering_readable(self, conn: _Connection, _raw: Any) -> None:
        try:
            if conn.raw.recv(_RECV_SIZE):
                return
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            pass
        self._drop(conn)

    def murder_pending(self) -> None:
        """Close connections past their deadline: too slow to send a request, idle too long
        between requests, or lingering after their last answer."""
        now = time.monotonic()
        for conn in [c for c in self._receiving if c.deadline <= now]:
            self._drop(conn)
        super().murder_pending()
