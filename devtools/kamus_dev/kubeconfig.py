"""A kubeconfig pointing at the development token authority, and a client minting its tokens."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

_NAME = "kamus-dev"


def write_kubeconfig(
    path: str | os.PathLike[str],
    server_url: str,
    token: str | None,
    *,
    ca_file: str | os.PathLike[str] | None = None,
) -> None:
    """Write a kubeconfig (JSON, which is YAML) with one cluster, user and context, mode 0600.

    Without ``token`` the user has no credentials, so the API server sees ``system:anonymous``.
    ``ca_file`` (PEM) is embedded as the cluster's certificate authority for an HTTPS server.
    """
    target = Path(path)
    cluster: dict[str, str] = {"server": server_url}
    if ca_file is not None:
        authority = base64.b64encode(Path(ca_file).read_bytes()).decode()
        cluster["certificate-authority-data"] = authority
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": _NAME, "cluster": cluster}],
        "users": [{"name": _NAME, "user": {} if token is None else {"token": token}}],
        "contexts": [{"name": _NAME, "context": {"cluster": _NAME, "user": _NAME}}],
        "current-context": _NAME,
        "preferences": {},
    }
    # mkstemp creates the file 0600, so the token is never readable by others, even briefly.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def mint_token(
    server_url: str,
    admin_token: str,
    namespace: str,
    service_account: str,
    audiences: Sequence[str],
    *,
    expiration_seconds: int = 3600,
    pod: str | None = None,
    pod_uid: str | None = None,
    timeout: float = 10.0,
    verify: str | bool = True,
) -> str:
    """A service-account token from the TokenRequest API, bound to ``pod`` when given.

    ``verify`` is the CA bundle an HTTPS server is checked against (requests' meaning).

    Raises :class:`requests.HTTPError` carrying the API server's ``Status`` message on failure.
    """
    spec: dict[str, Any] = {"audiences": list(audiences), "expirationSeconds": expiration_seconds}
    if pod is not None:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod}
        if pod_uid is not None:
            spec["boundObjectRef"]["uid"] = pod_uid
    response = requests.post(
        f"{server_url.rstrip('/')}/api/v1/namespaces/{namespace}/serviceaccounts/"
        f"{service_account}/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=timeout,
        verify=verify,
    )
    if response.status_code != 201:
        try:
            message = response.json().get("message", response.reason)
        except ValueError:
            message = response.reason
        raise requests.HTTPError(
            f"TokenRequest for {namespace}/{service_account} failed: "
            f"{response.status_code} {message}",
            response=response,
        )
    return str(response.json()["status"]["token"])
