"""Kamus CLI 0.3.6's own encrypt flags: accepted, so its scripts keep running, and doing what
Kamus's did where it makes sense here (docs/CLI.md)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from canned_server import CannedServer, Reply

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode

CIPHERTEXT = "kamus:v1:team-a:api:k1:local:c2VjcmV0LWJ5dGVz"
SECRET = "s3cret-SENTINEL"


def kamus_args(url: str, *extra: str) -> list[str]:
    """A Kamus CLI command line: the flags its users' scripts pass."""
    return ["encrypt", "-a", "api", "-n", "team-a", "-u", url, "--allow-insecure-url", *extra]


def test_a_script_passing_every_kamus_flag_runs_and_logs_its_steps_without_the_secret(
    encryptor: CannedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    log = tmp_path / "kamus.log"
    argv = kamus_args(
        encryptor.url, "-f", str(secret_file), "-i", "--secret-file-encoding", "utf8",
        "-v", "--log-flag", "no-colorful", "--log-output", str(log), "--log-encoding", "utf8",
    )  # fmt: skip

    assert main(argv, {}) == ExitCode.OK

    out, err = capsys.readouterr()
    assert out == CIPHERTEXT + "\n"
    assert encryptor.requests[0].body["data"] == SECRET
    logged = log.read_text()
    steps = (
        "Encryption started...",
        "service account: api",
        "namespace: team-a",
        "Successfully encrypted data to api service account in team-a namespace",
    )
    for step in steps:
        assert step in logged
        assert step in err  # -v
    assert SECRET not in logged + err
    assert log.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("encoding", "content", "sent"),
    [
        ("latin1", "pässwörd".encode("latin-1"), "pässwörd"),
        ("UCS2", "pässwörd".encode("utf-16-le"), "pässwörd"),
        ("base64", b"\x00\xffbinary", base64.b64encode(b"\x00\xffbinary").decode()),
        ("base64url", b"\xfb\xff", "-_8"),
        ("hex", b"\x00\xab", "00ab"),
    ],
)
def test_the_secret_file_is_read_in_kamus_s_encodings(
    encryptor: CannedServer, tmp_path: Path, encoding: str, content: bytes, sent: str
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(content)
    argv = kamus_args(encryptor.url, "-f", str(secret_file), "--secret-file-encoding", encoding)

    assert main(argv, {}) == ExitCode.OK
    assert encryptor.requests[0].body["data"] == sent


def test_an_unknown_encoding_is_a_usage_error(encryptor: CannedServer) -> None:
    with pytest.raises(SystemExit) as exited:
        main(kamus_args(encryptor.url, "-s", SECRET, "--secret-file-encoding", "ebcdic"), {})
    assert exited.value.code == ExitCode.USAGE
    assert encryptor.requests == []


def test_a_line_break_in_the_secret_is_warned_about_unless_ignored(
    encryptor: CannedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT), Reply(body=CIPHERTEXT))
    secret = "line-one\nline-two-SENTINEL"

    assert main(kamus_args(encryptor.url, "-s", secret), {}) == ExitCode.OK
    warned = capsys.readouterr().err
    assert "line break at index 8" in warned
    assert "SENTINEL" not in warned

    assert main(kamus_args(encryptor.url, "-s", secret, "--ignore-new-line"), {}) == ExitCode.OK
    assert "line break" not in capsys.readouterr().err
    # Kamus asked before encrypting; kamus-cli encrypts it as it is, never waiting on a prompt.
    assert [request.body["data"] for request in encryptor.requests] == [secret, secret]


@pytest.mark.parametrize("flag", ["--auth-tenant", "--auth-application", "--auth-resource"])
def test_kamus_azure_ad_login_flags_stop_with_what_to_do_instead(
    encryptor: CannedServer, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = kamus_args(encryptor.url, "-s", SECRET, flag, "3f9c1e2a-0000-4000-8000-000000000000")

    assert main(argv, {}) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert f"{flag}: Kamus's Azure AD login is not supported" in err
    assert "without the --auth-* flags" in err
    assert encryptor.requests == []
