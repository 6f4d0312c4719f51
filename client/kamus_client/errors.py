"""Errors of the Kamus client programs (``kamus-cli``, ``kamus-init``, ``kamus-audit``).

Every failure these programs report on purpose is one of these; lower-level errors (``OSError``,
``ssl.SSLError``, ``UnicodeDecodeError``, the core's ``KamusError``) are translated where they
happen, with ``raise … from exc``. Each class maps to one exit code in
:mod:`kamus_client.exitcodes`. Messages never contain a secret, a plaintext or a token.

The tree has its own root: a client runs far from the services, and nothing maps these to HTTP.

    ClientError                        base of every client-side failure
    ├── InputError                 bad local input or configuration             exit 3
    ├── OutputError                an output file could not be written          exit 4
    ├── ServerRefusedError         the server answered 4xx                      exit 5
    │   └── TooManyRequestsError   429: the server asks to try later           exit 5
    ├── ServerUnavailableError     5xx, network failure, timeout, deadline      exit 6
    ├── TLSError                   certificate verification or pin failure      exit 7
    ├── UnexpectedResponseError    the answer does not follow the Kamus API     exit 8
    └── KeyInUseError              a key to retire is still used by ciphertexts exit 10
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every failure of a Kamus client program."""


class InputError(ClientError):
    """Local input or configuration is unusable: flags, environment, files."""


class OutputError(ClientError):
    """An output file could not be written."""


class ServerRefusedError(ClientError):
    """The server refused the request with a 4xx status."""

    def __init__(self, message: str, *, status: int, error_code: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        super().__init__(message)


class TooManyRequestsError(ServerRefusedError):
    """The server answered 429: retry after ``retry_after`` seconds (kamus-init does)."""

    def __init__(
        self, message: str, *, error_code: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=429, error_code=error_code)


class ServerUnavailableError(ClientError):
    """The server could not answer: 5xx, connection failure, timeout or deadline."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.transient = transient
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class TLSError(ClientError):
    """The server's certificate failed verification or did not match the pinned fingerprint."""


class UnexpectedResponseError(ClientError):
    """The server answered something that does not follow the Kamus API."""


class KeyInUseError(ClientError):
    """A key to retire is still used by ciphertexts a scan found."""
