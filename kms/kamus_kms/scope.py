"""A scope is the (namespace, service account) a ciphertext is bound to."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kamus_kms.errors import InvalidScopeError

# Kubernetes: namespaces are DNS-1123 labels, service accounts DNS-1123 subdomains.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_MAX = 63
_SUBDOMAIN_MAX = 253

DEFAULT_SERVICE_ACCOUNT = "default"
_SERVICE_ACCOUNT_USER_PREFIX = "system:serviceaccount:"


def _is_label(value: str) -> bool:
    return len(value) <= _LABEL_MAX and _LABEL.fullmatch(value) is not None


def _is_subdomain(value: str) -> bool:
    return len(value) <= _SUBDOMAIN_MAX and _SUBDOMAIN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Scope:
    """A validated namespace + service account pair."""

    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.namespace, str) or not _is_label(self.namespace):
            problems.append(
                "namespace must be a DNS-1123 label (lowercase letters, digits and '-', "
                "at most 63 characters, starting and ending with a letter or digit)"
            )
        if not isinstance(self.service_account, str) or not _is_subdomain(self.service_account):
            problems.append(
                "service account must be a DNS-1123 subdomain (lowercase letters, digits, "
                "'-' and '.', at most 253 characters)"
            )
        if problems:
            raise InvalidScopeError("; ".join(problems))

    @property
    def is_default_service_account(self) -> bool:
        """True for the namespace's `default` service account, refused unless allowed."""
        return self.service_account == DEFAULT_SERVICE_ACCOUNT

    @classmethod
    def from_username(cls, username: str) -> Scope | None:
        """The scope of a Kubernetes username `system:serviceaccount:NS:SA`, else None."""
        if not username.startswith(_SERVICE_ACCOUNT_USER_PREFIX):
            return None
        namespace, sep, service_account = username[len(_SERVICE_ACCOUNT_USER_PREFIX) :].partition(
            ":"
        )
        if not sep:
            return None
        try:
            return cls(namespace, service_account)
        except InvalidScopeError:
            return None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}"
