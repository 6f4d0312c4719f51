"""Encrypt, decrypt and batch-decrypt throughput and latency, each paired in the same run with a
bare Flask hello-world under the same gunicorn configuration and with OpenBao's transit engine.

    .venv/bin/python bench/bench_http.py [--seconds 10] [--connections 32]

Writes bench/results/http.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import os
from typing import Any

import requests
from harness import THREADS, WORKERS, hello_world, local_kamus, openbao, save, worker_rss_mib, wrk

BATCH = 10


def _openbao_cases(address: str, token: str) -> dict[str, tuple[str, Any, dict[str, str]]]:
    headers = {"X-Vault-Token": token}
    # A derived key with a per-scope context: the closest transit equivalent of Kamus's binding.
    requests.post(f"{address}/v1/transit/keys/bench", json={"derived": True}, headers=headers,
                  timeout=10).raise_for_status()  # fmt: skip
    context = base64.b64encode(b"team-a/app").decode()
    plaintext = base64.b64encode(b"s3cr3t-value").decode()
    sealed = requests.post(f"{address}/v1/transit/encrypt/bench", headers=headers, timeout=10,
                           json={"plaintext": plaintext, "context": context}).json()  # fmt: skip
    ciphertext = sealed["data"]["ciphertext"]
    item = {"ciphertext": ciphertext, "context": context}
    return {
        "openbao_encrypt": (f"{address}/v1/transit/encrypt/bench",
                            {"plaintext": plaintext, "context": context}, headers),
        "openbao_decrypt": (f"{address}/v1/transit/decrypt/bench", item, headers),
        "openbao_batch10": (f"{address}/v1/transit/decrypt/bench",
                            {"batch_input": [item] * BATCH}, headers),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", help="comma-separated cases to run (e.g. hello,decrypt); nothing is saved"
    )
    args = parser.parse_args()
    run = {"seconds": args.seconds, "connections": args.connections}
    results: dict[str, Any] = {"workers": WORKERS, "threads": THREADS, "cpus": os.cpu_count(),
                               "batch": BATCH, **run}  # fmt: skip
    with local_kamus() as kamus, hello_world() as hello, openbao() as (address, token):
        ciphertext = kamus.encrypt("s3cr3t-value", "team-a", "app")
        bearer = {"Authorization": f"Bearer {kamus.token('team-a', 'app')}"}
        cases: dict[str, tuple[str, Any, dict[str, str]]] = {
            "hello": (f"{hello.url}/", {"x": 1}, {}),
            "encrypt": (f"{kamus.encryptor.url}/api/v1/encrypt",
                        {"data": "s3cr3t-value", "namespace": "team-a", "service-account": "app"},
                        {}),
            "decrypt": (f"{kamus.decryptor.url}/api/v1/decrypt", {"data": ciphertext}, bearer),
            "batch10": (f"{kamus.decryptor.url}/api/v1/decrypt/batch",
                        {"items": {f"s{i}": ciphertext for i in range(BATCH)}}, bearer),
            **_openbao_cases(address, token),
        }  # fmt: skip
        if args.only:
            cases = {name: case for name, case in cases.items() if name in args.only.split(",")}
        reviews_before = kamus.authority.tokenreview_calls
        # wrk keeps its 32 connections for a whole round, and which gunicorn worker accepted
        # each one decides the balance between the two processes: rounds vary by up to 3x for
        # any route, hello-world included. Every case gets several rounds, interleaved, and
        # the best and the median are reported.
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (url, body, headers) in cases.items():
                rounds[name].append(wrk(url, body, headers, **run))
        for name, measured in rounds.items():
            ordered = sorted(measured, key=lambda r: r["rps"])
            results[name] = ordered[-1] | {
                "median_rps": ordered[len(ordered) // 2]["rps"],
                "median_p99_ms": ordered[len(ordered) // 2]["p99_ms"],
                "rounds_rps": [round(r["rps"]) for r in measured],
                "errors": sum(r["errors"] for r in measured),
            }
            print(
                f"{name:16} {results[name]['rps']:9.0f} req/s  p50 {results[name]['p50_ms']:6.2f}"
                f" ms  p99 {results[name]['p99_ms']:6.2f} ms  errors {results[name]['errors']}"
                f"  rounds {results[name]['rounds_rps']}"
            )
        if args.only:
            return
        results["tokenreview_calls_during_load"] = (
            kamus.authority.tokenreview_calls - reviews_before
        )
        results["decryptor_worker_rss_mib"] = worker_rss_mib(kamus.decryptor)
        results["encryptor_worker_rss_mib"] = worker_rss_mib(kamus.encryptor)
    # hello and decrypt of one round ran seconds apart, on the same machine state: the ratio of
    # each round is the steadiest comparison.
    results["round_ratios"] = {
        "decrypt_vs_hello": [
            decrypt / hello
            for decrypt, hello in zip(
                results["decrypt"]["rounds_rps"], results["hello"]["rounds_rps"], strict=True
            )
        ],
        "batch_secrets_per_s_vs_openbao": [
            batch / bao
            for batch, bao in zip(
                results["batch10"]["rounds_rps"],
                results["openbao_batch10"]["rounds_rps"],
                strict=True,
            )
        ],
    }
    results["median_ratios"] = {
        "decrypt_vs_hello": results["decrypt"]["median_rps"] / results["hello"]["median_rps"],
        "batch_secrets_per_s_vs_openbao": results["batch10"]["median_rps"]
        / results["openbao_batch10"]["median_rps"],
    }
    results["ratios"] = {
        "decrypt_vs_hello": results["decrypt"]["rps"] / results["hello"]["rps"],
        "encrypt_vs_hello": results["encrypt"]["rps"] / results["hello"]["rps"],
        "batch_secrets_per_s_vs_openbao": (results["batch10"]["rps"] * BATCH)
        / (results["openbao_batch10"]["rps"] * BATCH),
        "decrypt_vs_openbao": results["decrypt"]["rps"] / results["openbao_decrypt"]["rps"],
    }
    path = save("http", results)
    print(f"\nbest-round ratios: {results['ratios']}\nmedian ratios: {results['median_ratios']}")
    print(f"ratios of each round: {results['round_ratios']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
