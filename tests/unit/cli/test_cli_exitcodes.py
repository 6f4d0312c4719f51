"""Every client error maps to its documented exit code; anything else is a bug (1)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from kamus_client.errors import (
    ClientError,
    InputError,
    OutputError,
    ServerRefusedError,
    ServerUnavailableError,
    TLSError,
    UnexpectedResponseError,
)
from kamus_client.exitcodes import ExitCode, exit_code_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputError("x"), 3),
        (OutputError("x"), 4),
        (ServerRefusedError("x", status=403), 5),
        (ServerUnavailableError("x", transient=True), 6),
        (TLSError("x"), 7),
        (UnexpectedResponseError("x"), 8),
        (ValueError("x"), 1),
    ],
)
def test_error_maps_to_its_documented_exit_code(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code


@pytest.mark.parametrize("cls", ClientError.__subclasses__())
def test_no_client_error_class_is_left_unmapped(cls: type[ClientError]) -> None:
    error = cls.__new__(cls)

    assert exit_code_for(error) not in (ExitCode.OK, ExitCode.UNEXPECTED)


def test_a_reader_that_stops_reading_ends_the_program_quietly_like_unix_tools() -> None:
    """`kamus-cli inspect ... --output-format json | head -c 10`."""
    ciphertext = "kamus:v1:local:team-a:app:k1:" + "A" * 43
    process = subprocess.Popen(
        [sys.executable, "-m", "kamus_cli.main", "inspect", ciphertext, "--output-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.close()  # gone before the program writes a byte
    _, err = process.communicate(timeout=60)
    assert err.decode() == ""
    assert process.returncode == 128 + signal.SIGPIPE
