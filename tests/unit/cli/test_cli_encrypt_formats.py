"""kamus-cli encrypt --output-format and --env-file, and the .env rules it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from canned_server import CannedServer, Recorded, Reply

from kamus_cli.envfile import parse_env
from kamus_cli.main import main
from kamus_client.errors import InputError
from kamus_client.exitcodes import ExitCode

CIPHERTEXT = "kamus:v1:local:team-a:api:k1:c2VjcmV0LWJ5dGVz"


def encrypt_args(url: str, *extra: str) -> list[str]:
    return ["encrypt", "-n", "team-a", "-a", "api", "-u", url, "--allow-insecure-url", *extra]


def sealed(recorded: Recorded) -> Reply:
    """Answer a ciphertext that names the secret's length, so each key gets its own."""
    return Reply(body=f"{CIPHERTEXT}{len(recorded.body['data'])}")


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """A .env file with two values, one quoted."""
    path = tmp_path / "app.env"
    path.write_text("# app secrets\nDB_PASSWORD=hunter2-SENTINEL\nexport API_KEY='a b c'\n")
    return path


@pytest.mark.parametrize(
    ("output_format", "parse"),
    [("json", json.loads), ("yaml", yaml.safe_load)],
)
def test_single_secret_in_json_or_yaml_is_the_encryptor_json_answer(
    encryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
    output_format: str,
    parse: object,
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))

    argv = encrypt_args(encryptor.url, "-s", "x", "--output-format", output_format)
    assert main(argv, {}) == ExitCode.OK

    out = capsys.readouterr().out
    assert callable(parse)
    assert parse(out) == {"data": CIPHERTEXT, "namespace": "team-a", "service-account": "api"}


@pytest.mark.parametrize(
    ("output_format", "expected"),
    [
        ("text", f"DB_PASSWORD={CIPHERTEXT}16\nAPI_KEY={CIPHERTEXT}5\n"),
        ("json", f'{{\n  "DB_PASSWORD": "{CIPHERTEXT}16",\n  "API_KEY": "{CIPHERTEXT}5"\n}}\n'),
        ("yaml", f"DB_PASSWORD: {CIPHERTEXT}16\nAPI_KEY: {CIPHERTEXT}5\n"),
    ],
)
def test_env_file_gives_one_ciphertext_per_key_in_the_chosen_format(
    encryptor: CannedServer,
    env_file: Path,
    capsys: pytest.CaptureFixture[str],
    output_format: str,
    expected: str,
) -> None:
    encryptor.otherwise = sealed

    argv = encrypt_args(
        encryptor.url, "--env-file", str(env_file), "--output-format", output_format
    )
    assert main(argv, {}) == ExitCode.OK

    out, err = capsys.readouterr()
    assert out == expected
    assert [r.body["data"] for r in encryptor.requests] == ["hunter2-SENTINEL", "a b c"]
    assert "SENTINEL" not in err
    assert "encrypted 2 secret(s)" in err


def test_env_file_output_file_gets_the_map_with_a_final_newline(
    encryptor: CannedServer, env_file: Path, tmp_path: Path
) -> None:
    encryptor.otherwise = sealed
    output = tmp_path / "secrets.yaml"

    argv = encrypt_args(encryptor.url, "--env-file", str(env_file), "--output-format", "yaml",
                        "-o", str(output))  # fmt: skip
    assert main(argv, {}) == ExitCode.OK

    assert yaml.safe_load(output.read_text()) == {
        "DB_PASSWORD": f"{CIPHERTEXT}16",
        "API_KEY": f"{CIPHERTEXT}5",
    }
    assert output.read_text().endswith("5\n")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("", "holds no KEY=value", id="empty-file"),
        pytest.param("A=\n", "the value of A is empty", id="empty-value"),
        pytest.param("A=1\nA=2\n", "line 2: A is given twice", id="duplicate"),
        pytest.param("just text\n", "line 1: expected KEY=value", id="no-equals"),
        pytest.param("A='open\n", "the value of A has no closing '", id="unclosed"),
    ],
)
def test_unusable_env_file_is_an_input_error_and_nothing_is_sent(
    encryptor: CannedServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    problem: str,
) -> None:
    path = tmp_path / "bad.env"
    path.write_text(content)

    assert main(encrypt_args(encryptor.url, "--env-file", str(path)), {}) == ExitCode.INPUT

    assert encryptor.requests == []
    assert problem in capsys.readouterr().err


def test_env_file_rules_quotes_escapes_comments_and_export() -> None:
    text = (
        "\ufeff# comment\n"
        "\n"
        "PLAIN = value with spaces   # trailing comment\n"
        "HASH=a#b\n"
        "export EXPORTED=yes\n"
        "SINGLE='literal \\n $HOME \"q\"'\n"
        'DOUBLE="line1\\nline2 \\"q\\" \\$HOME \\\\ \\x"\n'
        "MULTI='first\n"
        "second'  # after\n"
        "DOTTED.key-name=ok\r\n"
        "URL=postgres://u:p@h/db?x=1\n"
    )

    assert parse_env(text, "test.env") == {
        "PLAIN": "value with spaces",
        "HASH": "a#b",
        "EXPORTED": "yes",
        "SINGLE": 'literal \\n $HOME "q"',
        "DOUBLE": 'line1\nline2 "q" $HOME \\ \\x',
        "MULTI": "first\nsecond",
        "DOTTED.key-name": "ok",
        "URL": "postgres://u:p@h/db?x=1",
    }


def test_env_file_error_names_the_line_and_key_but_never_the_value() -> None:
    with pytest.raises(InputError) as info:
        parse_env("A=1\nB='hunter2-SENTINEL\n", "x.env")

    assert "x.env, line 2" in str(info.value)
    assert "SENTINEL" not in str(info.value)


def test_env_file_excludes_the_other_secret_sources(env_file: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(encrypt_args("http://127.0.0.1:9", "--env-file", str(env_file), "-s", "x"), {})

    assert exited.value.code == ExitCode.USAGE
