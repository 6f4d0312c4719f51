"""kamus-cli encrypt against a canned encryptor on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from canned_server import CannedServer, Reply, error_reply, json_reply

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode
from kamus_client.version import VERSION

CIPHERTEXT = "kamus:v1:team-a:api:k1:local:c2VjcmV0LWJ5dGVz"
SECRET = "s3cret-SENTINEL"


def encrypt_args(url: str, *extra: str) -> list[str]:
    return ["encrypt", "-n", "team-a", "-a", "api", "-u", url, "--allow-insecure-url", *extra]


def test_encrypt_sends_data_namespace_and_service_account_as_json(
    encryptor: CannedServer,
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))

    assert main(encrypt_args(encryptor.url, "-s", SECRET), {}) == ExitCode.OK

    (request,) = encryptor.requests
    assert request.path == "/api/v1/encrypt"
    assert request.body == {"data": SECRET, "namespace": "team-a", "service-account": "api"}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"kamus-cli-{VERSION}"
    assert "Authorization" not in request.headers


def test_stdout_holds_only_the_ciphertext_and_no_output_shows_the_secret(
    encryptor: CannedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT + "\n"))

    main(encrypt_args(encryptor.url, "-s", SECRET), {})

    out, err = capsys.readouterr()
    assert out == CIPHERTEXT + "\n"
    assert SECRET not in err


def test_kamus_url_defaults_to_the_environment(encryptor: CannedServer) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    argv = ["encrypt", "-n", "team-a", "-a", "api", "--allow-insecure-url", "-s", SECRET]

    assert main(argv, {"KAMUS_URL": encryptor.url + "/"}) == ExitCode.OK
    assert encryptor.requests[0].path == "/api/v1/encrypt"


@pytest.mark.parametrize(
    ("piped", "secret"),
    [
        (b"secret\n", "secret"),
        (b"secret", "secret"),
        (b"secret\n\n", "secret\n"),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_stdin_is_read_with_exactly_one_trailing_newline_dropped(
    encryptor: CannedServer, stdin: Callable[[bytes], None], piped: bytes, secret: str
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    stdin(piped)

    assert main(encrypt_args(encryptor.url), {}) == ExitCode.OK
    assert encryptor.requests[0].body["data"] == secret


def test_secret_file_is_sent_byte_for_byte(encryptor: CannedServer, tmp_path: Path) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    secret_file = tmp_path / "secret.txt"
    secret_file.write_bytes(b"line one\nline two\n")

    assert main(encrypt_args(encryptor.url, "-f", str(secret_file)), {}) == ExitCode.OK
    assert encryptor.requests[0].body["data"] == "line one\nline two\n"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(("stdin", b"\xff\xfe\n"), id="stdin-not-utf8"),
        pytest.param(("file", b"\xc3\x28"), id="file-not-utf8"),
        pytest.param(("flag", b"\xff"), id="flag-not-utf8"),
        pytest.param(("stdin", b"\n"), id="stdin-empty"),
        pytest.param(("file", b""), id="file-empty"),
    ],
)
def test_unusable_secret_is_an_input_error_and_nothing_is_sent(
    encryptor: CannedServer,
    stdin: Callable[[bytes], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: tuple[str, bytes],
) -> None:
    kind, raw = source
    extra: list[str] = []
    if kind == "stdin":
        stdin(raw)
    elif kind == "file":
        (tmp_path / "secret").write_bytes(raw)
        extra = ["-f", str(tmp_path / "secret")]
    else:
        # How Python hands a non-UTF-8 argument to the program.
        extra = ["-s", raw.decode("utf-8", "surrogateescape")]

    assert main(encrypt_args(encryptor.url, *extra), {}) == ExitCode.INPUT
    assert encryptor.requests == []
    assert "kamus-cli: error:" in capsys.readouterr().err


def test_missing_secret_file_is_an_input_error(encryptor: CannedServer, tmp_path: Path) -> None:
    argv = encrypt_args(encryptor.url, "-f", str(tmp_path / "absent"))

    assert main(argv, {}) == ExitCode.INPUT


def test_plain_http_url_is_refused_without_allow_insecure_url(
    encryptor: CannedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["encrypt", "-n", "team-a", "-a", "api", "-u", encryptor.url, "-s", SECRET]

    assert main(argv, {}) == ExitCode.INPUT
    assert encryptor.requests == []
    assert "--allow-insecure-url" in capsys.readouterr().err


def test_output_file_gets_the_ciphertext_and_stdout_stays_empty(
    encryptor: CannedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    output = tmp_path / "ciphertext.txt"

    assert main(encrypt_args(encryptor.url, "-s", SECRET, "-o", str(output)), {}) == ExitCode.OK
    assert output.read_text() == CIPHERTEXT
    assert capsys.readouterr().out == ""


def test_existing_output_file_is_kept_without_overwrite(
    encryptor: CannedServer, tmp_path: Path
) -> None:
    output = tmp_path / "ciphertext.txt"
    output.write_text("precious")

    assert main(encrypt_args(encryptor.url, "-s", SECRET, "-o", str(output)), {}) == ExitCode.INPUT
    assert output.read_text() == "precious"
    assert encryptor.requests == []


def test_existing_output_file_is_replaced_with_overwrite(
    encryptor: CannedServer, tmp_path: Path
) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    output = tmp_path / "ciphertext.txt"
    output.write_text("old")

    argv = encrypt_args(encryptor.url, "-s", SECRET, "-o", str(output), "-O")
    assert main(argv, {}) == ExitCode.OK
    assert output.read_text() == CIPHERTEXT


def test_unwritable_output_is_an_output_error(encryptor: CannedServer, tmp_path: Path) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))
    output = tmp_path / "missing-folder" / "ciphertext.txt"

    assert main(encrypt_args(encryptor.url, "-s", SECRET, "-o", str(output)), {}) == ExitCode.OUTPUT


@pytest.mark.parametrize(
    ("reply", "exit_code", "shown"),
    [
        (error_reply(400, "invalid_scope", "namespace is not a name"), ExitCode.REFUSED,
         "namespace is not a name [invalid_scope, HTTP 400]"),
        (error_reply(400, "default_service_account", "refused"), ExitCode.REFUSED,
         "default_service_account"),
        (error_reply(413, "payload_too_large", "too big"), ExitCode.REFUSED, "HTTP 413"),
        (error_reply(429, "rate_limited", "slow down"), ExitCode.REFUSED, "slow down"),
        (Reply(404, "<html>not found</html>", "text/html"), ExitCode.REFUSED, "HTTP 404"),
        (error_reply(503, "unavailable", "KMS down", **{"Retry-After": "5"}),
         ExitCode.UNAVAILABLE, "KMS down"),
        (Reply(500, "boom"), ExitCode.UNAVAILABLE, "HTTP 500"),
        (Reply(200, "<html>hello</html>"), ExitCode.BAD_RESPONSE, "not a Kamus ciphertext"),
        (Reply(302, "", headers={"Location": "https://elsewhere.invalid/"}),
         ExitCode.BAD_RESPONSE, "HTTP 302"),
        (json_reply(200, {"data": CIPHERTEXT}), ExitCode.BAD_RESPONSE, "not a Kamus ciphertext"),
    ],
)  # fmt: skip
def test_server_answers_map_to_documented_exit_codes(
    encryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
    reply: Reply,
    exit_code: ExitCode,
    shown: str,
) -> None:
    encryptor.queue(reply)

    assert main(encrypt_args(encryptor.url, "-s", SECRET), {}) == exit_code
    out, err = capsys.readouterr()
    assert out == ""
    assert shown in err
    assert SECRET not in err
    assert len(encryptor.requests) == 1


def test_connection_refused_is_server_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    assert main(encrypt_args(f"http://127.0.0.1:{closed_port}", "-s", SECRET), {}) == (
        ExitCode.UNAVAILABLE
    )
    assert "cannot connect" in capsys.readouterr().err


def test_slow_server_is_server_unavailable_after_the_timeout(encryptor: CannedServer) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT, delay=1.0))

    argv = encrypt_args(encryptor.url, "-s", SECRET, "--timeout", "0.2")
    assert main(argv, {}) == ExitCode.UNAVAILABLE


def test_a_missing_kamus_url_is_a_configuration_error_exit_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["encrypt", "-n", "ns", "-a", "sa", "-s", "x"], {}) == ExitCode.INPUT
    assert "pass -u/--kamus-url or set KAMUS_URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["encrypt", "-n", "ns", "-a", "sa", "-s", "x", "-f", "y", "-u", "https://k"],
                     id="secret-and-file"),
        pytest.param(["encrypt", "-a", "sa", "-s", "x", "-u", "https://k"], id="no-namespace"),
        pytest.param(["encrypt", "-n", "ns", "-s", "x", "-u", "https://k"], id="no-account"),
        pytest.param(["encrypt", "-n", "ns", "-a", "sa", "-s", "x", "-u", "https://k",
                      "--timeout", "0"], id="zero-timeout"),
        pytest.param([], id="no-command"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv, {})

    assert exited.value.code == ExitCode.USAGE


@pytest.mark.parametrize("url", ["ftp://kamus", "kamus.example.com", "https://kamus/?x=1"])
def test_url_that_is_not_http_is_an_input_error(url: str) -> None:
    argv = ["encrypt", "-n", "ns", "-a", "sa", "-s", SECRET, "-u", url]

    assert main(argv, {}) == ExitCode.INPUT


def test_echo_piped_secret_through_a_real_process(encryptor: CannedServer) -> None:
    encryptor.queue(Reply(body=CIPHERTEXT))

    finished = subprocess.run(
        [sys.executable, "-m", "kamus_cli.main", *encrypt_args(encryptor.url)],
        input=f"{SECRET}\n".encode(),
        capture_output=True,
        env={**os.environ, "NO_PROXY": "127.0.0.1"},
        check=False,
        timeout=60,
    )

    assert finished.returncode == ExitCode.OK
    assert finished.stdout == f"{CIPHERTEXT}\n".encode()
    assert encryptor.requests[0].body["data"] == SECRET
    assert SECRET.encode() not in finished.stderr


@pytest.mark.parametrize(
    ("raw", "kem", "message"),
    [
        (bytes(32), "X25519", "not a usable public key"),  # refused only in the exchange
        (b"\xff" * 1216, "MLKEM768-X25519", "not a valid MLKEM768-X25519 public key"),
    ],
)
def test_an_unusable_sealing_key_file_is_a_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, kem: str, message: str
) -> None:
    key = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    (tmp_path / "bad.pub").write_text(f"kamus-sealing-key:v1:{kem}::{key}\n")
    argv = ["encrypt", "-n", "team-a", "-a", "api", "-s", SECRET,
            "--sealing-key", str(tmp_path / "bad.pub")]  # fmt: skip
    code = main(argv, {})
    err = capsys.readouterr().err
    assert code != ExitCode.OK
    assert message in err
    assert "Traceback" not in err
