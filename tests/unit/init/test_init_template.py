"""kamus-init -f template: a sandboxed Jinja2 template, the equivalent of Kamus's EJS custom."""

from __future__ import annotations

from pathlib import Path

import pytest
from canned_server import CannedServer
from configmap_mounts import PREFIX, configmap_folder

from kamus_client.exitcodes import ExitCode
from kamus_init.main import main

KAMUS = Path(__file__).parent / "kamus_fixtures"


def template_args(folder: Path, decrypted: Path, template: Path, *extra: str) -> list[str]:
    return ["-e", str(folder), "-d", str(decrypted), "-f", "template", "--template", str(template),
            *extra]  # fmt: skip


@pytest.fixture
def kamus_folder(tmp_path: Path) -> Path:
    """The ConfigMap of Kamus's own init-container test (key1 and key2)."""
    return configmap_folder(
        tmp_path / "cm",
        {"key1": PREFIX + "super-secret-from-value", "key2": PREFIX + "super-secret"},
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_translated_kamus_custom_template_writes_kamus_expected_output(
    kamus_folder: Path, decrypted: Path, environ: dict[str, str]
) -> None:
    argv = template_args(kamus_folder, decrypted, KAMUS / "template.j2", "-n", "out.txt")

    assert main(argv, environ) == 0

    assert (decrypted / "out.txt").read_bytes() == (KAMUS / "expected-custom.txt").read_bytes()
    assert (decrypted / "out.txt").stat().st_mode & 0o777 == 0o400


def test_template_filters_loops_and_default_name_from_the_template_suffix(
    kamus_folder: Path, decrypted: Path, environ: dict[str, str], tmp_path: Path
) -> None:
    template = write(
        tmp_path / "app.properties.j2",
        "{% for name, value in secrets.items() %}{{ name }}={{ value | shell_quote }}\n"
        "{% endfor %}json={{ secrets | json }}\n",
    )

    assert main(template_args(kamus_folder, decrypted, template), environ) == 0

    assert (decrypted / "app.properties").read_text() == (
        "key1=super-secret-from-value\nkey2=super-secret\n"
        'json={"key1": "super-secret-from-value", "key2": "super-secret"}\n'
    )


def test_template_inside_the_encrypted_folder_is_not_taken_as_a_ciphertext(
    tmp_path: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    folder = configmap_folder(
        tmp_path / "cm", {"key1": PREFIX + "v1-SENTINEL", "app.conf.j2": "key1={{ secrets.key1 }}"}
    )

    assert main(template_args(folder, decrypted, folder / "app.conf.j2"), environ) == 0

    assert decryptor.requests[0].body == {"items": {"key1": PREFIX + "v1-SENTINEL"}}
    assert (decrypted / "app.conf").read_text() == "key1=v1-SENTINEL"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        pytest.param("{{ ''.__class__ }}", "stopped by the sandbox", id="dunder-attribute"),
        pytest.param(
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "stopped by the sandbox",
            id="subclasses-walk",
        ),
        pytest.param("{{ secrets.update({}) }}", "stopped by the sandbox", id="mutation"),
        pytest.param("{{ cycler.__init__.__globals__ }}", "sandbox", id="globals"),
        pytest.param("{{ missing }}", "uses something undefined", id="undefined-name"),
        pytest.param("{{ secrets.nope }}", "uses something undefined", id="undefined-key"),
        pytest.param("{% include '/etc/passwd' %}", "failed", id="include"),
        pytest.param("{{ secrets.key1 | int + 'x' }}", "failed", id="python-error"),
    ],
)
def test_template_that_breaks_the_rules_fails_clearly_and_writes_nothing(
    kamus_folder: Path,
    decrypted: Path,
    environ: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: str,
    problem: str,
) -> None:
    template = write(tmp_path / "bad.j2", "line one\n" + source)

    assert main(template_args(kamus_folder, decrypted, template), environ) == ExitCode.INPUT

    assert list(decrypted.iterdir()) == []
    err = capsys.readouterr().err
    assert problem in err
    assert "line 2" in err or "include" in source
    assert "super-secret" not in err


def test_error_message_that_would_quote_a_plaintext_is_replaced_by_its_type(
    kamus_folder: Path,
    decrypted: Path,
    environ: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    template = write(tmp_path / "leak.j2", "{{ secrets[secrets.key1] }}")

    assert main(template_args(kamus_folder, decrypted, template), environ) == ExitCode.INPUT

    err = capsys.readouterr().err
    assert "UndefinedError" in err
    assert "super-secret" not in err


def test_template_syntax_error_is_reported_before_any_decrypt_call(
    kamus_folder: Path,
    decrypted: Path,
    environ: dict[str, str],
    tmp_path: Path,
    decryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    template = write(tmp_path / "broken.j2", "ok\n{% for x in %}")

    assert main(template_args(kamus_folder, decrypted, template), environ) == ExitCode.INPUT

    assert decryptor.requests == []
    assert "syntax error at line 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        pytest.param(["-f", "template"], "-f template needs --template FILE", id="no-template"),
        pytest.param(["--template", "t.j2"], "only used with -f template", id="no-format"),
        pytest.param(["-f", "template", "--template", "missing.j2"], "cannot read the template",
                     id="missing"),
        pytest.param(["-f", "template", "--template", "plain.txt"], "-n/--decrypted-file-name is",
                     id="no-j2-suffix"),
    ],
)  # fmt: skip
def test_template_settings_problems_are_input_errors(
    kamus_folder: Path,
    decrypted: Path,
    environ: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    problem: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "plain.txt", "x")
    write(tmp_path / "t.j2", "x")

    assert main(["-e", str(kamus_folder), "-d", str(decrypted), *argv], environ) == 3
    assert problem in capsys.readouterr().err


def test_kamus_ejs_custom_format_points_to_the_template_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["-e", "/enc", "-d", "/dec", "-f", "custom"], {})

    assert exited.value.code == ExitCode.USAGE
    assert "-f template --template FILE" in capsys.readouterr().err


def test_a_failing_template_never_quotes_a_value_derived_from_a_secret(
    decrypted: Path, environ: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = configmap_folder(tmp_path / "cm2", {"cfg": PREFIX + '{"password": "hunter2-S3CRET"}'})
    template = write(
        tmp_path / "t.j2", "{% set c = secrets.cfg | from_json %}{{ secrets[c.password] }}"
    )
    assert main(template_args(folder, decrypted, template), environ) != 0
    assert "hunter2" not in capsys.readouterr().err
    assert list(decrypted.iterdir()) == []
