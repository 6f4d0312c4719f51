"""Fixtures shared by every test: keyrings and sealers on the embedded defaults, KMS backends."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import settings
from kms_backend import Backend
from kube_apiserver import SKIP_REASON, KubeAPIServer, locate, running

from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer

# Property tests assert behaviour, not speed: a slow first example on a busy 2-core machine must
# not fail them (hypothesis' default 200 ms deadline did, once). Speed lives in bench/.
settings.register_profile("kamus", deadline=None)
settings.load_profile("kamus")


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


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    """Started lazily: `get(name)` starts a backend the first time a test needs it."""
    with ExitStack() as stack:
        started: dict[str, Backend] = {}

        class Lazy(dict[str, Backend]):
            def __missing__(self, name: str) -> Backend:
                module = importlib.import_module(f"backend_{name}")
                workdir = tmp_path_factory.mktemp(f"backend-{name}")
                started[name] = stack.enter_context(module.running(workdir))
                self[name] = started[name]
                return started[name]

        yield Lazy()


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A real kube-apiserver with etcd, one per session; skipped, saying why, when not found."""
    if locate() is None:
        pytest.skip(SKIP_REASON)
    with running(tmp_path_factory.mktemp("kube-apiserver")) as server:
        yield server


# What makes a test an integration test: it starts real servers or programs (gunicorn, the API
# server, a KMS backend, SoftHSM2 processes). `pytest -m "not integration"` leaves them out.
_INTEGRATION_FOLDERS = frozenset({"integration", "conformance"})
_INTEGRATION_FIXTURES = frozenset({"backends", "kube_apiserver"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if _INTEGRATION_FOLDERS & set(item.path.parts) or _INTEGRATION_FIXTURES & fixtures:
            item.add_marker(pytest.mark.integration)
