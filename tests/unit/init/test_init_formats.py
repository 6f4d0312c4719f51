"""kamus-init's output formats, byte for byte: Kamus's own expected outputs, env, yaml."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml
from canned_server import CannedServer
from configmap_mounts import PREFIX, configmap_folder

from kamus_client.errors import InputError
from kamus_client.exitcodes import ExitCode
from kamus_init.formats import (
    OutputSpec,
    render_cfg,
    render_cfg_strict,
    render_env,
    render_files,
    render_json,
    render_yaml,
)
from kamus_init.main import main

KAMUS = Path(__file__).parent / "kamus_fixtures"
# What Kamus's WireMock decryptor answered for each encrypted file, in the order Kamus listed
# them when it wrote its expected outputs.
KAMUS_PLAINTEXTS = {
    "key.json": '{"secret_key": "secret_value"}',
    "key-newlines.json": '{"secret_key": "secret_value\\nsecret_value"}',
    "key1": "super-secret-from-value",
    "key2": "super-secret",
}
Render = Callable[[Mapping[str, str], OutputSpec], dict[str, bytes]]


def kamus_items(*names: str) -> dict[str, str]:
    return {name: KAMUS_PLAINTEXTS[name] for name in names}


@pytest.mark.parametrize(
    ("render", "names", "expected"),
    [
        (render_json, ("key.json", "key1", "key2"), "expected.json"),
        (render_cfg, ("key.json", "key1", "key2"), "expected.cfg"),
        (render_cfg_strict, tuple(KAMUS_PLAINTEXTS), "expected-strict.cfg"),
    ],
    ids=["json", "cfg", "cfg-strict"],
)
def test_format_writes_the_bytes_of_kamus_expected_output(
    render: Render, names: tuple[str, ...], expected: str
) -> None:
    files = render(kamus_items(*names), OutputSpec(file_name="out"))

    assert files == {"out": (KAMUS / expected).read_bytes()}


def test_the_older_kamus_json_layout_parses_to_the_same_document() -> None:
    ours = render_json(kamus_items("key.json", "key1", "key2"), OutputSpec(file_name="out"))
    older = (KAMUS / "expected-1.2.json").read_bytes()
    assert ours["out"] != older
    assert json.loads(ours["out"]) == json.loads(older)


def test_files_format_compacts_json_plaintexts_like_kamus_and_keeps_others_exact() -> None:
    plaintexts = {"key.json": KAMUS_PLAINTEXTS["key.json"], "pem": "-----BEGIN-----\nAA==\n"}

    files = render_files(plaintexts, OutputSpec(file_name="unused"))

    assert files == {
        "key.json": b'{"secret_key":"secret_value"}',
        "pem": b"-----BEGIN-----\nAA==\n",
    }


@pytest.mark.parametrize(
    ("plaintext", "line"),
    [
        pytest.param("123", "k=123\n", id="number-unquoted"),
        pytest.param("1.50", "k=1.50\n", id="number-keeps-its-spelling"),
        pytest.param("true", "k=true\n", id="boolean-unquoted"),
        pytest.param("null", "k=null\n", id="null-unquoted"),
        pytest.param('"quoted"', 'k="quoted"\n', id="json-string-quoted-once"),
        pytest.param("[1, 2]", "k=[1,2]\n", id="array-compacted"),
        pytest.param("NaN", 'k="NaN"\n', id="not-json-for-javascript"),
        pytest.param("a b", 'k="a b"\n', id="string-quoted"),
    ],
)
def test_cfg_strict_types_values_as_kamus_did(plaintext: str, line: str) -> None:
    files = render_cfg_strict({"k": plaintext}, OutputSpec(file_name="out"))

    assert files["out"].decode() == line


def test_json_format_escapes_what_kamus_left_raw_and_stays_valid_json() -> None:
    plaintexts = {"quote": 'say "hi"\n', "number": "1.50", "null": "null", "unicode": "pässwörd"}

    text = render_json(plaintexts, OutputSpec(file_name="out"))["out"].decode()

    assert text == (
        '{ \n    "quote":"say \\"hi\\"\\n",\n    "number":"1.50",\n    "null":"null",\n'
        '    "unicode":"pässwörd"\n}'
    )
    assert json.loads(text) == plaintexts


def test_json_of_no_item_is_kamus_empty_object() -> None:
    assert render_json({}, OutputSpec(file_name="out")) == {"out": b"{ \n}"}


ENV_CASES = {
    "BARE": "user@example.com:5432/db,x=y+z%.-_",
    "SPACE": "two words",
    "QUOTE": "it's",
    "DOLLAR": "$HOME `id` $(id) \\n",
    "HASH": "#not-a-comment",
    "TAB": "a\tb",
    "UNICODE": "pässwörd",
    "EMPTY": "",
    "TILDE": "~root",
    "GLOB": "*",
}


def test_env_format_writes_bare_or_single_quoted_lines() -> None:
    files = render_env(ENV_CASES, OutputSpec(file_name="app.env"))

    assert files["app.env"].decode() == (
        "BARE=user@example.com:5432/db,x=y+z%.-_\n"
        "SPACE='two words'\n"
        "QUOTE='it'\\''s'\n"
        "DOLLAR='$HOME `id` $(id) \\n'\n"
        "HASH='#not-a-comment'\n"
        "TAB='a\tb'\n"
        "UNICODE='pässwörd'\n"
        "EMPTY=\n"
        "TILDE='~root'\n"
        "GLOB='*'\n"
    )


def test_env_file_sourced_by_bash_gives_back_every_value_exactly(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_bytes(render_env(ENV_CASES, OutputSpec(file_name="app.env"))["app.env"])

    finished = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; env -0', "bash", str(path)],
        capture_output=True,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"},
        check=True,
        cwd=tmp_path,
        timeout=30,
    )

    seen = dict(entry.split("=", 1) for entry in finished.stdout.decode().split("\0") if entry)
    assert {name: seen.get(name) for name in ENV_CASES} == ENV_CASES


def docker_env_file(text: str) -> dict[str, str]:
    """docker's --env-file rules (docker/cli opts/envfile.go): one NAME=VALUE per line, the value
    verbatim (no quote removal), leading whitespace dropped, blank and # lines skipped."""
    variables = {}
    for raw in text.split("\n"):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        assert not re.search(r"\s", name), f"docker refuses the line {line!r}"
        variables[name] = value
    return variables


