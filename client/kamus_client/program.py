"""Running a Kamus command-line program: the one place its errors become messages and exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from kamus_client.coredumps import forbid_core_dumps
from kamus_client.errors import ClientError
from kamus_client.exitcodes import ExitCode, exit_code_for
from kamus_client.terminal import escape_unsafe


def run_program(program: str, call: Callable[[], int]) -> int:
    """Run `call`; print a client error as one line on stderr and return its exit code.

    The process cannot dump core from here on: every program run here reads tokens, keys or
    plaintexts in `call`.
    """
    try:
        forbid_core_dumps()
        code = call()
        sys.stdout.flush()  # a pipe's reader may be gone: find out here, not at exit
    except BrokenPipeError:
        # `kamus-cli inspect ... | head`: the reader stopped reading. Stop quietly with the
        # status a shell shows for a tool ended by SIGPIPE, like other Unix tools; stdout goes to
        # /dev/null so that Python's own flush at exit fails no more.
        import signal  # noqa: PLC0415 - only this rare path needs it

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except ClientError as exc:
        # Messages quote servers, file names and records: escaped here once more, so nothing
        # missed where the text came in reaches the terminal raw (escaping twice changes nothing).
        print(f"{program}: error: {escape_unsafe(str(exc))}", file=sys.stderr)
        return exit_code_for(exc)
    except Exception as exc:
        # The message of an unknown error might quote input, a secret or file content: show only
        # its type.
        print(f"{program}: unexpected error ({type(exc).__name__}); this is a bug", file=sys.stderr)
        return ExitCode.UNEXPECTED
    return code
