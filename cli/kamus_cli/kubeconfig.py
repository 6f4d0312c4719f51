"""The kubernetes client's configuration from a kubeconfig, for the commands that talk to a
cluster (minting tokens, scanning ConfigMaps, reading the audit witness).

The client is an extra of kamus-cli (``kamus-cli[kubernetes]``) and costs about a second to
import: it is imported here, when a command needs it, never at start.
"""

from __future__ import annotations

from typing import Any

from kamus_client.errors import InputError
from kamus_client.terminal import escape_unsafe

_MAX_REASON = 300


def load(kubeconfig: str | None, context: str | None, needed_for: str) -> Any:
    """A ``kubernetes.client.Configuration`` from ``kubeconfig`` (None: the default one).

    InputError when the client is not installed (naming what ``needed_for`` it) or the kubeconfig
    does not load.
    """
    try:
        from kubernetes import client, config  # noqa: PLC0415 - the kubernetes extra, only here
    except ImportError as exc:
        raise InputError(
            f"{needed_for} needs the kubernetes client: pip install 'kamus-cli[kubernetes]'"
        ) from exc
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (config.ConfigException, OSError, ValueError) as exc:
        # The kubeconfig's text lands on a terminal: one line, short, escaped.
        reason = escape_unsafe(" ".join(str(exc).split())[:_MAX_REASON])
        raise InputError(
            f"cannot load the kubeconfig {kubeconfig or '(default)'}: {reason}"
        ) from exc
    return configuration
