"""The service-account token ``rewrap`` and ``decrypt`` present to the decryptor.

Either read from ``--token-file``, or minted with the TokenRequest API through the official
``kubernetes`` client and the caller's kubeconfig (``--kubeconfig``, else ``$KUBECONFIG``, else
``~/.kube/config``): ``create serviceaccounts/token`` on the service account is needed, and the
token gets the ``kamus`` audience and lives 600 s, the shortest the API allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kamus_cli.kubeconfig import load as kubeconfig_of
from kamus_client.errors import ServerRefusedError, ServerUnavailableError
from kamus_client.terminal import escape_unsafe

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

AUDIENCE = "kamus"
EXPIRATION_SECONDS = 600  # the API server refuses anything shorter
_MAX_MESSAGE = 300


def kubeconfig_path(flag: Path | None, environ: Mapping[str, str]) -> str:
    """``--kubeconfig``, else ``$KUBECONFIG`` (a path list is merged), else ~/.kube/config."""
    if flag is not None:
        return str(flag)
    configured = environ.get("KUBECONFIG", "").strip()
    return configured or os.path.expanduser("~/.kube/config")


def mint_token(
    kubeconfig: str,
    namespace: str,
    service_account: str,
    *,
    context: str | None = None,
    audience: str = AUDIENCE,
    timeout: float = 10.0,
) -> str:
    """A token of ``namespace/service_account`` from TokenRequest; raises a ClientError."""
    # Imported here: only minting needs the kubernetes client (an extra of kamus-cli), and
    # importing it costs a second; encrypt, seal and --token-file never do.
    configuration = kubeconfig_of(
        kubeconfig, context, "minting a token through a kubeconfig (or pass --token-file)"
    )
    import urllib3  # noqa: PLC0415
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    # Fail fast: one attempt, no retries of a refused connection.
    configuration.retries = urllib3.Retry(total=0, redirect=0)
    body = client.AuthenticationV1TokenRequest(
        api_version="authentication.k8s.io/v1",
        kind="TokenRequest",
        spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=EXPIRATION_SECONDS),
    )
    where = f"service account {namespace}/{service_account}"
    with client.ApiClient(configuration) as api:
        try:
            answer: Any = client.CoreV1Api(api).create_namespaced_service_account_token(
                service_account, namespace, body, _request_timeout=timeout
            )
        except ApiException as exc:
            message = f"TokenRequest for {where} refused: {_status_message(exc)}"
            if exc.status is not None and 400 <= exc.status < 500:
                raise ServerRefusedError(message, status=exc.status) from exc
            raise ServerUnavailableError(message, transient=False, status=exc.status) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise ServerUnavailableError(
                f"cannot reach the Kubernetes API for a token of {where}: {type(exc).__name__}",
                transient=True,
            ) from exc
    token = getattr(getattr(answer, "status", None), "token", None)
    if not isinstance(token, str) or not token:
        raise ServerUnavailableError(f"TokenRequest for {where} returned no token", transient=False)
    return token


def _status_message(exc: ApiException) -> str:
    # The API server's Status body; its message never holds a token.
    try:
        message = json.loads(exc.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    text = str(message or exc.reason or "no message")
    return f"{_short(text)} [HTTP {exc.status}]"


def _short(value: object) -> str:
    # The API server's (or a kubeconfig's) text lands on a terminal: one line, kept short, with
    # control and bidi characters escaped like every server text kamus-cli prints.
    text = " ".join(str(value).split())
    return escape_unsafe(text[:_MAX_MESSAGE])
