"""The charts' objects as a real kube-apiserver admits them: a server-side dry run (schemas with
strict field validation, admission, RBAC's escalation check) into namespaces labelled for
PodSecurity `restricted`, whose warnings on pod templates count as refusals."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

Manifests = Callable[[str], list[dict[str, Any]]]
CHART = Path(__file__).resolve().parents[2] / "charts" / "kamus"
EXAMPLE_CHART = CHART.parent / "kamus-example-workload"
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
    """The session's API server with restricted namespaces and the Prometheus Operator's kinds."""
    for namespace in (NAMESPACE, EXAMPLE_NAMESPACE):
        kube_apiserver.create_namespace(namespace, RESTRICTED)
    kube_apiserver.install_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors")
    kube_apiserver.install_crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules")
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


@pytest.mark.parametrize("watch", [False, True], ids=["init", "native-sidecar"])
def test_the_example_workload_is_admitted(
    apiserver: KubeAPIServer, objects_of: Callable[..., list[dict[str, Any]]], watch: bool
) -> None:
    example = objects_of(
        EXAMPLE_CHART, {**EXAMPLE_VALUES, "watch": watch}, release="example",
        namespace=EXAMPLE_NAMESPACE,
    )  # fmt: skip
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


@pytest.mark.parametrize("tokens", ["tokenreview", "hybrid"])
def test_the_charts_rbac_lets_the_decryptor_review_tokens_and_nothing_else(
    apiserver: KubeAPIServer, objects_of: Callable[..., list[dict[str, Any]]], tokens: str
) -> None:
    """Created for real: the decryptor's account may create TokenReviews (and, in hybrid mode,
    read the OIDC documents), and is refused what system:auth-delegator would add."""
    values = {"keyring": {"existingSecret": {"name": "k"}},
              "auditKey": {"existingSecret": {"name": "k"}},
              "decryptor": {"tokenVerification": tokens}}  # fmt: skip
    namespace = f"rbac-{tokens}"
    apiserver.create_namespace(namespace)
    rendered = objects_of(CHART, values, release="kamus", namespace=namespace)
    for manifest in rendered:
        if manifest["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}:
            apiserver.apply(manifest)
    token = apiserver.mint(namespace, "kamus-decryptor", (), expiration_seconds=3600)

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> int:
        response = requests.request(
            method, f"{apiserver.url}{path}", json=body, timeout=10,
            headers={"Authorization": f"Bearer {token}"}, verify=str(apiserver.ca_file),
        )  # fmt: skip
        return response.status_code

    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": "x.y.z", "audiences": ["kamus"]}}  # fmt: skip
    attributes = {"verb": "get", "resource": "secrets"}
    access = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "someone", "resourceAttributes": attributes}}  # fmt: skip
    assert call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review) == 201
    assert call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", access) == 403
    assert call("GET", f"/api/v1/namespaces/{namespace}/secrets") == 403
    if tokens == "hybrid":
        assert call("GET", "/openid/v1/jwks") == 200
