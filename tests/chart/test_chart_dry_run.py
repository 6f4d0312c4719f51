"""The charts' objects as a real kube-apiserver admits them: a server-side dry run (schemas with
strict field validation, admission, RBAC's escalation check) into namespaces labelled for
PodSecurity `restricted`, whose warnings on pod templates count as refusals."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

Manifests = Callable[[str], list[dict[str, Any]]]
EXAMPLE_CHART = Path(__file__).resolve().parents[2] / "charts" / "kamus-example-workload"
NAMESPACE = "kamus"  # where the chart tests render the kamus chart
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}
EXAMPLE_NAMESPACE = "example-restricted"
EXAMPLE_VALUES = {
    "secrets": {"password": "kamus:v1:local:team-a:example-app:k1:AAECAwQFBgcICQoLDA0ODxAREhMU"}
}


@pytest.fixture(scope="module")
def apiserver(kube_apiserver: KubeAPIServer) -> KubeAPIServer:
    """The session's API server with restricted namespaces and the ServiceMonitor kind."""
    for namespace in (NAMESPACE, EXAMPLE_NAMESPACE):
        kube_apiserver.create_namespace(namespace, RESTRICTED)
    kube_apiserver.install_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors")
    return kube_apiserver


def refusals(server: KubeAPIServer, manifests: list[dict[str, Any]], namespace: str) -> list[str]:
    """What the server refused or warned about, one line per object."""
    problems = []
    for manifest in manifests:
        response = server.dry_run(manifest, namespace)
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if response.status_code != 201:
            problems.append(f"{name}: {response.status_code} {response.json().get('message')}")
        elif "Warning" in response.headers:
            problems.append(f"{name}: warning: {response.headers['Warning']}")
    return problems


def test_every_object_of_the_chart_is_admitted(
    case: str, apiserver: KubeAPIServer, manifests: Manifests
) -> None:
    assert refusals(apiserver, manifests(case), NAMESPACE) == []


def test_the_example_workload_is_admitted(
    apiserver: KubeAPIServer, objects_of: Callable[..., list[dict[str, Any]]]
) -> None:
    example = objects_of(
        EXAMPLE_CHART, EXAMPLE_VALUES, release="example", namespace=EXAMPLE_NAMESPACE
    )
    assert refusals(apiserver, example, EXAMPLE_NAMESPACE) == []


def test_a_pod_template_outside_restricted_is_reported(
    apiserver: KubeAPIServer, manifests: Manifests
) -> None:
    """The check has teeth: the decryptor allowed to escalate privileges is refused."""
    (deployment,) = [
        m for m in manifests("default")
        if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("decryptor")
    ]  # fmt: skip
    loosened = copy.deepcopy(deployment)
    for container in loosened["spec"]["template"]["spec"]["containers"]:
        container["securityContext"]["allowPrivilegeEscalation"] = True
    (problem,) = refusals(apiserver, [loosened], NAMESPACE)
    assert "would violate PodSecurity" in problem
    assert "allowPrivilegeEscalation" in problem
