"""kamus-init start time against bare Python start, measured side by side in one run.

    .venv/bin/python bench/bench_init_start.py [--runs 31] [--secrets 10]

kamus-init runs in every workload pod before the application starts, so its wall time is paid at
every pod start. It runs here as the init container runs it: installed (not editable) into a
virtual environment of its own holding only what its Dockerfile installs (``./client`` and
``./init-container`` with their dependencies), with the image's environment
(``PYTHONDONTWRITEBYTECODE=1``), a fresh service-account token per run (a new pod: the decryptor
has never reviewed it) and 10 ciphertexts in a folder, against a local decryptor under gunicorn.

The runs of ``python3 -c pass`` (the same interpreter), of the standard-library floor (``python3
-c "import argparse, json, pathlib, socket"``: what any Python program parsing flags, speaking JSON
over a socket and handling paths loads), ``kamus-init -f files`` and ``kamus-init -f json``
alternate, so machine noise hits all alike; the medians and their ratios are printed and written
to bench/results/init_start.json. Target: kamus-init at most 3x bare Python (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from harness import ROOT, local_kamus, save

CACHE = Path.home() / ".cache" / "kamus-bench"
FLOOR = "import argparse, json, pathlib, socket"


def baseline_venv(revision: str) -> Path:
    """A venv with kamus-init as ``revision`` of the repository installed it (git archive)."""
    commit = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "rev-parse", revision],  # noqa: S607
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    venv = CACHE / f"init-at-{commit[:12]}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"building {venv} (kamus-init as of {revision})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
        with tempfile.TemporaryDirectory() as copy:
            archive = subprocess.run(  # noqa: S603
                ["git", "-C", str(ROOT), "archive", commit],  # noqa: S607
                check=True, capture_output=True,
            ).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", copy], input=archive, check=True)  # noqa: S603, S607
            # Before the components were distributions, every image installed the whole repository.
            split = (Path(copy) / "client" / "pyproject.toml").exists()
            targets = ["./client", "./init-container"] if split else ["."]
            subprocess.run(  # noqa: S603
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 *targets],
                check=True, cwd=copy,
            )  # fmt: skip
    return venv


def image_venv() -> Path:
    """A venv with what init-container/Dockerfile installs, rebuilt when the sources change."""
    sources = sorted((ROOT / "client").rglob("*.py")) + sorted(
        (ROOT / "init-container").rglob("*.py")
    )
    sources += [ROOT / "client" / "pyproject.toml", ROOT / "init-container" / "pyproject.toml"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]
    venv = CACHE / f"init-{digest}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"building {venv} (pip install ./client ./init-container)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
        with tempfile.TemporaryDirectory() as copy:
            # pip builds in the source folder; a copy keeps build/ out of the repository.
            for folder in ("client", "init-container"):
                shutil.copytree(ROOT / folder, Path(copy) / folder)
            subprocess.run(  # noqa: S603
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "./client", "./init-container"],
                check=True, cwd=copy,
            )  # fmt: skip
    return venv


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run; the run must succeed."""
    started = time.perf_counter()
    finished = subprocess.run(argv, env=env, capture_output=True, check=False)  # noqa: S603
    elapsed = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {finished.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--secrets", type=int, default=10)
    parser.add_argument(
        "--baseline",
        metavar="REVISION",
        help="also time kamus-init as this git revision installed it (e.g. df5f27a, before #13)",
    )
    args = parser.parse_args()
    baseline = baseline_venv(args.baseline) if args.baseline else None
    venv = image_venv()
    python = str(venv / "bin" / "python")
    base_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    # The init container writes into an emptyDir of medium Memory: a tmpfs, as /dev/shm is.
    with (
        local_kamus(workers=2) as kamus,
        tempfile.TemporaryDirectory(prefix="kamus-init-bench-", dir="/dev/shm") as shm,
    ):
        work = Path(shm)
        encrypted = work / "encrypted"
        encrypted.mkdir(parents=True)
        for number in range(args.secrets):
            ciphertext = kamus.encrypt(f"value-{number}-" + "x" * 40, "bench", "app")
            (encrypted / f"secret-{number}").write_text(ciphertext)
        items = {path.name: path.read_text() for path in encrypted.iterdir()}
        timings: dict[str, list[float]] = {
            "python -c pass": [],
            "stdlib floor": [],
            "files": [],
            "json": [],
            "decryptor answer": [],
        }
        if baseline is not None:
            timings[f"json at {args.baseline}"] = []
        order = random.Random(13)  # noqa: S311 - the order of cases, not a secret
        for run in range(args.runs + 1):  # the first round warms caches and is not counted

            def init(output_format: str, venv: Path = venv, run: int = run) -> list[str]:
                return [str(venv / "bin" / "kamus-init"), "-e", str(encrypted),
                        "-d", str(work / f"{output_format}-{venv.name}-{run}"),
                        "-f", output_format]  # fmt: skip

            def env_for(case: str, venv: Path = venv, run: int = run) -> dict[str, str]:
                # Every kamus-init is a new pod: a token the decryptor has never reviewed.
                token_file = work / f"token-{case.replace(' ', '-')}-{run}"
                token_file.write_text(kamus.token("bench", "app", pod=f"{token_file.name}"))
                return {
                    **base_env,
                    "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
                    "KAMUS_URL": kamus.decryptor.url,
                    "TOKEN_FILE_PATH": str(token_file),
                }

            cases: dict[str, tuple[list[str], dict[str, str]]] = {
                "python -c pass": ([python, "-c", "pass"], base_env),
                # What any Python program with kamus-init's job loads: flags, JSON, sockets, paths.
                "stdlib floor": ([python, "-c", FLOOR], base_env),
                "files": (init("files"), env_for("files")),
                "json": (init("json"), env_for("json")),
            }
            if baseline is not None:
                name = f"json at {args.baseline}"
                cases[name] = (init("json", baseline), env_for(name, baseline))
            # A shuffled order each round: no case always follows another.
            names = list(cases)
            order.shuffle(names)
            samples = {name: timed(*cases[name]) for name in names}
            # The decryptor's share: the same batch with another new pod's token, sent from this
            # process (no interpreter start, no imports): what no client can make faster.
            answer_token = kamus.token("bench", "app", pod=f"answer-{run}")
            started = time.perf_counter()
            answered = requests.post(
                f"{kamus.decryptor.url}/api/v1/decrypt/batch",
                json={"items": items},
                headers={"Authorization": f"Bearer {answer_token}"},
                timeout=30,
            )
            samples["decryptor answer"] = time.perf_counter() - started
            answered.raise_for_status()
            if run:
                for name, seconds in samples.items():
                    timings[name].append(seconds)
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    bare = medians["python -c pass"]
    results = {
        "runs": args.runs,
        "secrets": args.secrets,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "median_ms": {name: round(value, 1) for name, value in medians.items()},
        "ratio_to_bare_python": {
            name: round(value / bare, 2)
            for name, value in medians.items()
            if name != "python -c pass"
        },
    }
    for name, value in medians.items():
        ratio = "" if name == "python -c pass" else f"  ({value / bare:.2f}x bare Python)"
        print(f"{name:20s} median {value:6.1f} ms{ratio}")
    own = (medians["json"] - medians["decryptor answer"]) / bare
    print(f"kamus-init -f json without the decryptor's share: {own:.2f}x bare Python")
    results["json_without_decryptor_answer_ratio"] = round(own, 2)
    print(f"wrote {save('init_start', results)}")


if __name__ == "__main__":
    main()
