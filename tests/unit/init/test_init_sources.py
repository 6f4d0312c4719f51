"""kamus-init reads every visible regular file of the encrypted folders as one ciphertext."""

from __future__ import annotations

from pathlib import Path

import pytest
from canned_server import CannedServer
from configmap_mounts import PREFIX, configmap_folder

from kamus_client.errors import InputError
from kamus_init.main import main
from kamus_init.sources import read_ciphertexts


def test_configmap_symlinks_are_followed_and_hidden_entries_skipped(tmp_path: Path) -> None:
    folder = configmap_folder(tmp_path / "cm", {"key": f"  {PREFIX}value \n"})
    (folder / ".hidden").write_text("not a ciphertext")
    (folder / "nested").mkdir()
    (folder / "nested" / "inner").write_text("not read")

    assert read_ciphertexts([folder]) == {"key": f"{PREFIX}value"}


def test_folders_are_taken_comma_separated_and_repeated(
    tmp_path: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    one = configmap_folder(tmp_path / "one", {"a": PREFIX + "1"})
    two = configmap_folder(tmp_path / "two", {"b": PREFIX + "2"})
    three = configmap_folder(tmp_path / "three", {"c": PREFIX + "3"})

    argv = ["-e", f"{one},{two}", "-e", str(three), "-d", str(decrypted), "-f", "files"]
    assert main(argv, environ) == 0

    assert decryptor.requests[0].body == {
        "items": {"a": PREFIX + "1", "b": PREFIX + "2", "c": PREFIX + "3"}
    }


def test_the_same_folder_named_twice_is_read_once(tmp_path: Path) -> None:
    folder = configmap_folder(tmp_path / "cm", {"key": PREFIX + "x"})

    assert read_ciphertexts([folder, folder]) == {"key": PREFIX + "x"}


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        pytest.param({"one": {"key": "a"}, "two": {"key": "b"}}, "in both", id="same-name"),
        pytest.param({"one": {}}, "no ciphertext", id="no-ciphertext"),
        pytest.param({"one": {"key": " \n"}}, "is empty", id="empty-file"),
    ],
)
def test_unusable_folders_are_input_errors(
    tmp_path: Path, layout: dict[str, dict[str, str]], reason: str
) -> None:
    folders = [configmap_folder(tmp_path / name, data) for name, data in layout.items()]

    with pytest.raises(InputError, match=reason):
        read_ciphertexts(folders)


def test_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot list"):
        read_ciphertexts([tmp_path / "absent"])


def test_dangling_symlink_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "cm"
    folder.mkdir()
    (folder / "key").symlink_to("gone")

    with pytest.raises(InputError, match="cannot read"):
        read_ciphertexts([folder])


def test_folder_problems_exit_3_without_calling_the_decryptor(
    tmp_path: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    assert main(["-e", str(empty), "-d", str(decrypted)], environ) == 3
    assert decryptor.requests == []
    assert list(decrypted.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("db-password: kamus:v1:a\napi.key: 'kamus:v1:b'\n", id="yaml-map"),
        pytest.param('{"db-password": "kamus:v1:a", "api.key": "kamus:v1:b"}', id="json-map"),
        pytest.param(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
            "data:\n  db-password: kamus:v1:a\n  api.key: kamus:v1:b\n",
            id="configmap-manifest",
        ),
    ],
)
def test_encrypted_file_map_is_an_alternative_input(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(content)

    found = read_ciphertexts([], encrypted_files=[path])

    assert found == {"db-password": "kamus:v1:a", "api.key": "kamus:v1:b"}


def test_encrypted_file_and_folders_combine_but_a_name_may_appear_once(tmp_path: Path) -> None:
    folder = configmap_folder(tmp_path / "cm", {"a": "kamus:v1:a"})
    extra = tmp_path / "extra.json"
    extra.write_text('{"b": "kamus:v1:b"}')
    clash = tmp_path / "clash.json"
    clash.write_text('{"a": "kamus:v1:other"}')

    assert read_ciphertexts([folder], encrypted_files=[extra]) == {
        "a": "kamus:v1:a",
        "b": "kamus:v1:b",
    }
    with pytest.raises(InputError, match="'a' is in both"):
        read_ciphertexts([folder], encrypted_files=[clash])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("- a\n- b\n", "non-empty map", id="list"),
        pytest.param("{}", "non-empty map", id="empty"),
        pytest.param("a: 1\n", "must be a string", id="number"),
        pytest.param("a: ' '\n", "is empty", id="blank"),
        pytest.param("a: [unclosed\n", "neither JSON nor YAML", id="broken"),
    ],
)
def test_unusable_encrypted_file_is_an_input_error(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(content)

    with pytest.raises(InputError, match=problem):
        read_ciphertexts([], encrypted_files=[path])


def test_encrypted_file_alone_drives_a_whole_run(
    tmp_path: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(f'{{"DB_PASSWORD": "{PREFIX}hunter2-SENTINEL"}}')

    argv = ["--encrypted-file", str(path), "-d", str(decrypted), "-f", "env"]
    assert main(argv, environ) == 0

    assert decryptor.requests[0].body == {"items": {"DB_PASSWORD": f"{PREFIX}hunter2-SENTINEL"}}
    assert (decrypted / "config.env").read_text() == "DB_PASSWORD=hunter2-SENTINEL\n"


def test_items_come_in_kamus_order_folders_as_given_files_sorted_within(tmp_path: Path) -> None:
    late = configmap_folder(tmp_path / "late", {"zeta": PREFIX + "z", "beta": PREFIX + "b"})
    early = configmap_folder(tmp_path / "early", {"alpha": PREFIX + "a"})

    # Kamus gave zeta, alpha for `-e late,early`: folder order first, then sorted files.
    assert list(read_ciphertexts([late, early])) == ["beta", "zeta", "alpha"]


def test_integer_like_names_come_first_in_numeric_order_as_in_a_javascript_object(
    tmp_path: Path,
) -> None:
    names = ["a", "10", "9", "010", "4294967294", "4294967295", "-1", "1.5", "0"]
    folder = configmap_folder(tmp_path / "cm", {name: PREFIX + name for name in names})

    # Array indices (canonical integers up to 2**32 - 2) first by value; the rest as added.
    assert list(read_ciphertexts([folder])) == [
        "0", "9", "10", "4294967294",
        "-1", "010", "1.5", "4294967295", "a",
    ]  # fmt: skip


def test_the_json_output_follows_kamus_order_end_to_end(
    tmp_path: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    late = configmap_folder(tmp_path / "late", {"zeta": PREFIX + "z", "10": PREFIX + "t"})
    early = configmap_folder(tmp_path / "early", {"alpha": PREFIX + "a", "9": PREFIX + "n"})

    argv = ["-e", f"{late},{early}", "-d", str(decrypted), "-f", "json"]
    assert main(argv, environ) == 0

    text = (decrypted / "config.json").read_text()
    positions = [text.index(f'"{name}":') for name in ("9", "10", "zeta", "alpha")]
    assert positions == sorted(positions)
