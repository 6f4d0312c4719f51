"""CPU profile of the decrypt path (the Flask app in-process, token verification cached).

    .venv/bin/python bench/profile_decrypt.py [--requests 3000] [--batch]

Prints the top functions by cumulative and by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from reviewer_double import StaticReviewer

from kamus_decryptor import create_app
from kamus_decryptor.tokencache import CachingTokenReviewer
from kamus_decryptor.tokenreview import ReviewMetrics
from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--batch", action="store_true", help="profile 10-item batch decrypts")
    args = parser.parse_args()
    keyring = Keyring.generate()
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        log_level="WARNING")  # fmt: skip
    registry = CollectorRegistry()
    reviewer = CachingTokenReviewer(
        StaticReviewer(), ttl=30, failure_ttl=5, max_concurrent=16, wait_timeout=5,
        metrics=ReviewMetrics(CollectorRegistry()),
    )  # fmt: skip
    client = create_app(settings, reviewer=reviewer, registry=registry).test_client()
    text = Sealer(LocalKeyringProvider(keyring)).seal(b"s3cr3t-value", Scope("team-a", "app"))
    headers = {"Authorization": "Bearer token-team_a-app"}
    route, body = ("/api/v1/decrypt/batch", {"items": {f"s{i}": text for i in range(10)}}) \
        if args.batch else ("/api/v1/decrypt", {"data": text})  # fmt: skip
    sink = io.StringIO()
    sys.stdout, real_stdout = sink, sys.stdout  # the audit lines are part of the cost
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.requests):
        response = client.post(route, json=body, headers=headers)
        assert response.status_code == 200
    profiler.disable()
    sys.stdout = real_stdout
    stats = pstats.Stats(profiler).strip_dirs()
    print(f"{args.requests} requests to {route}")
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
