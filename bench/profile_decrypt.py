"""Time and profile the decrypt path in-process (token verification cached).

    .venv/bin/python bench/profile_decrypt.py [--requests 5000] [--profile decrypt|batch10]

Calls each app's WSGI entry directly with the environ gunicorn would build, so what is timed is
the app alone: the bare Flask hello-world, the decryptor's /healthz (the plumbing every request
pays), a decrypt and a 10-item batch. Then prints the top functions of one case by own time.
Audit lines go to /dev/null through a real file descriptor, as they would to a pipe.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))

from hello import create_app as create_hello  # noqa: E402
from reviewer_double import StaticReviewer  # noqa: E402

from kamus_decryptor import create_app  # noqa: E402
from kamus_decryptor.tokencache import CachingTokenReviewer  # noqa: E402
from kamus_decryptor.tokenreview import ReviewMetrics  # noqa: E402
from kamus_kms.keyring import Keyring  # noqa: E402
from kamus_kms.providers.local import LocalKeyringProvider  # noqa: E402
from kamus_kms.scope import Scope  # noqa: E402
from kamus_kms.sealer import Sealer  # noqa: E402
from kamus_service.settings import LogLevel, Settings  # noqa: E402

Environ = Callable[[], dict[str, Any]]
App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# The reviewer double's token for team-a/app. (A real one is a JWT of about a kilobyte: hashing it
# for the review cache costs a little more than this short one.)
TOKEN = "token-team_a-app"  # noqa: S105 (a test double's name, not a secret)


def environ(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            ) -> Environ:  # fmt: skip
    """A factory of the WSGI environ gunicorn builds for this request."""
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()}

    def build() -> dict[str, Any]:
        return {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "127.0.0.1:8080", "HTTP_USER_AGENT": "bench", **extra,
        }  # fmt: skip

    return build


def per_request_us(app: App, build: Environ, requests: int) -> float:
    """Microseconds per request, the best of three runs."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(status)

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(requests):
            b"".join(app(build(), start_response))
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    assert all(status.startswith("200") for status in statuses), set(statuses)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", choices=["decrypt", "batch10", "none"], default="decrypt")
    args = parser.parse_args()
    keyring = Keyring.generate()
    # The benchmark's log level: audit lines only (they are never silenced), no request lines.
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        log_level=LogLevel.WARNING)  # fmt: skip
    reviewer = CachingTokenReviewer(
        StaticReviewer(), ttl=30, failure_ttl=5, max_concurrent=16, wait_timeout=5,
        metrics=ReviewMetrics(CollectorRegistry()),
    )  # fmt: skip
    decryptor = create_app(settings, reviewer=reviewer, registry=CollectorRegistry())
    text = Sealer(LocalKeyringProvider(keyring)).seal(b"s3cr3t-value", Scope("team-a", "app"))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    batch = {"items": {f"s{i}": text for i in range(10)}}
    cases: dict[str, tuple[App, Environ]] = {
        "hello-world": (create_hello().wsgi_app, environ("POST", "/", b'{"x": 1}')),
        "healthz": (decryptor, environ("GET", "/healthz")),
        "decrypt": (decryptor, environ("POST", "/api/v1/decrypt",
                                       json.dumps({"data": text}).encode(), bearer)),
        "batch10": (decryptor, environ("POST", "/api/v1/decrypt/batch",
                                       json.dumps(batch).encode(), bearer)),
    }  # fmt: skip
    real_stdout = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the audit lines are part of the cost
    try:
        timings = {name: per_request_us(app, build, args.requests) for name, (app, build) in
                   cases.items()}  # fmt: skip
        profile = None
        if args.profile != "none":
            app, build = cases[args.profile]
            profile = cProfile.Profile()
            profile.runcall(per_request_us, app, build, args.requests // 3)
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
    for name, micros in timings.items():
        print(f"{name:12} {micros:7.1f} µs per request")
    if profile is not None:
        print(f"\ncProfile of {args.profile} (own time):")
        pstats.Stats(profile).strip_dirs().sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
