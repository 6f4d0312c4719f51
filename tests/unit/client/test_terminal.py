"""Text a server sends reaches kamus-cli's and kamus-init's stderr with its control, format and
line-separator characters escaped, as kamus-audit escapes audit records: a reason phrase, an
error message or code, a proxy's answer cannot clear the screen, move the cursor or reorder the
line a person reads."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from canned_server import CannedServer, Reply, error_reply, serve

from kamus_cli.main import main as kamus_cli
from kamus_client.errors import InputError
from kamus_client.exitcodes import ExitCode
from kamus_client.program import run_program
from kamus_client.terminal import escape_unsafe
from kamus_dev.kubeconfig import write_kubeconfig
from kamus_init.main import main as kamus_init
from kamus_init.settings import load_settings
from kamus_init.watch import watch
from kamus_kms import auditchain

# Clear screen (CSI 2J), right-to-left override, line separator, C1 CSI, NUL.
HOSTILE = "\x1b[2J\u202e\u2028\x9b\x00"
ESCAPED = "\\u001b[2J\\u202e\\u2028\\u009b\\u0000"


def test_escaping_is_the_audit_files_on_every_code_point() -> None:
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert escape_unsafe(every) == auditchain.escape_unsafe(every)
    # What lets printable text skip the pattern: no printable character is escaped.
    printable = "".join(filter(str.isprintable, every))
    assert auditchain.escape_unsafe(printable) == printable
    assert escape_unsafe(HOSTILE) == ESCAPED
    assert escape_unsafe(ESCAPED) == ESCAPED  # escaping twice changes nothing


def _answer_of(request: bytes) -> bool:
    head, separator, body = request.partition(b"\r\n\r\n")
    if not separator:
        return False
    if head.startswith(b"CONNECT "):
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


@contextmanager
def raw_server(answer: bytes) -> Iterator[str]:
    """A server on 127.0.0.1 writing ``answer`` to every request; yields ``host:port``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                request = b""
                while not _answer_of(request) and (chunk := conn.recv(65536)):
                    request += chunk
                conn.sendall(answer)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# The reason phrase as bytes on the wire: U+202E and U+2028 in UTF-8, the C1 CSI as one byte.
REASON = b"\x1b[2J" + "\u202e\u2028".encode() + b"\x9b\x00"


