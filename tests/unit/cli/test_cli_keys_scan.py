"""kamus-cli keys scan and keyring retire --scan, on a fixture repository of every file kind."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable
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
    legacy Kamus text, in every kind of file (one inside a binary file); a .git folder to skip."""
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
    result: list[Any] = json.loads(capsys.readouterr().out)["uses"]
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
        ("local", "k1", "team-a", "api"): (2, "decrypt-only", 2),
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
    assert "image.bin" in out
    assert ".git" not in out
    for secret in ("one", "two", "three", "four", "five"):
        assert f" {secret}\n" not in out


def test_uses_exits_10_while_a_key_is_used_and_0_once_it_is_not(
    repository: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _, _ = repository
    assert main(["keys", "scan", str(repo), "--uses", "k1"], {}) == ExitCode.IN_USE
    assert "key 'k1' is still used by 3 ciphertext(s)" in capsys.readouterr().err
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


K1_TEXT = Sealer(LocalKeyringProvider(Keyring.generate("k1"))).seal(b"one", Scope("team-a", "api"))


def _helm_package(path: Path) -> None:
    values = f"db: {K1_TEXT}\n".encode()
    with tarfile.open(path, "w:gz") as package:
        member = tarfile.TarInfo("app/values.yaml")
        member.size = len(values)
        package.addfile(member, io.BytesIO(values))


SCANNABLE: dict[str, Callable[[Path], object]] = {
    "secret-data-base64": lambda path: path.write_text(
        "apiVersion: v1\nkind: Secret\ndata:\n"
        f"  db: {base64.b64encode(K1_TEXT.encode()).decode()}\n"
    ),
    "helm-package-tgz": _helm_package,
    "utf-16-with-bom": lambda path: path.write_bytes(f"db: {K1_TEXT}\n".encode("utf-16")),
    "utf-16-be-without-bom": lambda path: path.write_bytes(f"db: {K1_TEXT}\n".encode("utf-16-be")),
    "utf-16-le-after-an-odd-header": lambda path: path.write_bytes(
        b"\x07" + f"db: {K1_TEXT}\n".encode("utf-16-le")
    ),
    "yaml-continued-in-the-header": lambda path: path.write_text(
        f'db: "{K1_TEXT[:30]}\\\n  {K1_TEXT[30:]}"\n'
    ),
    "yaml-continued-in-the-body": lambda path: path.write_text(
        f'db: "{K1_TEXT[:-9]}\\\r\n    {K1_TEXT[-9:]}"\n'
    ),
    "yaml-continued-after-a-whole-text": lambda path: path.write_text(
        f'db: "{K1_TEXT}\\\n  and more"\n'
    ),
    "followed-by-v2": lambda path: path.write_text(f"db: {K1_TEXT}-v2\n"),
    "inside-a-binary-file": lambda path: path.write_bytes(b"\x89PNG\x00\x01" + K1_TEXT.encode()),
}


@pytest.mark.parametrize("write", SCANNABLE.values(), ids=SCANNABLE.keys())
def test_texts_in_encoded_packed_or_continued_forms_are_found(
    tmp_path: Path, write: Callable[[Path], object], capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "place")
    assert main(["keys", "scan", str(tmp_path), "--output-format", "json"], {}) == ExitCode.OK
    result = json.loads(capsys.readouterr().out)
    assert [(u["key_id"], u["count"]) for u in result["uses"]] == [("k1", 1)]
    assert result["skipped"] == []


def _too_large(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = folder / "huge.yaml"
    with path.open("wb") as stream:
        stream.write(K1_TEXT.encode())
        stream.truncate(16 * 1024 * 1024 + 1)
    return path


def _unreadable_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = folder / "private.yaml"
    path.write_text(f"db: {K1_TEXT}\n")
    opened = Path.open

    def refusing(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing)
    return path


def _unreadable_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = folder / "private"
    path.mkdir()
    (path / "values.yaml").write_text(f"db: {K1_TEXT}\n")
    listed = os.scandir

    def refusing(name: Any = ".") -> Any:
        if Path(name) == path:
            raise PermissionError(13, "Permission denied", str(name))
        return listed(name)

    monkeypatch.setattr(os, "scandir", refusing)
    return path


def _linked_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    elsewhere = folder.parent / f"{folder.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "values.yaml").write_text(f"db: {K1_TEXT}\n")
    (folder / "charts").mkdir()
    path = folder / "charts" / "shared"
    path.symlink_to(elsewhere, target_is_directory=True)
    return path


def _dangling_link(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = folder / "values.yaml"
    path.symlink_to(folder / "gone.yaml")
    return path


def _zip_archive(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = folder / "bundle.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("values.yaml", f"db: {K1_TEXT}\n" * 10)
    return path


UNSEEN: dict[str, Callable[[Path, pytest.MonkeyPatch], Path]] = {
    "file-over-16-mib": _too_large,
    "unreadable-file": _unreadable_file,
    "unreadable-folder": _unreadable_folder,
    "nested-symlinked-folder": _linked_folder,
    "dangling-link": _dangling_link,
    "zip-archive": _zip_archive,
}


@pytest.mark.parametrize("make", UNSEEN.values(), ids=UNSEEN.keys())
def test_every_place_the_scan_cannot_see_is_reported_and_blocks_retire_unless_forced(
    tmp_path: Path,
    make: Callable[[Path, pytest.MonkeyPatch], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    skipped = make(folder, monkeypatch)
    keyring = tmp_path / "keyring.json"
    Keyring.generate("k1").rotate("k2").save(keyring)
    before = keyring.read_bytes()

    assert main(["keys", "scan", str(folder), "--output-format", "json"], {}) == ExitCode.OK
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["uses"] == []
    assert [entry["place"] for entry in result["skipped"]] == [str(skipped)]
    assert all(entry["reason"] for entry in result["skipped"])
    assert f"skipped {skipped}" in captured.err

    assert main(["keys", "scan", str(folder), "--uses", "k1"], {}) == ExitCode.IN_USE
    assert "1 place(s) could not be scanned" in capsys.readouterr().err

    retire = ["keyring", "retire", str(keyring), "k1", "--scan", str(folder)]
    assert main(retire, {}) == ExitCode.IN_USE
    assert "1 place(s) could not be scanned" in capsys.readouterr().err
    assert keyring.read_bytes() == before
    assert main([*retire, "--force"], {}) == ExitCode.OK
    assert K1_TEXT not in capsys.readouterr().out
