"""What each image installs, measured: the pip install line of each Dockerfile, run into a fresh
virtual environment, and the size of what it installed.

    .venv/bin/python bench/image_contents.py

    .venv/bin/python bench/image_contents.py --baseline df5f27a   # and as that revision did

For each image: the distributions installed (with versions) and the size of site-packages
(``du``). With ``--baseline``, each Dockerfile of that revision is measured the same way, from a
``git archive`` of it. Writes bench/results/image_contents.json and prints a Markdown table for
docs/DEPLOY.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, save

IMAGES = ("init-container", "cli", "encryptor", "decryptor")


def install_line(component: str, tree: Path = ROOT) -> list[str]:
    """The targets of the Dockerfile's ``pip install``, as written."""
    dockerfile = (tree / component / "Dockerfile").read_text("utf-8")
    found = re.search(r"RUN pip install --no-cache-dir --prefix=/install (.+)", dockerfile)
    assert found is not None, component
    return found.group(1).split()


def measure(targets: list[str], work: Path) -> dict[str, object]:
    """Install ``targets`` (relative to a copy of the repository) into a fresh venv."""
    venv = work / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
    python = str(venv / "bin" / "python")
    subprocess.run(  # noqa: S603
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         *(shlex.split(" ".join(targets)))],
        check=True, cwd=work / "src",
    )  # fmt: skip
    listed = subprocess.run(  # noqa: S603
        [python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    baseline = {"pip", "setuptools", "wheel"}
    packages = sorted(
        f"{item['name']}=={item['version']}"
        for item in json.loads(listed.stdout)
        if item["name"].lower() not in baseline
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    for name in ("pip", "setuptools", "_distutils_hack", "distutils-precedence.pth"):
        for path in site.glob(f"{name}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
    size = subprocess.run(  # noqa: S603
        ["du", "-sk", str(site)],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    )
    return {"distributions": packages, "kib": int(size.stdout.split()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REVISION", help="also measure this git revision")
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="kamus-images-") as scratch:
        work = Path(scratch)
        # pip builds in the source folders: a copy keeps build/ out of the repository.
        skip = (".venv", ".git", "__pycache__", "*.egg-info", "build", ".kamus-dev", "bench")
        shutil.copytree(ROOT, work / "src", ignore=shutil.ignore_patterns(*skip))
        for image in IMAGES:
            print(f"measuring {image} ...", flush=True)
            results[image] = {"install": install_line(image), **measure(install_line(image), work)}
        if args.baseline:
            shutil.rmtree(work / "src")
            (work / "src").mkdir()
            archive = subprocess.run(  # noqa: S603
                ["git", "-C", str(ROOT), "archive", args.baseline],  # noqa: S607
                check=True, capture_output=True,
            ).stdout  # fmt: skip
            subprocess.run(  # noqa: S603
                ["tar", "-x", "-C", str(work / "src")],  # noqa: S607
                input=archive,
                check=True,
            )
            for image in IMAGES:
                print(f"measuring {image} at {args.baseline} ...", flush=True)
                line = install_line(image, work / "src")
                results[f"{image} at {args.baseline}"] = {"install": line, **measure(line, work)}
    print("\n| image | installs | site-packages | distributions |\n|---|---|---|---|")
    for image, found in results.items():
        kib = int(found["kib"])  # type: ignore[call-overload]
        names = [str(item).split("==")[0] for item in found["distributions"]]  # type: ignore[attr-defined]
        print(f"| {image} | `{' '.join(found['install'])}` | {kib / 1024:.1f} MiB | "  # type: ignore[arg-type]
              f"{len(names)}: {', '.join(names)} |")  # fmt: skip
    print(f"wrote {save('image_contents', results)}")


if __name__ == "__main__":
    main()