@contextmanager
def hostile_server(kind: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A Kamus URL and the environment that make the program meet hostile text of ``kind``."""
    if kind == "json message":
        server = CannedServer()
        server.otherwise = error_reply(403, f"denied{HOSTILE}", f"no{HOSTILE}way")
        with serve(server):
            yield server.url, {"NO_PROXY": "127.0.0.1"}
    elif kind == "reason phrase":
        answer = b"HTTP/1.1 403 " + REASON + b"\r\nContent-Length: 4\r\n\r\nnope"
        with raw_server(answer) as address:
            yield f"http://{address}", {"NO_PROXY": "127.0.0.1"}
    else:  # a proxy refusing CONNECT with a hostile reason phrase
        with raw_server(b"HTTP/1.1 407 " + REASON + b"\r\nContent-Length: 0\r\n\r\n") as address:
            yield "https://kamus.example", {"HTTPS_PROXY": f"http://{address}", "NO_PROXY": ""}


def _assert_safe(err: str, *, quoted: bool = True) -> None:
    assert err.endswith("\n")
    for line in err.split("\n"):  # not splitlines(): it would hide U+2028, U+0085, ...
        assert line.isprintable(), repr(line)
    if quoted:  # escaped, not dropped: the message still says what came
        assert "\\u001b[2J" in err


KINDS = ["json message", "reason phrase", "proxy reason phrase"]


@pytest.mark.parametrize("kind", KINDS)
def test_kamus_cli_prints_server_text_escaped(
    kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with hostile_server(kind) as (url, environ):
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        argv = ["encrypt", "-n", "team-a", "-a", "api", "-s", "x", "-u", url]
        code = kamus_cli([*argv, "--allow-insecure-url", "--timeout", "5"], {})
    assert code == (ExitCode.REFUSED if kind != "proxy reason phrase" else ExitCode.UNAVAILABLE)
    _assert_safe(capsys.readouterr().err)


@pytest.mark.parametrize("kind", KINDS)
def test_kamus_init_prints_server_text_escaped(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    encrypted, token = tmp_path / "encrypted", tmp_path / "token"
    encrypted.mkdir()
    (encrypted / "password").write_text("kamus:v1:ciphertext")
    token.write_text("header.payload.signature\n")
    with hostile_server(kind) as (url, environ):
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        argv = ["-e", str(encrypted), "-d", str(tmp_path / "out"), "-f", "files"]
        code = kamus_init(argv, {"KAMUS_URL": url, "TOKEN_FILE_PATH": str(token)})
    assert code == (ExitCode.REFUSED if kind != "proxy reason phrase" else ExitCode.UNAVAILABLE)
    _assert_safe(capsys.readouterr().err)


@pytest.mark.parametrize("kind", ["json message", "reason phrase"])
def test_kamus_cli_prints_the_kubernetes_apis_text_escaped(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    ciphertext = (
        "kamus:v1:local:team-a:app:k1:AAB-R68Vjp21T8XkkClqScmXVAZsItjab29FYivBPfLItxgfd5WUF8NV7hjI"
        "DclJ09vsRPKIsA9_1wyhjZw"
    )
    with hostile_server(kind) as (url, environ):  # answering the TokenRequest for the scope
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        write_kubeconfig(kubeconfig, url, "admin-token")
        argv = ["decrypt", "-u", "http://127.0.0.1:9", "--allow-insecure-url", ciphertext,
                "--kubeconfig", str(kubeconfig)]  # fmt: skip
        assert kamus_cli(argv, {}) == ExitCode.REFUSED
    _assert_safe(capsys.readouterr().err)


def test_every_error_message_is_printed_escaped_whatever_its_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail() -> int:
        raise InputError(f"cannot read /tmp/secret{HOSTILE}.kamus")

    assert run_program("kamus-cli", fail) == ExitCode.INPUT
    assert capsys.readouterr().err == f"kamus-cli: error: cannot read /tmp/secret{ESCAPED}.kamus\n"


@pytest.mark.parametrize("control", ["\x1b[2J", "\x9b", "\u202e", "\x00", "\t"])
def test_a_ciphertext_with_control_or_format_characters_is_refused_not_printed(
    control: str, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor = CannedServer()
    encryptor.otherwise = Reply(body=f"kamus:v1:local:team-a:api:k1:{control}c2VjcmV0")
    with serve(encryptor):
        argv = ["encrypt", "-n", "team-a", "-a", "api", "-s", "x", "-u", encryptor.url]
        assert kamus_cli([*argv, "--allow-insecure-url"], {}) == ExitCode.BAD_RESPONSE
    out, err = capsys.readouterr()
    assert out == ""
    _assert_safe(err, quoted=False)


def test_kamus_init_watch_prints_a_failure_escaped_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encrypted = tmp_path / "encrypted"
    encrypted.mkdir()
    (encrypted / "password").write_text("kamus:v1:ciphertext")
    argv = ["-e", str(encrypted), "-d", str(tmp_path / "out"), "-f", "files", "--watch"]
    settings = load_settings(argv, {"KAMUS_URL": "http://127.0.0.1:9", "TOKEN_FILE_PATH": "t"})
    stop = threading.Event()

    def publish(_: dict[str, str]) -> int:
        stop.set()
        raise InputError(f"cannot read {HOSTILE}")

    assert watch(settings, publish, stop=stop) == 0
    err = capsys.readouterr().err
    assert f"cannot read {ESCAPED} (the last published files are kept;" in err
    _assert_safe(err)
