"""What Kamus's worker class costs and what it buys, beside gunicorn's gthread, in one run.

    .venv/bin/python bench/bench_slow_clients.py [--rounds 3] [--stalled 1000]

For each worker class, in interleaved rounds, on the bare Flask hello-world under the images'
gunicorn settings: throughput with wrk (what reading each request in the event loop costs), then
the latency of `/healthz` while N connections hold a partial request open (what it buys).
Writes bench/results/slow_clients.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from typing import Any

import requests
from harness import THREADS, WORKERS, hello_world, save, wrk

CLASSES = {"gthread": "gthread", "kamus": "kamus_service.worker.BufferingWorker"}
PROBES = 5
PROBE_TIMEOUT_SECONDS = 5.0


def _stalled_latencies(url: str, stalled: int) -> list[float | None]:
    """Seconds each /healthz took with `stalled` partial requests open; None: no answer."""
    host, port = url.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(stalled):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"POST /api/v1/decrypt HTTP/1.1\r\nHost: kamus\r\nContent-Ty")
            held.append(sock)
        latencies: list[float | None] = []
        for _ in range(PROBES):
            started = time.perf_counter()
            try:
                requests.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_SECONDS).raise_for_status()
                latencies.append(time.perf_counter() - started)
            except requests.RequestException:
                latencies.append(None)
        return latencies
    finally:
        for sock in held:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, Any] = {"workers": WORKERS, "threads": THREADS, "stalled": args.stalled,
                               "probes": PROBES, "rounds": args.rounds}  # fmt: skip
    measured: dict[str, dict[str, list[Any]]] = {
        name: {"rps": [], "p99_ms": [], "probe_s": []} for name in CLASSES
    }
    for _ in range(args.rounds):
        for name, worker_class in CLASSES.items():
            with hello_world(worker_class=worker_class) as hello:
                run = wrk(f"{hello.url}/", {"x": 1}, seconds=args.seconds)
                measured[name]["rps"].append(run["rps"])
                measured[name]["p99_ms"].append(run["p99_ms"])
                measured[name]["probe_s"].extend(_stalled_latencies(hello.url, args.stalled))
    print(
        "| worker class | hello-world req/s (median) | p99 ms | /healthz answered under "
        f"{args.stalled} stalled | median / max s |"
    )
    print("|---|---|---|---|---|")
    for name, values in measured.items():
        answered = [v for v in values["probe_s"] if v is not None]
        summary = {
            "rps_rounds": [round(v) for v in values["rps"]],
            "median_rps": statistics.median(values["rps"]),
            "median_p99_ms": statistics.median(values["p99_ms"]),
            "probes_answered": len(answered),
            "probes_sent": len(values["probe_s"]),
            "probe_median_s": statistics.median(answered) if answered else None,
            "probe_max_s": max(answered) if answered else None,
        }
        results[name] = summary
        timing = (
            f"{summary['probe_median_s']:.3f} / {summary['probe_max_s']:.3f}" if answered else "-"
        )
        print(f"| {name} | {summary['median_rps']:.0f} | {summary['median_p99_ms']:.1f} | "
              f"{len(answered)}/{len(values['probe_s'])} | {timing} |")  # fmt: skip
    results["throughput_ratio_kamus_vs_gthread"] = [
        k / g for k, g in zip(measured["kamus"]["rps"], measured["gthread"]["rps"], strict=True)
    ]
    print("throughput ratio per round (kamus / gthread):",
          [round(r, 2) for r in results["throughput_ratio_kamus_vs_gthread"]])  # fmt: skip
    print("written to", save("slow_clients", results))


if __name__ == "__main__":
    main()
