"""The images' own command line (the Dockerfile's CMD, which loads kamus_service/gunicorn_conf.py),
run as it is but for the address: no Docker engine here, so this is the closest check that the
images serve."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from gunicorn_process import Service, serve_image_command


def _listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (from /proc/net/tcp: 0A is LISTEN)."""
    wanted = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text("ascii").splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == wanted and row.split()[3] == "0A")


@pytest.fixture
def image(
    request: pytest.FixtureRequest, service_env: dict[str, str], tmp_path: Path
) -> Iterator[Service]:
    """The component's image command, serving on a loopback port."""
    component: str = request.param
    with serve_image_command(component, service_env, tmp_path / component) as service:
        yield service


@pytest.mark.parametrize("image", ["encryptor", "decryptor"], indirect=True)
def test_the_image_command_serves_with_a_listening_socket_per_worker(
    image: Service,
) -> None:
    url = image.url
    port = int(url.rsplit(":", 1)[1])
    # --workers=2 --reuse-port: the kernel spreads connections over two sockets, not one. Each
    # worker binds its own as it starts, and the service answers as soon as the first has: give
    # the second a moment on a busy machine.
    deadline = time.monotonic() + 20
    while _listening_sockets(port) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _listening_sockets(port) == 2
    # --no-control-socket: no administration socket in the container.
    assert "Control socket" not in image.output()
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("image", ["encryptor"], indirect=True)
def test_the_encryptor_image_command_encrypts(
    image: Service,
) -> None:
    url = image.url
    body = {"data": "s3cr3t", "namespace": "team-a", "service-account": "app"}
    response = requests.post(f"{url}/api/v1/encrypt", json=body, timeout=10)
    assert response.status_code == 200
    assert response.text.startswith("kamus:v1:local:team-a:app:")


@pytest.mark.parametrize("image", ["decryptor"], indirect=True)
def test_the_decryptor_image_command_decrypts_for_the_pod(
    image: Service,
    encryptor: Service,
    token: Callable[..., str],
) -> None:
    url = image.url
    ciphertext = requests.post(
        f"{encryptor.url}/api/v1/encrypt",
        json={"data": "s3cr3t", "namespace": "team-a", "service-account": "app"},
        timeout=10,
    ).text
    bearer = {"Authorization": f"Bearer {token('team-a', 'app')}"}
    response = requests.post(
        f"{url}/api/v1/decrypt", json={"data": ciphertext}, headers=bearer, timeout=10
    )
    assert (response.status_code, response.text) == (200, "s3cr3t")
