"""Fixtures shared by every test: keyrings, providers and sealers on the embedded defaults."""

from __future__ import annotations

import pytest

from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer


@pytest.fixture
def keyring() -> Keyring:
    """A fresh keyring with one active key."""
    return Keyring.generate()


@pytest.fixture
def sealer(keyring: Keyring) -> Sealer:
    """A sealer over the local keyring provider."""
    return Sealer(LocalKeyringProvider(keyring))


@pytest.fixture
def team_a_app() -> Scope:
    """The scope most tests encrypt for."""
    return Scope("team-a", "app")
