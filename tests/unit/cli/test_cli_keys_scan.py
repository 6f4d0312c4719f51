"""kamus-cli keys scan and keyring retire --scan, on a fixture repository of every file kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode
from kamus_kms.keyring import Keyring
from kamus_kms.offline import SealingPrivateKey, seal
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer

KAMUS_LEGACY = "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g=="


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, Path, str]:
    """A repository using k1 (now decrypt-only) and k2 (active) of a keyring, a sealed text, a
    legacy Kamus text, in every kind of file; plus a binary file and a .git folder to skip."""
    first = Keyring.generate("k1")
    second = first.rotate("k2")
    keyring_file = tmp_path / "keyring.json"
    second.save(keyring_file)
    old = Sealer(LocalKeyringProvider(first))
    new = Sealer(LocalKeyringProvider(second))
    sealing = SealingPrivateKey.generate("X25519", "prod").public_key()
    repo = tmp_path / "repo"
    (repo / "charts" / "app").mkdir(parents=True)
    (repo / ".git").mkdir()
    api = Scope("team-a", "api")
    (repo / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\ndata:\n"
        f"  db: {old.seal(b'one', api)}\n  api-key: {new.seal(b'two', api)}\n"
    )
    (repo / "charts" / "app" / "values.yaml").write_text(
        f'app:\n  secrets:\n    token: "{old.seal(b"three", Scope("team-b", "worker"))}"\n'
    )
    (repo / "app.env").write_text(f"# comment\nDB_PASSWORD={new.seal(b'four', api)}\n")
    (repo / "secrets.json").write_text(json.dumps({"x": seal(b"five", api, [sealing])}))
    (repo / "README").write_text(f"legacy: {KAMUS_LEGACY} and not-a-ciphertext kamus:v1:nope\n")
    (repo / "image.bin").write_bytes(b"\x00\x01" + old.seal(b"six", api).encode())
    (repo / ".git" / "packed").write_text(old.seal(b"seven", api))
    return repo, keyring_file, sealing.key_id


def scan_json(repo: Path, keyring: Path, capsys: pytest.CaptureFixture[str]) -> list[Any]:
    argv = ["keys", "scan", str(repo), "--keyring", str(keyring), "--output-format", "json"]
    assert main(argv, {}) == ExitCode.OK
    result: list[Any] = json.loads(capsys.readouterr().out)
    return result


def test_every_file_kind_is_searched_and_reported_per_key_and_scope(
    repository: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keyring, sealing_id = repository
    found = {
        (u["provider"], u["key_id"], u["namespace"], u["service_account"]): (
            u["count"],
            u["state"],
            len(u["places"]),
        )
        for u in scan_json(repo, keyring, capsys)
    }

    assert found == {
        ("local", "k1", "team-a", "api"): (1, "decrypt-only", 1),
        ("local", "k1", "team-b", "worker"): (1, "decrypt-only", 1),
        ("local", "k2", "team-a", "api"): (2, "active", 2),
        ("sealed", sealing_id, "team-a", "api"): (1, "-", 1),
        ("kamus-legacy", "-", "-", "-"): (1, "legacy", 1),
    }


def test_the_table_names_files_and_no_secret(
    repository: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keyring, _ = repository
    assert main(["keys", "scan", str(repo), "--keyring", str(keyring)], {}) == ExitCode.OK
    out = capsys.readouterr().out
    assert "decrypt-only" in out
    assert "configmap.yaml" in out
    assert "image.bin" not in out
    assert ".git" not in out
    for secret in ("one", "two", "three", "four", "five"):
        assert f" {secret}\n" not in out


def test_uses_exits_10_while_a_key_is_used_and_0_once_it_is_not(
    repository: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _, _ = repository
    assert main(["keys", "scan", str(repo), "--uses", "k1"], {}) == ExitCode.IN_USE
    assert "key 'k1' is still used by 2 ciphertext(s)" in capsys.readouterr().err
    assert main(["keys", "scan", str(repo), "--uses", "k9"], {}) == ExitCode.OK


def test_keyring_retire_refuses_while_the_scan_finds_the_key_unless_forced(
    repository: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keyring, _ = repository
    before = keyring.read_text()
    argv = ["keyring", "retire", str(keyring), "k1", "--scan", str(repo)]

    assert main(argv, {}) == ExitCode.IN_USE
    assert "rewrap them first, or pass --force" in capsys.readouterr().err
    assert keyring.read_text() == before

    assert main([*argv, "--force"], {}) == ExitCode.OK
    assert "k1\tretired" in capsys.readouterr().out


def test_nothing_to_scan_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "scan"], {}) == ExitCode.INPUT
    assert "nothing to scan" in capsys.readouterr().err
