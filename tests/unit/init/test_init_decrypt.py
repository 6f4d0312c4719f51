"""kamus-init's one batch call: request shape, refusals, retries within the deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from canned_server import CannedServer, Recorded, Reply, error_reply
from configmap_mounts import PREFIX, TOKEN, echo
from fake_clock import FakeClock

from kamus_client.exitcodes import ExitCode
from kamus_client.version import VERSION
from kamus_init.main import main

NO_WAIT = {"Retry-After": "0"}


def init_args(encrypted: Path, decrypted: Path, *extra: str) -> list[str]:
    return ["-e", str(encrypted), "-d", str(decrypted), "-f", "files", *extra]


def assert_no_secret_in(text: str) -> None:
    assert "SENTINEL" not in text  # neither the token nor any plaintext or ciphertext payload


def test_one_batch_request_carries_every_item_the_token_and_the_user_agent(
    encrypted: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    assert main(init_args(encrypted, decrypted), environ) == 0

    (request,) = decryptor.requests
    assert request.path == "/api/v1/decrypt/batch"
    assert request.body == {
        "items": {"api.key": f"{PREFIX}abc-SENTINEL", "db-password": f"{PREFIX}hunter2-SENTINEL"}
    }
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == f"kamus-init-{VERSION}"


@pytest.mark.parametrize(
    "reply",
    [
        error_reply(401, "unauthorized", "the token is invalid"),
        error_reply(403, "scope_mismatch", "ciphertext is for another service account"),
        error_reply(403, "not_service_account", "not a service account"),
        error_reply(403, "default_service_account", "default is not allowed"),
        error_reply(400, "invalid_ciphertext", "the ciphertext is invalid"),
    ],
    ids=lambda reply: reply.body.split('"')[3],
)
def test_refusal_writes_nothing_exits_5_and_is_not_retried(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
    reply: Reply,
) -> None:
    decryptor.queue(reply)

    assert main(init_args(encrypted, decrypted), environ) == ExitCode.REFUSED

    assert list(decrypted.iterdir()) == []
    assert len(decryptor.requests) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert f"HTTP {reply.status}" in err
    assert_no_secret_in(out + err)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_transient_status_is_retried_and_then_succeeds(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    status: int,
) -> None:
    decryptor.queue(error_reply(status, "unavailable", "try later", **NO_WAIT))
    clock = FakeClock()

    assert main(init_args(encrypted, decrypted), environ, clock=clock, sleep=clock.sleep) == 0
    assert len(decryptor.requests) == 2
    assert len(clock.sleeps) == 1
    assert 0.25 <= clock.sleeps[0] <= 0.5  # the first backoff step, jittered
    assert (decrypted / "db-password").read_text() == "hunter2-SENTINEL"


def test_rate_limited_429_is_retried_after_its_retry_after(
    encrypted: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    decryptor.queue(error_reply(429, "rate_limited", "slow down", **{"Retry-After": "1"}))
    clock = FakeClock()

    assert main(init_args(encrypted, decrypted), environ, clock=clock, sleep=clock.sleep) == 0

    # The backoff alone would wait 0.25-0.5 s; the server asked for a whole second.
    assert clock.sleeps == [1.0]
    assert len(decryptor.requests) == 2
    assert (decrypted / "db-password").read_text() == "hunter2-SENTINEL"


def test_rate_limited_beyond_the_deadline_gives_up_with_exit_6_and_writes_nothing(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    decryptor.otherwise = error_reply(429, "rate_limited", "slow down", **{"Retry-After": "30"})

    argv = init_args(encrypted, decrypted, "--timeout", "2")
    assert main(argv, environ) == ExitCode.UNAVAILABLE

    assert len(decryptor.requests) == 1
    assert list(decrypted.iterdir()) == []
    assert "rate_limited" in capsys.readouterr().err


def test_token_file_is_read_again_for_every_attempt(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    token_file: Path,
) -> None:
    def rotate_then_fail(recorded: Recorded) -> Reply:
        token_file.write_text("eyJ-rotated-SENTINEL-2")
        return error_reply(503, "unavailable", "TokenReview unreachable", **NO_WAIT)

    decryptor.queue(rotate_then_fail, echo)
    clock = FakeClock()

    assert main(init_args(encrypted, decrypted), environ, clock=clock, sleep=clock.sleep) == 0
    first, second = (r.headers["Authorization"] for r in decryptor.requests)
    assert (first, second) == (f"Bearer {TOKEN}", "Bearer eyJ-rotated-SENTINEL-2")


def test_unavailable_until_the_deadline_fails_with_exit_6_and_writes_nothing(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    decryptor.otherwise = error_reply(503, "unavailable", "KMS down", **NO_WAIT)
    clock = FakeClock()

    argv = init_args(encrypted, decrypted, "--timeout", "1.5")
    assert main(argv, environ, clock=clock, sleep=clock.sleep) == ExitCode.UNAVAILABLE

    # Every wait fitted in the deadline; the one that would not was not taken.
    assert sum(clock.sleeps) < 1.5
    assert len(decryptor.requests) == len(clock.sleeps) + 1 >= 2
    assert list(decrypted.iterdir()) == []
    err = capsys.readouterr().err
    assert "gave up after" in err
    assert "KMS down" in err
    assert_no_secret_in(err)


def test_server_error_500_is_not_retried(
    encrypted: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    decryptor.queue(error_reply(500, "internal_error", "bug"))

    assert main(init_args(encrypted, decrypted), environ) == ExitCode.UNAVAILABLE
    assert len(decryptor.requests) == 1


def test_connection_refused_is_retried_until_the_deadline(
    encrypted: Path, decrypted: Path, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    environ = {"KAMUS_URL": f"http://127.0.0.1:{closed_port}", "TOKEN_FILE_PATH": str(token_file)}

    clock = FakeClock()
    argv = init_args(encrypted, decrypted, "--timeout", "1")
    assert main(argv, environ, clock=clock, sleep=clock.sleep) == ExitCode.UNAVAILABLE
    assert "gave up after" in capsys.readouterr().err
    assert clock.sleeps


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, "not json"),
        Reply(200, '{"items": {"db-password": "only one"}}', "application/json"),
        Reply(200, '{"items": {"db-password": 1, "api.key": "x"}}', "application/json"),
    ],
    ids=["not-json", "missing-item", "not-a-string"],
)
def test_answer_off_the_api_writes_nothing_and_exits_8(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    reply: Reply,
) -> None:
    decryptor.queue(reply)

    assert main(init_args(encrypted, decrypted), environ) == ExitCode.BAD_RESPONSE
    assert list(decrypted.iterdir()) == []


@pytest.mark.parametrize(
    "token",
    [None, "", "two\nlines"],
    ids=["missing", "empty", "not-a-token"],
)
def test_unusable_token_file_exits_3_without_calling_the_decryptor(
    encrypted: Path,
    decrypted: Path,
    environ: dict[str, str],
    decryptor: CannedServer,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
    token: str | None,
) -> None:
    if token is None:
        token_file.unlink()
    else:
        token_file.write_text(token)

    assert main(init_args(encrypted, decrypted), environ) == ExitCode.INPUT
    assert decryptor.requests == []
    assert "lines" not in capsys.readouterr().err


def test_refusal_through_a_real_process_exits_5_with_one_line_on_stderr(
    encrypted: Path, decrypted: Path, environ: dict[str, str], decryptor: CannedServer
) -> None:
    decryptor.queue(error_reply(403, "scope_mismatch", "ciphertext is for another scope"))

    finished = subprocess.run(
        [sys.executable, "-m", "kamus_init.main", *init_args(encrypted, decrypted)],
        capture_output=True,
        env={**os.environ, **environ, "NO_PROXY": "127.0.0.1"},
        check=False,
        timeout=60,
        text=True,
    )

    assert finished.returncode == ExitCode.REFUSED
    assert finished.stdout == ""
    assert finished.stderr.startswith("kamus-init: error: the server refused the request")
    assert finished.stderr.count("\n") == 1
    assert_no_secret_in(finished.stderr)
    assert list(decrypted.iterdir()) == []
