"""kamus-init's flags and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from kamus_client.errors import InputError
from kamus_init import credentials
from kamus_init.main import main
from kamus_init.settings import load_settings

URL = "http://kamus-decryptor.kamus.svc.cluster.local/"


def test_defaults_match_kamus_and_our_safety_choices() -> None:
    settings = load_settings(["-e", "/enc", "-d", "/dec"], {"KAMUS_URL": URL})

    assert settings.output_format == "json"
    assert settings.decrypted_file_name == "config.json"
    assert settings.file_mode == 0o400
    assert settings.deadline == 60
    assert settings.kamus_url == URL.rstrip("/")


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, "KAMUS_URL is not set"),
        ({"KAMUS_URL": "kamus-decryptor"}, "http:// or https://"),
    ],
)
def test_unusable_environment_is_an_input_error(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        load_settings(["-e", "/enc", "-d", "/dec"], environ)


@pytest.mark.parametrize("name", ["../config.json", "sub/config.json", ".config.json", ""])
def test_decrypted_file_name_must_be_a_plain_visible_name(name: str) -> None:
    with pytest.raises(InputError, match="decrypted-file-name"):
        load_settings(["-e", "/enc", "-d", "/dec", "-n", name], {"KAMUS_URL": URL})


def test_every_problem_is_reported_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-e", ",", "-d", "/dec", "-n", "../x"], {}) == 3

    err = capsys.readouterr().err
    assert "no input" in err
    assert "KAMUS_URL" in err
    assert "decrypted-file-name" in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["-e", "/enc"], id="no-decrypted-path"),
        pytest.param(["-e", "/enc", "-d", "/dec", "-f", "xml"], id="unknown-format"),
        pytest.param(["-e", "/enc", "-d", "/dec", "-f", "custom"], id="kamus-ejs-custom"),
        pytest.param(["-e", "/enc", "-d", "/dec", "--file-mode", "0999"], id="not-octal"),
        pytest.param(["-e", "/enc", "-d", "/dec", "--file-mode", "4755"], id="setuid"),
        pytest.param(["-e", "/enc", "-d", "/dec", "--timeout", "-1"], id="negative-deadline"),
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv, {"KAMUS_URL": URL})

    assert exited.value.code == 2


@pytest.mark.parametrize("mode", ["0440", "440", "0o600"])
def test_file_mode_is_octal(mode: str) -> None:
    settings = load_settings(["-e", "/e", "-d", "/d", "--file-mode", mode], {"KAMUS_URL": URL})

    assert settings.file_mode == int(mode.removeprefix("0o"), 8)


def test_token_path_prefers_token_file_path(tmp_path: Path) -> None:
    configured = tmp_path / "token"

    assert credentials.token_path({"TOKEN_FILE_PATH": str(configured)}) == configured


def test_token_path_defaults_to_the_kamus_projected_token_never_the_pod_api_token() -> None:
    assert credentials.token_path({}) == Path("/var/run/secrets/kamus/token")
    assert credentials.token_path({"TOKEN_FILE_PATH": " "}) == Path("/var/run/secrets/kamus/token")
