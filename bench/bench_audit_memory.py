"""Peak memory and time of `kamus-audit query` and `report` over a folder of chains, by its size.

    .venv/bin/python bench/bench_audit_memory.py [--records 20000,200000] [--chains 2] [--runs 3]
    .venv/bin/python bench/bench_audit_memory.py --baseline be7a380    # and as a revision had it

For each size N the benchmark writes a folder of synthetic chains (``--chains`` files of N records
each, interleaved in time over the same week, so a larger N is denser traffic, not a longer span)
shaped like the decryptor's: the event fields of docs/AUDIT.md with the chain fields (seq, prev,
hash, mac as random hex: query and report do not verify them), batches of 1 to 10 items over 40
namespaces and 200 pods, 90 % allowed and the rest denied, unavailable or errors. Then it runs, each
in a fresh process, `kamus-audit query DIR --format jsonl > /dev/null`, `kamus-audit report DIR
> /dev/null` and `kamus-audit report DIR --html FILE`, and reads the command's peak RSS with
``resource.getrusage(RUSAGE_CHILDREN)`` in a wrapper process of its own (so no other child
counts). Prints a Markdown table, the ratio of peak memory at the largest size to the smallest,
and writes bench/results/audit_memory.json. Target: memory flat in the number of records, peak RSS
at 200,000 records per chain at most 1.2 x that at 20,000 (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import ROOT, save

START = datetime(2026, 11, 1, tzinfo=UTC)
SPAN = timedelta(days=7)
TARGET_RATIO = 1.2
COMPONENTS = ("kms", "client", "cli")
# Runs the command given as arguments with stdout to /dev/null; prints its wall seconds and peak
# RSS in KiB. The wrapper's only child is the command, so RUSAGE_CHILDREN is the command's own.
WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
elapsed = time.perf_counter() - started
print(elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
OUTCOMES = (("allowed", "ok"),) * 90 + (
    *(("denied", "scope_mismatch"),) * 5,
    *(("denied", "unauthorized"),) * 2,
    ("denied", "invalid_ciphertext"),
    ("unavailable", "unavailable"),
    ("error", "internal_error"),
)


def _event(chance: random.Random, when: datetime, seq: int, prev: str) -> dict[str, Any]:
    """One decryptor audit record (docs/AUDIT.md, "Event fields" and "The audit file")."""
    outcome, reason = chance.choice(OUTCOMES)
    namespace = f"team-{chance.randrange(40)}"
    pod = chance.randrange(200)
    authenticated = reason != "unauthorized"
    caller = {
        "username": f"system:serviceaccount:{namespace}:app",
        "uid": f"uid-{pod}",
        "pod": f"app-{pod}-7c9d5",
        "pod_uid": f"pod-uid-{pod}",
        "node": f"node-{pod % 12}",
        "credential_id": f"JTI={chance.getrandbits(64):016x}",
    }
    items = [
        {
            "name": f"secret-{index}",
            "fingerprint": f"{chance.getrandbits(128):032x}",
            "namespace": namespace if outcome != "denied" else f"team-{chance.randrange(40)}",
            "service_account": "app",
            "provider": "local",
            "key_id": f"k{chance.randrange(1, 4)}",
        }
        for index in range(chance.randrange(1, 11) if authenticated else 0)
    ]
    return {
        "action": "decrypt_batch",
        "audit": True,
        "caller": caller if authenticated else None,
        "client_request_id": None,
        "hash": f"{chance.getrandbits(256):064x}",
        "items": items,
        "mac": f"{chance.getrandbits(256):064x}",
        "outcome": outcome,
        "prev": prev,
        "reason": reason,
        "request_id": f"{chance.getrandbits(64):016x}",
        "seq": seq,
        "source_ip": f"10.0.{pod // 250}.{pod % 250}",
        "time": when.isoformat(timespec="milliseconds"),
        "user_agent": "kamus-init-0.1.0",
    }


def write_chains(folder: Path, chains: int, records: int) -> int:
    """``chains`` files of ``records`` records, interleaved over SPAN; return the bytes written."""
    step = SPAN / (chains * records)
    written = 0
    for chain in range(chains):
        chance = random.Random(f"{chain}-{records}")  # noqa: S311 - synthetic data, not secrets
        prev = "0" * 64
        with (folder / f"decryptor-{chain}.jsonl").open("w", encoding="utf-8") as stream:
            for number in range(records):
                record = _event(chance, START + step * (number * chains + chain), number + 1, prev)
                prev = record["mac"]
                line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
                written += stream.write(line)
    return written


def baseline_path(revision: str) -> str:
    """A PYTHONPATH with kamus-audit's packages as ``revision`` had them (git archive)."""
    commit = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "rev-parse", revision],  # noqa: S607
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    target = Path.home() / ".cache" / "kamus-bench" / f"audit-at-{commit[:12]}"
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "archive", commit, *COMPONENTS],  # noqa: S607
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)  # noqa: S603, S607
    return os.pathsep.join(str(target / component) for component in COMPONENTS)


