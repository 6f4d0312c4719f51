"""One HTTP/1.1 POST over a fresh connection, with the standard library's sockets only.

Why not ``requests`` or ``http.client``: kamus-init runs at every pod start and sends one request.
On the reference machine importing ``requests`` costs about 160 ms and ``http.client`` (which
imports the e-mail parser) about 45 ms, several times the whole exchange with the decryptor
(docs/PERFORMANCE.md). The part of HTTP a Kamus client needs is small and is all here: a request
with a body and ``Connection: close``, an answer framed by Content-Length, by chunked transfer
coding or by the end of the connection, interim 1xx answers skipped, no redirects followed (a
redirect could carry a secret or a token to another host).

Proxies are honoured as curl and requests honour them: ``HTTPS_PROXY`` for https URLs (through
``CONNECT``, so TLS runs end to end with the Kamus service), ``HTTP_PROXY`` for http URLs, either
case, and ``NO_PROXY`` (host names, domain suffixes, ``host:port``, IP networks, ``*``).

Every failure becomes a :mod:`kamus_client.errors` error here; callers never see ``OSError``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from kamus_client.errors import (
    ClientError,
    InputError,
    ServerUnavailableError,
    TLSError,
    UnexpectedResponseError,
)
from kamus_client.terminal import escape_unsafe

# typing, NamedTuple and dataclasses are left out of the modules kamus-init loads: together they
# cost more at every pod start than kamus-init's own code (docs/PERFORMANCE.md, "Pod start").
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

MAX_HEAD_BYTES = 64 * 1024
# Far above any Kamus answer (the services refuse request bodies above a few MiB), low enough that
# a wrong URL pointing at a big download cannot fill a pod's memory.
MAX_BODY_BYTES = 32 * 1024 * 1024
_READ_SIZE = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
_MAX_REASON = 200


class Origin:
    """Scheme, host and port of a server."""

    __slots__ = ("host", "port", "scheme")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Origin):
            return NotImplemented
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)

    def __hash__(self) -> int:
        return hash((self.scheme, self.host, self.port))

    @classmethod
    def of(cls, url: str) -> Origin:
        """Return the origin of an http(s) URL; raises InputError for anything else."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InputError(f"{url!r} is not a usable URL") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"{url!r} is not an http:// or https:// URL")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default)

    @property
    def authority(self) -> str:
        """``host:port`` as the Host header and CONNECT write it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


class Proxy:
    """An http:// proxy and the Proxy-Authorization it wants, if any."""

    __slots__ = ("authorization", "origin")

    def __init__(self, origin: Origin, authorization: str | None = None) -> None:
        self.origin = origin
        self.authorization = authorization


class Response:
    """A complete answer; header names are lower-case, repeated ones joined with ``", "``. The
    reason phrase is only ever shown to a person: it comes escaped for a terminal."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


if TYPE_CHECKING:
    # Called on the connected TLS socket before anything is sent (certificate pinning).
    PeerCheck = Callable[[ssl.SSLSocket], None]


def post(
    origin: Origin,
    target: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    check_peer: PeerCheck | None = None,
    proxy: Proxy | None = None,
    method: str = "POST",
) -> Response:
    """Send one request (a POST unless ``method`` says otherwise) and return the answer, all
    within ``timeout`` seconds.

    ``target`` is the path (and query) on ``origin``; ``tls`` is required for https.
    """
    head = _request_head(origin, target, len(body), headers, proxy, method=method)
    deadline = time.monotonic() + timeout
    try:
        sock = _connect(origin, deadline, tls, check_peer, proxy)
        try:
            _send_body(sock, head + body, deadline)
            return _read_response(sock, deadline, origin)
        finally:
            sock.close()
    except ClientError:
        raise
    except TimeoutError as exc:
        raise ServerUnavailableError(f"{origin} did not answer in time", transient=True) from exc
    except OSError as exc:
        if _is_tls_error(exc):
            raise TLSError(f"TLS with {origin} failed: {_reason(exc)}") from exc
        raise ServerUnavailableError(
            f"cannot connect to {origin}: {_reason(exc)}", transient=True
        ) from exc


def proxy_for(origin: Origin, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy the environment sets for ``origin``, or None to connect directly."""
    env = os.environ if environ is None else environ
    names = (
        ("https_proxy", "HTTPS_PROXY") if origin.scheme == "https" else ("http_proxy", "HTTP_PROXY")
    )
    value = next((env[name].strip() for name in names if env.get(name, "").strip()), "")
    if not value or _bypassed(origin, env.get("no_proxy") or env.get("NO_PROXY") or ""):
        return None
    url = value if "://" in value else f"http://{value}"
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise InputError(
            f"{names[1]} must be an http:// proxy URL; {parts.scheme}:// proxies are not supported"
        )
    authorization = None
    if parts.username is not None:
        import base64  # noqa: PLC0415 - only for a proxy that asks for credentials

        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_pass.encode()).decode("ascii")
    return Proxy(Origin.of(url), authorization)


