"""Running a Kamus command-line program: the one place its errors become messages and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable

from kamus_cli.errors import ClientError
from kamus_cli.exitcodes import ExitCode, exit_code_for


def run_program(program: str, call: Callable[[], int]) -> int:
    """Run `call`; print a client error as one line on stderr and return its exit code."""
    try:
        return call()
    except ClientError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except Exception as exc:
        # The message of an unknown error might quote input, a secret or file content: show only
        # its type.
        print(f"{program}: unexpected error ({type(exc).__name__}); this is a bug", file=sys.stderr)
        return ExitCode.UNEXPECTED
