"""The one exception tree of Kamus.

Every error Kamus raises on purpose derives from :class:`KamusError`. Each class carries the
stable machine-readable ``code`` that the HTTP layer puts in ``{"error": code}``; the mapping from
class to HTTP status lives in exactly one place (``kamus_service.errors``). Messages are written for
humans and never contain plaintext, tokens or key material.

    KamusError
    ├── ConfigurationError              settings or keyring unusable: the process must not start
    ├── RequestError                    the caller sent something we refuse (4xx)
    │   ├── InvalidRequestError         malformed body, wrong types, missing fields      400
    │   ├── InvalidScopeError           namespace / service account is not a Kubernetes name 400
    │   ├── DefaultServiceAccountError  encrypting for the `default` service account    400
    │   ├── InvalidCiphertextError      the one opaque decrypt failure                  400
    │   ├── PayloadTooLargeError        plaintext or body above the configured limit    413
    │   └── ForbiddenError              authenticated but not allowed                   403
    │       └── ScopeMismatchError      ciphertext bound to another namespace/SA
    └── UnavailableError                a dependency (TokenReview, KMS) cannot answer    503
        └── AuditWriteError             the audit file refuses the record               503

The errors only the HTTP services raise (about request bodies, tokens and rate limits) extend this
tree in ``kamus_service.errors``, beside the mapping; the client programs have their own tree
(``kamus_client.errors``), mapped to exit codes.
"""

from __future__ import annotations

from typing import ClassVar


class KamusError(Exception):
    """Root of every error Kamus raises on purpose."""

    code: ClassVar[str] = "internal_error"


class ConfigurationError(KamusError):
    """Settings or keyring are unusable; the process must not start."""

    code = "configuration_error"

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class RequestError(KamusError):
    """The caller sent something Kamus refuses."""

    code = "invalid_request"


class InvalidRequestError(RequestError):
    """Malformed request body: not an object, missing fields, wrong types."""

    code = "invalid_request"


class InvalidScopeError(RequestError):
    """A namespace or service account is not a valid Kubernetes name."""

    code = "invalid_scope"


class DefaultServiceAccountError(RequestError):
    """Encrypting for the `default` service account, which operators have not allowed."""

    code = "default_service_account"


class InvalidCiphertextError(RequestError):
    """The one opaque decrypt failure: malformed, tampered, wrong key or retired key."""

    code = "invalid_ciphertext"

    def __init__(
        self, message: str = "the ciphertext is invalid or was not made by this Kamus"
    ) -> None:
        super().__init__(message)


class PayloadTooLargeError(RequestError):
    """The plaintext or the request body is above the configured limit."""

    code = "payload_too_large"


class ForbiddenError(RequestError):
    """The caller is authenticated but not allowed to do this."""

    code = "forbidden"


class ScopeMismatchError(ForbiddenError):
    """The ciphertext is bound to another namespace or service account than the caller's."""

    code = "scope_mismatch"


class UnavailableError(KamusError):
    """A dependency (TokenReview, KMS) cannot answer now; retry later."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 2, reason: str | None = None) -> None:
        self.retry_after = retry_after
        # What exactly fails, as a fixed word shown by /readyz?verbose (which needs no token):
        # never a name, path or message.
        self.reason = reason
        super().__init__(message)


class AuditWriteError(UnavailableError):
    """The audit file cannot be appended to: an I/O failure or a torn last line."""

    code = "audit_unavailable"
