"""The two Kubernetes API servers the decryptor is tested against, behind one interface.

The same scenarios run against the development token authority and against a real kube-apiserver
(tests/integration/test_kubernetes_api.py), so every difference between the stand-in and the real
server shows up as a test that passes on one and fails on the other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

import jwt
from kube_apiserver import KubeAPIServer

from kamus_dev.authority import TokenAuthority, create_authority_app, serve_in_thread
from kamus_dev.kubeconfig import mint_token, write_kubeconfig


class Cluster(Protocol):
    """What the tests need of an API server: objects, tokens, review counts and outages."""

    name: str

    def create_service_account(self, namespace: str, name: str) -> None:
        """Create a service account (and its namespace), or create a deleted one again."""

    def delete_service_account(self, namespace: str, name: str) -> None:
        """Delete a service account."""

    def create_pod(self, namespace: str, name: str, service_account: str) -> str:
        """Create a pod object running as ``service_account``; its UID."""

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod object."""

    def mint(
        self, namespace: str, service_account: str, audiences: Sequence[str] = ("kamus",),
        *, pod: str | None = None,
    ) -> str:  # fmt: skip
        """A token from TokenRequest, bound to ``pod`` when given."""

    def resign(self, token: str, **claims: Any) -> str:
        """``token`` with ``claims`` replaced, signed with the cluster's own signing key."""

    def tokenreviews(self) -> int:
        """TokenReview requests the server has answered so far."""

    def decryptor_kubeconfig(self, path: Path) -> None:
        """Write the kubeconfig the decryptor uses to reach this server."""

    def unprivileged_kubeconfig(self, path: Path) -> None:
        """Write a kubeconfig of a service account that may not create TokenReviews."""

    def stopped(self) -> AbstractContextManager[None]:
        """The server is down (connections refused) until the block ends."""

    def hung(self) -> AbstractContextManager[None]:
        """The server accepts connections and answers nothing until the block ends."""


class DevelopmentCluster:
    """The development token authority, served in a thread on a port that survives restarts."""

    name = "development-authority"

    def __init__(self) -> None:
        # Shaped like the real server the suite runs beside (v1.28): tokens without a `jti`.
        self.authority = TokenAuthority(kubernetes_version=(1, 28))
        self._stack = ExitStack()
        self.url = self._stack.enter_context(serve_in_thread(create_authority_app(self.authority)))

    def close(self) -> None:
        """Stop serving."""
        self._stack.close()

    def create_service_account(self, namespace: str, name: str) -> None:
        self.authority.create_service_account(namespace, name)

    def delete_service_account(self, namespace: str, name: str) -> None:
        self.authority.delete_service_account(namespace, name)

    def create_pod(self, namespace: str, name: str, service_account: str) -> str:
        uid = self.authority.create_pod(namespace, name)
        assert uid is not None, f"pod {namespace}/{name} exists already"
        return uid

    def delete_pod(self, namespace: str, name: str) -> None:
        self.authority.delete_pod(namespace, name)

    def mint(
        self, namespace: str, service_account: str, audiences: Sequence[str] = ("kamus",),
        *, pod: str | None = None,
    ) -> str:  # fmt: skip
        return mint_token(
            self.url, self.authority.admin_token, namespace, service_account, audiences, pod=pod
        )

    def resign(self, token: str, **claims: Any) -> str:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False}) | claims
        return jwt.encode(payload, self.authority.signing_key, algorithm="RS256", headers=header)

    def tokenreviews(self) -> int:
        return self.authority.tokenreview_calls

    def decryptor_kubeconfig(self, path: Path) -> None:
        # The authority has no RBAC: only its admin may create TokenReviews.
        write_kubeconfig(path, self.url, self.authority.admin_token)

    def unprivileged_kubeconfig(self, path: Path) -> None:
        write_kubeconfig(path, self.url, self.mint("kamus", "nobody", ()))

    @contextmanager
    def stopped(self) -> Iterator[None]:
        self._stack.close()
        try:
            yield
        finally:
            port = int(self.url.rsplit(":", 1)[1])
            self._stack.enter_context(
                serve_in_thread(create_authority_app(self.authority), port=port)
            )

    def hung(self) -> AbstractContextManager[None]:
        return self.authority.hung()


class RealCluster:
    """A real kube-apiserver; the decryptor runs as its own service account, allowed only
    ``create tokenreviews``."""

    name = "kube-apiserver"

    def __init__(self, server: KubeAPIServer) -> None:
        self.server = server
        server.create_service_account("kamus", "kamus-decryptor")
        server.grant_tokenreview("kamus", "kamus-decryptor")

    def create_service_account(self, namespace: str, name: str) -> None:
        self.server.create_service_account(namespace, name)

    def delete_service_account(self, namespace: str, name: str) -> None:
        self.server.delete_service_account(namespace, name)

    def create_pod(self, namespace: str, name: str, service_account: str) -> str:
        return self.server.create_pod(namespace, name, service_account)

    def delete_pod(self, namespace: str, name: str) -> None:
        self.server.delete_pod(namespace, name)

    def mint(
        self, namespace: str, service_account: str, audiences: Sequence[str] = ("kamus",),
        *, pod: str | None = None,
    ) -> str:  # fmt: skip
        return self.server.mint(namespace, service_account, audiences, pod=pod)

    def resign(self, token: str, **claims: Any) -> str:
        return self.server.resign(token, **claims)

    def tokenreviews(self) -> int:
        # The counter is bumped as the answer is written: read until two readings agree.
        previous = self.server.tokenreviews()
        while True:
            time.sleep(0.1)
            current = self.server.tokenreviews()
            if current == previous:
                return current
            previous = current

    def decryptor_kubeconfig(self, path: Path) -> None:
        token = self.server.mint("kamus", "kamus-decryptor", (), expiration_seconds=86400)
        self.server.write_kubeconfig(path, token)

    def unprivileged_kubeconfig(self, path: Path) -> None:
        self.server.create_service_account("kamus", "nobody")
        token = self.server.mint("kamus", "nobody", (), expiration_seconds=86400)
        self.server.write_kubeconfig(path, token)

    def stopped(self) -> AbstractContextManager[None]:
        return self.server.stopped()

    def hung(self) -> AbstractContextManager[None]:
        return self.server.hung()
