"""An in-memory TokenReview double for decryptor unit tests (never selectable by configuration)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kamus_decryptor.tokenreview import Caller
from kamus_kms.errors import UnavailableError
from kamus_kms.scope import Scope
from kamus_service.errors import AuthenticationError, NotServiceAccountError


@dataclass
class StaticReviewer:
    """TokenReview double: `token-<ns>-<sa>` proves that service account, others fail."""

    available: bool = True
    reviews: int = 0
    users: dict[str, str] = field(default_factory=dict)

    def review(self, token: str) -> Caller:
        self.reviews += 1
        if not self.available:
            raise UnavailableError("token verification is unavailable; retry later")
        if token in self.users:
            raise NotServiceAccountError("only service-account tokens can decrypt")
        parts = token.split("-", 2)
        if len(parts) != 3 or parts[0] != "token":
            raise AuthenticationError("the token was rejected")
        scope = Scope(parts[1].replace("_", "-"), parts[2])
        extra = {"authentication.kubernetes.io/pod-name": ["pod-1"]}
        return Caller(scope, f"system:serviceaccount:{scope.namespace}:{scope.service_account}",
                      "uid-1", extra)  # fmt: skip

    def check_ready(self) -> None:
        if not self.available:
            raise UnavailableError("token verification is unavailable")
