"""Shared benchmark plumbing: a local Kamus, an OpenBao dev server, and wrk runs with JSON results.

Benchmarks are not tests: they print numbers and write them to bench/results/. Everything runs on
127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))

from gunicorn_process import Service, free_port, gunicorn  # noqa: E402

from kamus_dev.authority import TokenAuthority, create_authority_app, serve_in_thread  # noqa: E402
from kamus_dev.kubeconfig import mint_token, write_kubeconfig  # noqa: E402
from kamus_kms.keyring import Keyring  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# The token authority's access log would drown the numbers.
logging.getLogger("werkzeug").setLevel(logging.ERROR)
# The same gunicorn configuration for Kamus and the hello-world baseline.
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
THREADS = int(os.environ.get("BENCH_THREADS", "4"))
WORKER_CLASS = os.environ.get("BENCH_WORKER_CLASS", "kamus_service.worker.BufferingWorker")
REUSE_PORT = os.environ.get("BENCH_REUSE_PORT", "1") == "1"


@dataclass
class Kamus:
    """A running local Kamus."""

    authority: TokenAuthority
    authority_url: str
    encryptor: Service
    decryptor: Service
    workdir: Path

    def token(self, namespace: str, service_account: str, pod: str | None = None) -> str:
        """A pod token with the kamus audience (bound to `pod`, created if need be)."""
        if pod is not None:
            self.authority.create_pod(namespace, pod)
        return mint_token(self.authority_url, self.authority.admin_token, namespace,
                          service_account, ["kamus"], pod=pod)  # fmt: skip

    def encrypt(self, data: str, namespace: str, service_account: str) -> str:
        """A ciphertext from the encryptor."""
        body = {"data": data, "namespace": namespace, "service-account": service_account}
        return requests.post(f"{self.encryptor.url}/api/v1/encrypt", json=body, timeout=30).text


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)  # noqa: S607
    return shutil.which("wrk") or "wrk"


@contextmanager
def local_kamus(extra_env: dict[str, str] | None = None, workers: int = WORKERS) -> Iterator[Kamus]:
    """Token authority in a thread; encryptor and decryptor under gunicorn."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kamus-bench-")))
        authority = TokenAuthority()
        url = stack.enter_context(serve_in_thread(create_authority_app(authority)))
        Keyring.generate().save(workdir / "keyring.json")
        (workdir / "audit.key").write_text(base64.b64encode(os.urandom(32)).decode())
        write_kubeconfig(workdir / "kubeconfig", url, authority.admin_token)
        env = {
            "KAMUS_KEYRING_FILE": str(workdir / "keyring.json"),
            "KAMUS_AUDIT_KEY_FILE": str(workdir / "audit.key"),
            "KAMUS_KUBECONFIG": str(workdir / "kubeconfig"),
            "KAMUS_LOG_LEVEL": "WARNING",
            "KAMUS_RATE_LIMIT_FAILURES_PER_MINUTE": "0",
            **(extra_env or {}),
        }

        def serve(app: str) -> Service:
            return stack.enter_context(
                gunicorn(
                    app,
                    env,
                    workdir / "logs",
                    workers=workers,
                    threads=THREADS,
                    worker_class=WORKER_CLASS,
                    reuse_port=REUSE_PORT,
                )
            )

        encryptor = serve("kamus_encryptor:create_app()")
        decryptor = serve("kamus_decryptor:create_app()")
        yield Kamus(authority, url, encryptor, decryptor, workdir)


@contextmanager
def hello_world(workers: int = WORKERS, worker_class: str = WORKER_CLASS) -> Iterator[Service]:
    """The bare Flask baseline under the same gunicorn configuration."""
    with tempfile.TemporaryDirectory(prefix="hello-bench-") as workdir:
        env = {"PYTHONPATH": str(ROOT / "bench")}
        with gunicorn(
            "hello:create_app()",
            env,
            Path(workdir),
            workers=workers,
            threads=THREADS,
            worker_class=worker_class,
            reuse_port=REUSE_PORT,
        ) as service:
            yield service


@contextmanager
def openbao() -> Iterator[tuple[str, str]]:
    """A real OpenBao dev server with transit enabled: (address, root token)."""
    binary = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    token = base64.b32encode(os.urandom(15)).decode().lower()
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bao-bench-") as home:
        env = {"HOME": home, "PATH": os.environ.get("PATH", "")}
        process = subprocess.Popen(  # noqa: S603
            [binary, "server", "-dev", f"-dev-root-token-id={token}",
             f"-dev-listen-address=127.0.0.1:{port}", "-log-level=error"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{address}/v1/sys/health", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("OpenBao did not start")
                time.sleep(0.1)
            headers = {"X-Vault-Token": token}
            requests.post(f"{address}/v1/sys/mounts/transit", json={"type": "transit"},
                          headers=headers, timeout=10).raise_for_status()  # fmt: skip
            yield address, token
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, '
    .. '"p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, body: Any, headers: dict[str, str] | None = None, *, seconds: int = 10,
        connections: int = 32, threads: int = 1) -> dict[str, float]:  # fmt: skip
    """Run wrk POSTing `body` (JSON) to `url`; requests/s and latency percentiles in ms."""
    lua_headers = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA.format(body=json.dumps(json.dumps(body)), headers=lua_headers))
    try:
        out = subprocess.run(  # noqa: S603
            [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
             "-s", script.name, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    raw = json.loads(line.removeprefix("RESULT "))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "errors": raw["socket_errors"] + raw["non_2xx"],
    }


def worker_rss_mib(service: Service) -> list[float]:
    """Resident memory of each gunicorn worker of `service`."""
    master = service.process.pid
    sizes = []
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def save(name: str, results: dict[str, Any]) -> Path:
    """Write results as JSON under bench/results/ and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