def test_env_file_read_by_docker_rules_has_one_variable_per_item_and_bare_values_exact() -> None:
    text = render_env(ENV_CASES, OutputSpec(file_name="app.env"))["app.env"].decode()

    seen = docker_env_file(text)

    assert list(seen) == list(ENV_CASES)
    assert seen["BARE"] == ENV_CASES["BARE"]
    assert seen["EMPTY"] == ""
    # Quoted values keep their quotes in docker: the documented limit of docker's format.
    assert seen["SPACE"] == "'two words'"


@pytest.mark.parametrize(
    "value", ["-----BEGIN KEY-----\nAA==\n", "a\rb", "bell\a"], ids=["newline", "cr", "control"]
)
def test_env_format_refuses_values_that_cannot_stay_on_one_line(value: str) -> None:
    with pytest.raises(InputError, match="KEY holds a line break or control character") as info:
        render_env({"KEY": value}, OutputSpec(file_name="app.env"))

    assert value not in str(info.value)


@pytest.mark.parametrize("name", ["db-password", "api.key", "1ST", "with space", ""])
def test_env_format_refuses_names_that_are_not_environment_variable_names(name: str) -> None:
    with pytest.raises(InputError, match="cannot be environment variable names"):
        render_env({"OK": "x", name: "y"}, OutputSpec(file_name="app.env"))


def test_yaml_format_keeps_every_value_a_string_and_round_trips() -> None:
    plaintexts = {
        "port": "5432",
        "flag": "yes",
        "none": "null",
        "pem": "-----BEGIN-----\nAA==\n",
        "quote": 'it\'s: "x"',
        "long": "x" * 200,
    }

    text = render_yaml(plaintexts, OutputSpec(file_name="out.yaml"))["out.yaml"].decode()

    assert yaml.safe_load(text) == plaintexts
    assert text.startswith("port: '5432'\nflag: 'yes'\nnone: 'null'\n")
    assert "x" * 200 in text


@pytest.mark.parametrize(
    ("output_format", "file_name", "content"),
    [
        ("cfg", "config.cfg", 'api.key=abc-SENTINEL\nkey.json={"a":1}\n'),
        ("cfg-strict", "config.cfg", 'api.key="abc-SENTINEL"\nkey.json={"a":1}\n'),
        ("yaml", "config.yaml", "api.key: abc-SENTINEL\nkey.json: '{\"a\": 1}'\n"),
        ("json", "config.json", '{ \n    "api.key":"abc-SENTINEL",\n    "key.json":{"a":1}\n}'),
    ],
)
def test_single_file_formats_write_their_default_file_with_mode_0400(
    tmp_path: Path,
    decrypted: Path,
    environ: dict[str, str],
    output_format: str,
    file_name: str,
    content: str,
) -> None:
    folder = configmap_folder(
        tmp_path / "cm", {"api.key": PREFIX + "abc-SENTINEL", "key.json": PREFIX + '{"a": 1}'}
    )

    assert main(["-e", str(folder), "-d", str(decrypted), "-f", output_format], environ) == 0

    (written,) = decrypted.iterdir()
    assert written.name == file_name
    assert written.read_text() == content
    assert written.stat().st_mode & 0o777 == 0o400