def _bypassed(origin: Origin, no_proxy: str) -> bool:
    host = origin.host.lower()
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            if _in_network(host, entry):
                return True
            continue
        name, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if port and port != str(origin.port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False


def _in_network(host: str, network: str) -> bool:
    import ipaddress  # noqa: PLC0415 - only for NO_PROXY entries that name networks

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _request_head(
    origin: Origin,
    target: str,
    length: int,
    headers: Mapping[str, str],
    proxy: Proxy | None,
    *,
    method: str = "POST",
) -> bytes:
    # Plain http through a proxy names the whole URL; https goes through a CONNECT tunnel.
    through_proxy = proxy is not None and origin.scheme == "http"
    request_target = f"{origin}{target}" if through_proxy else target
    fields = {
        "Host": origin.authority,
        **headers,
        "Content-Length": str(length),
        "Connection": "close",
    }
    if through_proxy and proxy is not None and proxy.authorization is not None:
        fields["Proxy-Authorization"] = proxy.authorization
    lines = [f"{method} {request_target} HTTP/1.1"]
    for name, value in fields.items():
        if any(ch in value for ch in "\r\n\0") or not name.isascii():
            # A header value cannot carry a line break: that would split the request.
            raise InputError(f"the {name} header holds a line break or a NUL character")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _connect(
    origin: Origin,
    deadline: float,
    tls: ssl.SSLContext | None,
    check_peer: PeerCheck | None,
    proxy: Proxy | None,
) -> socket.socket:
    https = origin.scheme == "https"
    if https and tls is None:
        raise InputError(f"{origin} needs TLS settings")
    first_hop = proxy.origin if proxy is not None else origin
    # An ASCII host goes to the resolver as bytes: a str would load the IDNA codec first.
    host: str | bytes = first_hop.host.encode() if first_hop.host.isascii() else first_hop.host
    sock = socket.create_connection((host, first_hop.port), timeout=_remaining(deadline))  # type: ignore[arg-type]
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy is not None and https:
            _open_tunnel(sock, origin, proxy, deadline)
        if tls is not None and https:
            sock.settimeout(_remaining(deadline))
            sock = tls.wrap_socket(sock, server_hostname=origin.host)
            if check_peer is not None:
                check_peer(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_tunnel(sock: socket.socket, origin: Origin, proxy: Proxy, deadline: float) -> None:
    lines = [f"CONNECT {origin.authority} HTTP/1.1", f"Host: {origin.authority}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    _send(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), deadline)
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        # Byte by byte would be slow; a proxy sends nothing after its answer to CONNECT until the
        # client speaks, so reading in blocks cannot swallow the server's first TLS bytes.
        chunk = _recv(sock, deadline)
        if not chunk or len(buffer) > MAX_HEAD_BYTES:
            raise ServerUnavailableError(
                f"the proxy {proxy.origin} gave no usable answer to CONNECT", transient=True
            )
        buffer += chunk
    status, reason, _ = _parse_head(bytes(buffer[: buffer.index(b"\r\n\r\n")]), proxy.origin)
    if not 200 <= status < 300:
        raise ServerUnavailableError(
            f"the proxy {proxy.origin} refused to connect to {origin}: {status} {reason}",
            transient=status in (502, 503, 504),
            status=status,
        )


def _read_response(sock: socket.socket, deadline: float, origin: Origin) -> Response:
    buffer = bytearray()
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            status, reason, headers = _parse_head(bytes(buffer[:end]), origin)
            del buffer[: end + 4]
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue): the real one follows
            break
        if len(buffer) > MAX_HEAD_BYTES:
            raise UnexpectedResponseError(f"{origin} sent an over-long answer head")
        chunk = _recv(sock, deadline)
        if not chunk:
            raise ServerUnavailableError(
                f"{origin} closed the connection without an answer", transient=True
            )
        buffer += chunk
    if status in _NO_BODY_STATUSES:
        return Response(status, reason, headers, b"")
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.rsplit(",", 1)[-1].strip().lower() != "chunked":
            raise UnexpectedResponseError(f"{origin} sent an answer in an unknown transfer coding")
        _read_until_closed(sock, buffer, deadline, origin)
        return Response(status, reason, headers, _dechunk(bytes(buffer), origin))
    length = headers.get("content-length")
    if length is None:
        _read_until_closed(sock, buffer, deadline, origin)
        return Response(status, reason, headers, bytes(buffer))
    expected = _content_length(length, origin)
    while len(buffer) < expected:
        chunk = _recv(sock, deadline)
        if not chunk:
            raise ServerUnavailableError(
                f"{origin} closed the connection in the middle of its answer", transient=True
            )
        buffer += chunk
    return Response(status, reason, headers, bytes(buffer[:expected]))


def _parse_head(head: bytes, origin: Origin) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise UnexpectedResponseError(f"{origin} does not answer HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise UnexpectedResponseError(f"{origin} sent a malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    # The reason phrase ends up in error messages: escaped like every server text on a terminal.
    return int(code), escape_unsafe(reason.strip()[:_MAX_REASON]), headers


def _content_length(value: str, origin: Origin) -> int:
    # Repeated identical values are allowed (RFC 9110 §8.6); anything else is refused.
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1 or not (only := values.pop()).isdigit():
        raise UnexpectedResponseError(f"{origin} sent an invalid Content-Length")
    length = int(only)
    if length > MAX_BODY_BYTES:
        raise UnexpectedResponseError(f"{origin} announced an answer above {MAX_BODY_BYTES} bytes")
    return length


def _dechunk(data: bytes, origin: Origin) -> bytes:
    body = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        size_text = data[position:line_end].split(b";", 1)[0].strip() if line_end >= 0 else b""
        try:
            size = int(size_text, 16)
        except ValueError:
            raise UnexpectedResponseError(f"{origin} sent a malformed chunked answer") from None
        start = line_end + 2
        if size == 0:
            return bytes(body)  # trailer fields, if any, are not used
        end = start + size
        if size < 0 or end + 2 > len(data) or data[end : end + 2] != b"\r\n":
            raise ServerUnavailableError(
                f"{origin} closed the connection in the middle of its answer", transient=True
            )
        body += data[start:end]
        position = end + 2


def _read_until_closed(
    sock: socket.socket, buffer: bytearray, deadline: float, origin: Origin
) -> None:
    while chunk := _recv(sock, deadline):
        buffer += chunk
        if len(buffer) > MAX_BODY_BYTES:
            raise UnexpectedResponseError(f"{origin} sent an answer above {MAX_BODY_BYTES} bytes")


def _send_body(sock: socket.socket, data: bytes, deadline: float) -> None:
    try:
        _send(sock, data, deadline)
    except (BrokenPipeError, ConnectionResetError):
        # A server may answer (413, say) and close before reading the whole body: its answer,
        # if one arrived, says more than the broken pipe; reading it comes next.
        return


def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
    sock.settimeout(_remaining(deadline))
    sock.sendall(data)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(_remaining(deadline))
    return sock.recv(_READ_SIZE)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _is_tls_error(exc: OSError) -> bool:
    # ssl is imported only for https; if it is not loaded, no TLS error can have happened.
    ssl_module = sys.modules.get("ssl")
    return ssl_module is not None and isinstance(exc, ssl_module.SSLError)


def _reason(exc: OSError) -> str:
    text = exc.strerror or getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    # Text from the network lands on a terminal: printable characters only, kept short.
    return "".join(ch if ch.isprintable() else " " for ch in str(text)).strip()[:200]