def measure(argv: list[str], python_path: str | None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run of ``kamus-audit argv``."""
    env = dict(os.environ)
    if python_path is not None:
        env["PYTHONPATH"] = python_path
    finished = subprocess.run(  # noqa: S603
        [sys.executable, "-c", WRAPPER, sys.executable, "-m", "kamus_cli.audit", *argv],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if finished.returncode != 0:
        raise SystemExit(f"kamus-audit {' '.join(argv)} failed: {finished.stderr}")
    seconds, kib = finished.stdout.split()
    return float(seconds), int(kib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records", default="20000,200000", help="records per chain, comma-separated sizes"
    )
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (medians)")
    parser.add_argument(
        "--baseline", metavar="REVISION", help="also run kamus-audit as this git revision had it"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.records.split(",")]
    versions: dict[str, str | None] = {"current": None}
    if args.baseline:
        versions[args.baseline] = baseline_path(args.baseline)
    results: dict[str, Any] = {
        "chains": args.chains, "runs": args.runs, "span_days": SPAN.days,
        "python": sys.version.split()[0], "cpus": os.cpu_count(), "sizes": {},
    }  # fmt: skip
    print("| version | records per chain | command | median s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="kamus-audit-bench-") as work:
        for size in sizes:
            folder = Path(work) / f"chains-{size}"
            folder.mkdir()
            written = write_chains(folder, args.chains, size)
            html = Path(work) / f"report-{size}.html"
            commands = {
                "query --format jsonl": ["query", str(folder), "--format", "jsonl"],
                "report": ["report", str(folder)],
                "report --html": ["report", str(folder), "--html", str(html)],
            }
            entry: dict[str, Any] = {"bytes": written, "versions": {}}
            for version, python_path in versions.items():
                measured: dict[str, Any] = {}
                for name, argv in commands.items():
                    runs = [measure(argv, python_path) for _ in range(args.runs)]
                    seconds = statistics.median(run[0] for run in runs)
                    mib = max(run[1] for run in runs) / 1024
                    measured[name] = {"seconds": round(seconds, 2), "peak_rss_mib": round(mib, 1)}
                    print(f"| {version} | {size:,} | `{name}` | {seconds:.2f} | {mib:.1f} |",
                          flush=True)  # fmt: skip
                entry["versions"][version] = measured
            results["sizes"][str(size)] = entry
    smallest, largest = str(min(sizes)), str(max(sizes))
    ratios: dict[str, dict[str, float]] = {}
    for version in versions:
        ratios[version] = {
            name: round(
                results["sizes"][largest]["versions"][version][name]["peak_rss_mib"]
                / results["sizes"][smallest]["versions"][version][name]["peak_rss_mib"],
                2,
            )
            for name in commands
        }
        for name, ratio in ratios[version].items():
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            print(f"{version}: {name}: peak RSS at {int(largest):,} / at {int(smallest):,} records"
                  f" per chain = {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})")  # fmt: skip
    results["peak_rss_ratio_largest_to_smallest"] = ratios
    print(f"wrote {save('audit_memory', results)}")


if __name__ == "__main__":
    main()
