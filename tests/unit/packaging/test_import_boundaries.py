"""The lean programs run with the packages they must not need made unimportable.

A fresh interpreter installs an import hook that refuses the named top-level packages, then runs
the program for real: kamus-init decrypting against a canned decryptor, the encryptor's app
factory, kamus-cli encrypting. An import that crept in (at module level or on the path taken)
fails the test, as it would fail in the lean image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from canned_server import CannedServer, Reply, json_reply, serve
from gunicorn_process import base_environment

HEAVY = ["flask", "werkzeug", "gunicorn", "kubernetes", "prometheus_client", "requests", "urllib3"]
NOT_FOR_INIT = [
    *HEAVY,
    "jwt",
    "cryptography",
    "jinja2",
    "yaml",
    "kamus_kms",
    "kamus_cli",
    "kamus_service",
    "kamus_dev",
    "kamus_decryptor",
    "kamus_encryptor",
]

BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = set({blocked!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed in this image")
        return None
sys.meta_path.insert(0, Blocker())
{body}
"""


def run_blocked(
    blocked: list[str], body: str, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    code = BLOCKER.format(blocked=sorted(blocked), body=body)
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


@pytest.fixture
def decryptor() -> Iterator[CannedServer]:
    server = CannedServer()
    server.otherwise = lambda recorded: json_reply(
        200, {"items": {name: f"plain-{name}" for name in recorded.body["items"]}}
    )
    with serve(server):
        yield server


def run_kamus_init_blocked(
    blocked: list[str], decryptor: CannedServer, tmp_path: Path, output_format: str
) -> subprocess.CompletedProcess[str]:
    """kamus-init over tmp_path/encrypted into tmp_path/out, with ``blocked`` unimportable."""
    token = tmp_path / "token"
    token.write_text("header.payload.signature")
    argv = ["kamus-init", "-e", str(tmp_path / "encrypted"), "-d", str(tmp_path / "out"),
            "-f", output_format]  # fmt: skip
    return run_blocked(
        blocked,
        f"sys.argv = {argv!r}\nrunpy.run_module('kamus_init.main', run_name='__main__')",
        env={
            **os.environ,
            "KAMUS_URL": decryptor.url,
            "TOKEN_FILE_PATH": str(token),
            "NO_PROXY": "127.0.0.1",
        },
    )


@pytest.mark.parametrize("output_format", ["files", "json", "env", "cfg"])
def test_kamus_init_decrypts_with_only_the_client_and_the_standard_library(
    decryptor: CannedServer, tmp_path: Path, output_format: str
) -> None:
    encrypted = tmp_path / "encrypted"
    encrypted.mkdir()
    for number in range(3):
        (encrypted / f"key{number}").write_text(f"kamus:v2:ciphertext-{number}")
    finished = run_kamus_init_blocked(NOT_FOR_INIT, decryptor, tmp_path, output_format)
    assert finished.returncode == 0, finished.stderr
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == (
        ["key0", "key1", "key2"]
        if output_format == "files"
        else [f"config.{'cfg' if output_format == 'cfg' else output_format}"]
    )


def test_the_blocker_does_block(tmp_path: Path) -> None:
    finished = run_blocked(["yaml"], "import yaml")
    assert finished.returncode != 0
    assert "yaml is not installed in this image" in finished.stderr


def test_kamus_init_yaml_output_needs_only_pyyaml_beyond_the_client(
    decryptor: CannedServer, tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted"
    encrypted.mkdir()
    (encrypted / "key").write_text("kamus:v2:ciphertext")
    blocked = [name for name in NOT_FOR_INIT if name != "yaml"]
    finished = run_kamus_init_blocked(blocked, decryptor, tmp_path, "yaml")
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "out" / "config.yaml").read_text() == "key: plain-key\n"


def test_the_encryptor_starts_and_encrypts_without_kubernetes_or_jwt(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    made = subprocess.run(
        [sys.executable, "-m", "kamus_cli.main", "keyring", "new", str(keyring)],
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0
    scope = {"data": "s3cr3t", "namespace": "team", "service-account": "app"}
    body = (
        "from kamus_encryptor import create_app\n"
        f"answer = create_app().test_client().post('/api/v1/encrypt', json={scope!r})\n"
        "print(answer.status_code, answer.get_data(as_text=True)[:6])\n"
    )
    finished = run_blocked(
        ["kubernetes", "jwt", "kamus_decryptor", "kamus_dev", "kamus_init", "kamus_cli"],
        body,
        # The services refuse KAMUS_* variables they do not know (the test runner sets some).
        env=base_environment({"KAMUS_KEYRING": keyring.read_text()}),
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines()[-1] == "200 kamus:"


def test_kamus_cli_encrypt_needs_neither_kubernetes_nor_the_services(tmp_path: Path) -> None:
    server = CannedServer()
    server.queue(Reply(200, "kamus:v2:sealed"))
    with serve(server):
        argv = [
            "kamus-cli",
            "encrypt",
            "-s",
            "s3cr3t",
            "-n",
            "team",
            "-a",
            "app",
            "-u",
            server.url,
            "--allow-insecure-url",
        ]
        finished = run_blocked(
            [
                *HEAVY,
                "jwt",
                "jinja2",
                "kamus_service",
                "kamus_dev",
                "kamus_decryptor",
                "kamus_encryptor",
                "kamus_init",
            ],
            f"sys.argv = {argv!r}\nrunpy.run_module('kamus_cli.main', run_name='__main__')",
            env={**os.environ, "NO_PROXY": "127.0.0.1"},
        )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "kamus:v2:sealed\n"
    assert json.loads(json.dumps(server.requests[0].body))["data"] == "s3cr3t"
