"""kamus-init writes files or json, mode 0400, atomically, after one batch decrypt."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from canned_server import CannedServer
from configmap_mounts import PREFIX, configmap_folder

from kamus_init.main import main


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_format_writes_one_file_per_item_with_mode_0400(
    encrypted: Path, decrypted: Path, environ: dict[str, str]
) -> None:
    argv = ["-e", str(encrypted), "-d", str(decrypted), "-f", "files"]

    assert main(argv, environ) == 0

    assert sorted(p.name for p in decrypted.iterdir()) == ["api.key", "db-password"]
    assert (decrypted / "db-password").read_text() == "hunter2-SENTINEL"
    assert (decrypted / "api.key").read_text() == "abc-SENTINEL"
    assert {mode_of(p) for p in decrypted.iterdir()} == {0o400}


def test_json_format_is_the_default_and_writes_config_json_with_mode_0400(
    encrypted: Path, decrypted: Path, environ: dict[str, str]
) -> None:
    assert main(["-e", str(encrypted), "-d", str(decrypted)], environ) == 0

    (output,) = decrypted.iterdir()
    assert output.name == "config.json"
    assert mode_of(output) == 0o400
    assert json.loads(output.read_text()) == {
        "api.key": "abc-SENTINEL",
        "db-password": "hunter2-SENTINEL",
    }


def test_json_output_is_laid_out_like_kamus_nests_objects_and_escapes_strings(
    tmp_path: Path, decrypted: Path, environ: dict[str, str]
) -> None:
    folder = configmap_folder(
        tmp_path / "cm",
        {"key.json": PREFIX + '{"secret_key": "secret_value"}', "key1": PREFIX + 'say "hi"'},
    )

    assert main(["-e", str(folder), "-d", str(decrypted), "-n", "app.json"], environ) == 0

    text = (decrypted / "app.json").read_text()
    assert text == '{ \n    "key.json":{"secret_key":"secret_value"},\n    "key1":"say \\"hi\\""\n}'
    assert json.loads(text) == {"key.json": {"secret_key": "secret_value"}, "key1": 'say "hi"'}


@pytest.mark.parametrize("file_format", ["files", "json", "JSON"])
def test_file_mode_flag_sets_the_mode_of_every_output(
    encrypted: Path, decrypted: Path, environ: dict[str, str], file_format: str
) -> None:
    argv = ["-e", str(encrypted), "-d", str(decrypted), "-f", file_format, "--file-mode", "0440"]

    assert main(argv, environ) == 0
    assert {mode_of(p) for p in decrypted.iterdir()} == {0o440}


def test_missing_decrypted_path_is_created(
    encrypted: Path, tmp_path: Path, environ: dict[str, str]
) -> None:
    target = tmp_path / "new" / "folder"

    assert main(["-e", str(encrypted), "-d", str(target), "-f", "files"], environ) == 0
    assert (target / "db-password").read_text() == "hunter2-SENTINEL"


def test_rerun_replaces_earlier_read_only_outputs(
    encrypted: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    argv = ["-e", str(encrypted), "-d", str(decrypted), "-f", "files"]

    assert main(argv, environ) == 0
    assert main(argv, environ) == 0
    assert sorted(p.name for p in decrypted.iterdir()) == ["api.key", "db-password"]
    assert len(decryptor.requests) == 2


def test_output_failure_writes_nothing_and_leaves_no_temp_files(
    encrypted: Path, decrypted: Path, environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    (decrypted / "db-password").mkdir()  # a directory where one output must go

    assert main(["-e", str(encrypted), "-d", str(decrypted), "-f", "files"], environ) == 4
    assert [p.name for p in decrypted.iterdir()] == ["db-password"]
    assert "SENTINEL" not in capsys.readouterr().err


def test_unwritable_output_folder_writes_nothing(
    encrypted: Path, decrypted: Path, environ: dict[str, str]
) -> None:
    target = decrypted / "file"
    target.write_text("not a folder")

    assert main(["-e", str(encrypted), "-d", str(target / "sub")], environ) == 4
    assert target.read_text() == "not a folder"
