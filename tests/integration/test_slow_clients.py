"""Slow and idle clients against the images' own gunicorn command: a thousand connections that
send part of a request and wait neither block a pod's decrypt nor stay open past the deadline."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from gunicorn_process import Service, serve_image_command

pytestmark = pytest.mark.integration

SLOW_CONNECTIONS = 1000
CLIENT_TIMEOUT_SECONDS = 3
# What a stalled client sends before it stops: a request line and part of the headers; whole
# headers and part of a declared body; a chunked body that never ends.
STALLED = {
    "partial-headers": b"POST /api/v1/decrypt HTTP/1.1\r\nHost: kamus\r\nContent-Ty",
    "partial-body": (
        b"POST /api/v1/decrypt HTTP/1.1\r\nHost: kamus\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"data": "kamus:v1'
    ),
    "unfinished-chunked-body": (
        b"POST /api/v1/decrypt HTTP/1.1\r\nHost: kamus\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"dat\r\n'
    ),
    "nothing": b"",
}


@dataclass
class Image:
    """A component served by its image command."""

    component: str
    service: Service

    @property
    def url(self) -> str:
        return self.service.url


@pytest.fixture(scope="module", params=["decryptor", "encryptor"])
def image(
    request: pytest.FixtureRequest,
    service_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Image]:
    """The component's image command, with a short client timeout."""
    component: str = request.param
    env = {**service_env, "KAMUS_CLIENT_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT_SECONDS)}
    if component == "encryptor":
        env = {k: v for k, v in env.items() if k.startswith(("KAMUS_KEYRING", "KAMUS_CLIENT"))}
    logs: Path = tmp_path_factory.mktemp(f"slow-{component}")
    with serve_image_command(component, env, logs / component) as service:
        yield Image(component, service)


def _stall(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    kinds = list(STALLED.values())
    stalled = []
    for n in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(kinds[n % len(kinds)])
        stalled.append(sock)
    return stalled


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        while chunk := sock.recv(65536):  # a 400 or 408 may come first; then the end
            del chunk
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


def _legitimate_call(image: Image, encryptor: Service, token: Callable[..., str]) -> None:
    """The call a starting pod (or a developer) makes, answered within one second."""
    if image.component == "encryptor":
        response = requests.post(
            f"{image.url}/api/v1/encrypt",
            json={"data": "x", "namespace": "team-a", "service-account": "app"}, timeout=1.0,
        )  # fmt: skip
        assert response.status_code == 200
        return
    ciphertext = requests.post(
        f"{encryptor.url}/api/v1/encrypt",
        json={"data": "s3cr3t", "namespace": "team-a", "service-account": "app"}, timeout=10,
    ).text  # fmt: skip
    response = requests.post(
        f"{image.url}/api/v1/decrypt", json={"data": ciphertext},
        headers={"Authorization": f"Bearer {token('team-a', 'app')}"}, timeout=1.0,
    )  # fmt: skip
    assert (response.status_code, response.text) == (200, "s3cr3t")


def test_a_thousand_stalled_connections_neither_block_callers_nor_outlive_the_deadline(
    image: Image, encryptor: Service, token: Callable[..., str]
) -> None:
    stalled = _stall(image.url, SLOW_CONNECTIONS)
    try:
        started = time.monotonic()
        for _ in range(5):
            _legitimate_call(image, encryptor, token)
            assert requests.get(f"{image.url}/healthz", timeout=1.0).status_code == 200
        # All of that happened while every stalled connection was still open.
        assert time.monotonic() - started < CLIENT_TIMEOUT_SECONDS
        time.sleep(CLIENT_TIMEOUT_SECONDS + 1.5)  # the deadline, and the worker's 1 s sweep
        still_open = [sock for sock in stalled if not _closed_by_server(sock)]
        assert still_open == []
    finally:
        for sock in stalled:
            sock.close()
    _legitimate_call(image, encryptor, token)


def test_a_kept_alive_connection_serves_requests_one_after_another(image: Image) -> None:
    with requests.Session() as session:
        answers = [session.get(f"{image.url}/healthz", timeout=5) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5


def test_pipelined_requests_are_all_answered(image: Image) -> None:
    host, port = image.url.removeprefix("http://").split(":")
    one = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    last = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(one * 2 + last)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK") == 3


def test_the_deadline_of_a_new_connection_runs_from_the_connect_not_the_first_byte(
    image: Image,
) -> None:
    host, port = image.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        connected = time.monotonic()
        time.sleep(CLIENT_TIMEOUT_SECONDS - 0.5)
        sock.sendall(STALLED["partial-headers"])  # a first byte late, then nothing more
        sock.settimeout(CLIENT_TIMEOUT_SECONDS + 3)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(65536):
                pass
        # Closed by the deadline counted from the connect (plus the worker's 1 s sweep), not a
        # whole timeout after the late first byte.
        assert time.monotonic() - connected < CLIENT_TIMEOUT_SECONDS + 2
