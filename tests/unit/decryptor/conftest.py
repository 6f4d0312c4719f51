"""Decryptor app fixtures: a real sealer and an in-memory TokenReview double."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from reviewer_double import StaticReviewer

from kamus_decryptor import create_app
from kamus_kms.keyring import Keyring
from kamus_service.settings import Settings


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
