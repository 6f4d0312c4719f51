"""A whole Kamus on 127.0.0.1: the token authority in a thread, encryptor and decryptor as real
gunicorn processes reaching TokenReview through the kubernetes client and a kubeconfig."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gunicorn_process import Service, gunicorn

from kamus_dev.authority import TokenAuthority, create_authority_app, serve_in_thread
from kamus_dev.kubeconfig import mint_token, write_kubeconfig
from kamus_kms.keyring import Keyring


@pytest.fixture(scope="session")
def authority() -> TokenAuthority:
    """The development token authority (counts its TokenReview calls)."""
    return TokenAuthority()


@pytest.fixture(scope="session")
def authority_url(authority: TokenAuthority) -> Iterator[str]:
    """The authority served on a free loopback port."""
    with serve_in_thread(create_authority_app(authority)) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private folder for the keyring, audit key, kubeconfig and service logs."""
    return tmp_path_factory.mktemp("kamus")


@pytest.fixture(scope="session")
def keyring_file(cluster_dir: Path) -> Path:
    """A generated keyring file, mode 0600."""
    path = cluster_dir / "keyring.json"
    Keyring.generate().save(path)
    return path


@pytest.fixture(scope="session")
def service_env(
    cluster_dir: Path, keyring_file: Path, authority: TokenAuthority, authority_url: str
) -> dict[str, str]:
    """KAMUS_* settings shared by both services, secrets passed as files."""
    audit_key = cluster_dir / "audit.key"
    audit_key.write_text(base64.b64encode(os.urandom(32)).decode())
    kubeconfig = cluster_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, authority_url, authority.admin_token)
    return {
        "KAMUS_KEYRING_FILE": str(keyring_file),
        "KAMUS_AUDIT_KEY_FILE": str(audit_key),
        "KAMUS_KUBECONFIG": str(kubeconfig),
        "KAMUS_TOKENREVIEW_TIMEOUT_SECONDS": "2",
        # Every test calls from 127.0.0.1: the failure limit is proven in the unit tests, and
        # must not turn one test's deliberate denials into another's 429s.
        "KAMUS_RATE_LIMIT_FAILURES_PER_MINUTE": "10000",
    }


@pytest.fixture(scope="session")
def encryptor(service_env: dict[str, str], cluster_dir: Path) -> Iterator[Service]:
    """The encryptor under gunicorn."""
    env = {k: v for k, v in service_env.items() if k in {"KAMUS_KEYRING_FILE"}}
    with gunicorn("kamus_encryptor:create_app()", env, cluster_dir / "logs") as service:
        yield service


@pytest.fixture(scope="session")
def decryptor(service_env: dict[str, str], cluster_dir: Path) -> Iterator[Service]:
    """The decryptor under gunicorn."""
    with gunicorn("kamus_decryptor:create_app()", service_env, cluster_dir / "logs") as service:
        yield service


@pytest.fixture(scope="session")
def token(authority: TokenAuthority, authority_url: str) -> Callable[..., str]:
    """Mints a service-account token through TokenRequest, like the kubelet does."""

    def mint(
        namespace: str, service_account: str, audiences: tuple[str, ...] = ("kamus",),
        pod: str | None = None,
    ) -> str:  # fmt: skip
        if pod is not None:
            authority.create_pod(namespace, pod)  # bound tokens need the pod (None: it exists)
        return mint_token(
            authority_url, authority.admin_token, namespace, service_account, audiences, pod=pod
        )

    return mint
