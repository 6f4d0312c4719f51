"""Decryptor app fixtures: a real sealer and an in-memory TokenReview double."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from kamus_decryptor import create_app
from kamus_decryptor.tokenreview import Caller
from kamus_kms.errors import AuthenticationError, NotServiceAccountError, UnavailableError
from kamus_kms.keyring import Keyring
from kamus_kms.scope import Scope
from kamus_service.settings import Settings


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
            raise NotServiceAccountError(f"only service-account tokens can decrypt; {token}")
        parts = token.split("-", 2)
        if len(parts) != 3 or parts[0] != "token":
            raise AuthenticationError("the token was rejected: invalid bearer token")
        scope = Scope(parts[1].replace("_", "-"), parts[2])
        extra = {"authentication.kubernetes.io/pod-name": ["pod-1"]}
        return Caller(scope, f"system:serviceaccount:{scope.namespace}:{scope.service_account}",
                      "uid-1", extra)  # fmt: skip

    def check_ready(self) -> None:
        if not self.available:
            raise UnavailableError("token verification is unavailable")


@pytest.fixture
def reviewer() -> StaticReviewer:
    """A TokenReview double that counts reviews."""
    return StaticReviewer(users={"token-of-alice": "alice"})


@pytest.fixture
def app(keyring: Keyring, reviewer: StaticReviewer) -> Flask:
    """A decryptor over the shared keyring and the reviewer double."""
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        max_batch_items=5, max_body_bytes=50_000)  # fmt: skip
    return create_app(settings, reviewer=reviewer)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the decryptor."""
    return app.test_client()


@pytest.fixture
def audit_events(capsys: pytest.CaptureFixture[str]) -> Callable[[], list[dict[str, Any]]]:
    """Reads the audit events the app printed on stdout so far."""

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [event for event in events if event.get("audit")]

    return read
