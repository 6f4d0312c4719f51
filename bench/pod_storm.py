"""Pod storm: P pods x S secrets start at once, each running kamus-init against the decryptor.

    .venv/bin/python bench/pod_storm.py [--pods 200] [--secrets 10] [--provider local|vault]

Reports wall time, TokenReview calls (target: one per pod; original Kamus made one per secret)
and KMS unwrap calls (target: none for repeats: with a remote provider, the pods of one
deployment share their ciphertexts, so only the first open per worker process reaches the KMS).
Also times one kamus-init with 100 secrets. Writes bench/results/pod_storm.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from harness import local_kamus, openbao, save, worker_rss_mib

_UNWRAPS = re.compile(r'kamus_kms_calls_total\{[^}]*operation="unwrap"[^}]*\} ([0-9.e+]+)')


def _kamus_init(url: str, token_file: Path, folder: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", ""), "KAMUS_URL": url, "TOKEN_FILE_PATH": str(token_file)}
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "kamus_init.main", "-e", str(folder), "-d", str(out), "-f", "files",
         "--timeout", "300"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _vault_env(address: str, token: str) -> dict[str, str]:
    requests.post(f"{address}/v1/transit/keys/kamus-shared", headers={"X-Vault-Token": token},
                  json={"type": "aes256-gcm96"}, timeout=10).raise_for_status()  # fmt: skip
    return {"KAMUS_PROVIDER": "vault", "KAMUS_VAULT_ADDR": address, "KAMUS_VAULT_TOKEN": token,
            "KAMUS_KMS_KEY": "kamus-shared"}  # fmt: skip


def _unwraps(url: str, workers: int) -> float:
    # /metrics answers from whichever worker takes the request: ask often enough to see all.
    seen: dict[str, float] = {}
    for _ in range(workers * 20):
        response = requests.get(f"{url}/metrics", timeout=10)
        pid = response.headers.get("X-Worker", str(len(seen)))
        seen[pid] = sum(float(v) for v in _UNWRAPS.findall(response.text))
    return max(seen.values()) if workers == 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--secrets", type=int, default=10)
    parser.add_argument("--provider", choices=["local", "vault"], default="local")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, Any] = vars(args).copy()
    with ExitStack() as stack:
        extra: dict[str, str] = {}
        if args.provider == "vault":
            extra = _vault_env(*stack.enter_context(openbao()))
        kamus = stack.enter_context(local_kamus(extra, workers=args.workers))
        work = kamus.workdir / "storm"
        folder = work / "configmap"
        folder.mkdir(parents=True)
        for i in range(args.secrets):
            (folder / f"secret-{i}").write_text(kamus.encrypt(f"value-{i}", "shop", "api"))
        pods = []
        for p in range(args.pods):
            token_file = work / f"token-{p}"
            token_file.write_text(kamus.token("shop", "api", pod=f"api-{p}"))
            out = work / f"out-{p}"
            out.mkdir()
            pods.append((token_file, out))
        reviews_before = kamus.authority.tokenreview_calls
        started = time.monotonic()
        processes = [_kamus_init(kamus.decryptor.url, t, folder, o) for t, o in pods]
        codes = [process.wait() for process in processes]
        wall = time.monotonic() - started
        results |= {
            "wall_seconds": round(wall, 2),
            "pods_ok": codes.count(0),
            "files_written": sum(len(list(o.iterdir())) for _, o in pods),
            "tokenreview_calls": kamus.authority.tokenreview_calls - reviews_before,
            "original_kamus_tokenreview_calls": args.pods * args.secrets,
            "decryptor_worker_rss_mib": worker_rss_mib(kamus.decryptor),
        }
        if args.provider == "vault" and args.workers == 1:
            results["kms_unwrap_calls"] = _unwraps(kamus.decryptor.url, 1)
            results["kms_unwrap_calls_without_cache"] = args.pods * args.secrets

        big = work / "hundred"
        big.mkdir()
        text = kamus.encrypt("x" * 40, "shop", "api")
        for i in range(100):
            (big / f"s{i:03}").write_text(text)
        out = work / "hundred-out"
        out.mkdir()
        started = time.monotonic()
        assert _kamus_init(kamus.decryptor.url, pods[0][0], big, out).wait() == 0
        results["kamus_init_100_secrets_seconds"] = round(time.monotonic() - started, 3)
    path = save(f"pod_storm_{args.provider}", results)
    for key, value in results.items():
        print(f"{key:36} {value}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
