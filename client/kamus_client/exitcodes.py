"""Exit codes of ``kamus-cli`` and ``kamus-init``: the one place errors become exit statuses."""

from __future__ import annotations

import enum

from kamus_client.errors import (
    ClientError,
    InputError,
    KeyInUseError,
    OutputError,
    ServerRefusedError,
    ServerUnavailableError,
    TLSError,
    UnexpectedResponseError,
)


class ExitCode(enum.IntEnum):
    """Process exit statuses, documented in docs/CLI.md."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2  # argparse's own status for bad flags
    INPUT = 3
    OUTPUT = 4
    REFUSED = 5
    UNAVAILABLE = 6
    TLS = 7
    BAD_RESPONSE = 8
    TAMPERED = 9  # kamus-audit verify found the audit file altered
    IN_USE = 10  # kamus-cli keys scan --uses / keyring retire --scan found the key in use


_BY_CLASS: tuple[tuple[type[ClientError], ExitCode], ...] = (
    (InputError, ExitCode.INPUT),
    (OutputError, ExitCode.OUTPUT),
    (ServerRefusedError, ExitCode.REFUSED),
    (ServerUnavailableError, ExitCode.UNAVAILABLE),
    (TLSError, ExitCode.TLS),
    (UnexpectedResponseError, ExitCode.BAD_RESPONSE),
    (KeyInUseError, ExitCode.IN_USE),
)


def exit_code_for(error: BaseException) -> ExitCode:
    """Return the exit code for ``error``; anything not a known client error is a bug (1)."""
    for cls, code in _BY_CLASS:
        if isinstance(error, cls):
            return code
    return ExitCode.UNEXPECTED
