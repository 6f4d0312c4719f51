"""Every client error maps to its documented exit code; anything else is a bug (1)."""

from __future__ import annotations

import pytest

from kamus_cli.errors import (
    ClientError,
    InputError,
    OutputError,
    ServerRefusedError,
    ServerUnavailableError,
    TLSError,
    UnexpectedResponseError,
)
from kamus_cli.exitcodes import ExitCode, exit_code_for


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
