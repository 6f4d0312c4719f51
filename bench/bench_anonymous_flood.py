"""Memory of the decryptor under an anonymous flood, and whether its probes are still answered
(issue 22, items 1 and 2): the pod's resident memory against the chart's limit.

    .venv/bin/python bench/bench_anonymous_flood.py [--connections 1000] [--body-kib 1024]

The decryptor runs under gunicorn as the images run it (2 workers, the Kamus worker class). N
connections each send one complete `POST /api/v1/decrypt` of the given size without a token and
never read the answer, all held open at once; meanwhile the resident memory of gunicorn's master
and workers (the pod's processes) is sampled every 100 ms and `/healthz` is timed. Writes
bench/results/anonymous_flood.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import requests
from harness import local_kamus, save

CHART_LIMIT_MIB = 512  # decryptor.resources.limits.memory in charts/kamus/values.yaml


def _rss_mib(master: int) -> float:
    """Resident memory of gunicorn's master and its workers together, in MiB."""
    total = 0
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in [str(master), *children]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue  # a worker restarted meanwhile
        total += next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("VmRSS:"))  # fmt: skip
    return total / 1024


def _flood(url: str, connections: int, body_kib: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps({"data": "x" * (body_kib * 1024 - 12)}).encode()
    head = (f"POST /api/v1/decrypt HTTP/1.1\r\nHost: kamus\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()  # fmt: skip
    held = []
    for _ in range(connections):
        try:
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(head + payload)
        except OSError:
            break  # the worker stopped accepting or reset: what it does under load
        held.append(sock)
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--body-kib", type=int, default=1024)
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with local_kamus() as kamus:
        service = kamus.decryptor
        master = service.process.pid
        idle = _rss_mib(master)
        samples: list[float] = []
        probes: list[float | None] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(_rss_mib(master))
                time.sleep(0.1)

        def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                try:
                    requests.get(f"{service.url}/healthz", timeout=5).raise_for_status()
                    probes.append(time.perf_counter() - started)
                except requests.RequestException:
                    probes.append(None)
                time.sleep(0.5)

        threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        held = _flood(service.url, args.connections, args.body_kib)
        sent = time.perf_counter() - started
        time.sleep(args.hold_seconds)
        done.set()
        for thread in threads:
            thread.join()
        for sock in held:
            sock.close()
    answered = [p for p in probes if p is not None]
    results: dict[str, Any] = {
        "connections": args.connections, "held": len(held), "body_kib": args.body_kib,
        "send_seconds": round(sent, 1), "idle_rss_mib": round(idle), "peak_rss_mib": round(
            max(samples, default=idle)), "chart_limit_mib": CHART_LIMIT_MIB,
        "healthz_answered": len(answered), "healthz_sent": len(probes),
        "healthz_p50_ms": round(statistics.median(answered) * 1000, 1) if answered else None,
        "healthz_max_ms": round(max(answered) * 1000, 1) if answered else None,
    }  # fmt: skip
    print(f"| anonymous flood | connections held | idle RSS | peak RSS | chart limit | /healthz "
          f"answered | p50 / max |\n|---|---|---|---|---|---|---|\n| {args.connections} x "
          f"{args.body_kib} KiB, no token | {len(held)} | {results['idle_rss_mib']} MiB | "
          f"{results['peak_rss_mib']} MiB | {CHART_LIMIT_MIB} MiB | {len(answered)}/{len(probes)} "
          f"| {results['healthz_p50_ms']} / {results['healthz_max_ms']} ms |")  # fmt: skip
    print(f"saved {save('anonymous_flood', results)}")


if __name__ == "__main__":
    main()