def test_env_format_with_an_invalid_name_writes_nothing_and_exits_3(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["-e", str(encrypted), "-d", str(decrypted), "-f", "env"]

    assert main(argv, environ) == ExitCode.INPUT

    assert list(decrypted.iterdir()) == []
    err = capsys.readouterr().err
    assert "'api.key', 'db-password' cannot be environment variable names" in err
    assert "SENTINEL" not in err


INJECTING = {
    "cfg": ["ok\nadmin=true", "ok\r\nadmin=true", "ok\u2028admin=true", "ok\x85admin=true"],
    "cfg-strict": ["ok\nadmin=true", 'ok"\nadmin="true', 'ok" admin="true', "ok\\"],
}


@pytest.mark.parametrize(
    ("output_format", "value"),
    [(fmt, value) for fmt, values in INJECTING.items() for value in values],
)
def test_a_cfg_value_that_would_add_keys_is_refused_naming_the_item_not_the_value(
    tmp_path: Path,
    decrypted: Path,
    environ: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    output_format: str,
    value: str,
) -> None:
    folder = configmap_folder(tmp_path / "cm", {"greeting": PREFIX + "SENTINEL-" + value})

    assert main(["-e", str(folder), "-d", str(decrypted), "-f", output_format], environ) == 3

    assert list(decrypted.iterdir()) == []
    err = capsys.readouterr().err
    assert "the value of 'greeting' holds a" in err
    assert "--raw-cfg-values" in err
    assert "SENTINEL" not in err


@pytest.mark.parametrize(
    ("output_format", "line"),
    [("cfg", "greeting=SENTINEL-ok\nadmin=true\n"),
     ("cfg-strict", 'greeting="SENTINEL-ok"\nadmin="true"\n')],
)  # fmt: skip
def test_raw_cfg_values_are_written_as_kamus_did(
    tmp_path: Path, decrypted: Path, environ: dict[str, str], output_format: str, line: str
) -> None:
    value = INJECTING[output_format][0 if output_format == "cfg" else 1]
    folder = configmap_folder(tmp_path / "cm", {"greeting": PREFIX + "SENTINEL-" + value})
    argv = ["-e", str(folder), "-d", str(decrypted), "-f", output_format, "--raw-cfg-values"]

    assert main(argv, environ) == 0

    assert (decrypted / "config.cfg").read_text() == line


@pytest.mark.parametrize(
    "value", ["a\x85EVIL=1", "a\u2028EVIL=1", "a\u2029EVIL=1", "a\ufeffb", " \x85 "]
)
def test_yaml_format_reads_back_unicode_line_breaks_exactly(value: str) -> None:
    plaintexts = {"key": value, "other": "plain"}

    text = render_yaml(plaintexts, OutputSpec(file_name="out.yaml"))["out.yaml"].decode()

    assert yaml.safe_load(text) == plaintexts
    assert text.endswith("other: plain\n")


@pytest.mark.parametrize("value", ["a\xa0b", "a\u3000b", "caf\xe9 \u2003x"])
def test_env_format_writes_unicode_spaces_single_quoted(value: str) -> None:
    text = render_env({"KEY": value}, OutputSpec(file_name="app.env"))["app.env"].decode()

    assert text == f"KEY='{value}'\n"


@pytest.mark.parametrize("output_format", ["cfg", "cfg-strict"])
@pytest.mark.parametrize("name", ["a\nadmin", "a\radmin", "a=admin", "a\u2028admin", "#a", "[a]"])
def test_a_cfg_name_from_an_encrypted_file_that_would_add_keys_is_refused(
    tmp_path: Path,
    decrypted: Path,
    environ: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    output_format: str,
    name: str,
) -> None:
    source = tmp_path / "secrets.json"
    source.write_text(json.dumps({"ok": PREFIX + "fine", name: PREFIX + "SENTINEL"}))
    argv = ["--encrypted-file", str(source), "-d", str(decrypted), "-f", output_format]

    assert main(argv, environ) == ExitCode.INPUT
    assert main([*argv, "--raw-cfg-values"], environ) == ExitCode.INPUT

    assert list(decrypted.iterdir()) == []
    err = capsys.readouterr().err
    assert "cannot be cfg names" in err
    assert "SENTINEL" not in err


DEEP_JSON = {
    "array": "[" * 3000 + "]" * 3000,
    "object": '{"a":' * 1200 + "1" + "}" * 1200,
}


@pytest.mark.parametrize("output_format", ["files", "json", "cfg", "cfg-strict"])
@pytest.mark.parametrize("plaintext", DEEP_JSON.values(), ids=DEEP_JSON.keys())
def test_a_deeply_nested_json_plaintext_is_a_clear_input_error(
    tmp_path: Path,
    decrypted: Path,
    environ: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    output_format: str,
    plaintext: str,
) -> None:
    folder = configmap_folder(tmp_path / "cm", {"deep": PREFIX + plaintext})

    assert main(["-e", str(folder), "-d", str(decrypted), "-f", output_format], environ) == 3

    assert list(decrypted.iterdir()) == []
    err = capsys.readouterr().err
    assert "the value of 'deep' is JSON nested too deeply" in err
    assert "bug" not in err
    assert "[[" not in err
