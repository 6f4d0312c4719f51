"""Security properties of every rendered value set: hardened containers, no API token where none is
needed, TokenReview rights for the decryptor alone, keys only as read-only files, a decryptor kept
in-cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Manifest = dict[str, Any]
Manifests = Callable[[str], list[Manifest]]
TlsEnabled = Callable[[str], bool]


def objects(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def pod_specs(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {
        name: d["spec"]["template"]["spec"] for name, d in objects(manifests, "Deployment").items()
    }


def test_both_services_are_deployed_with_two_replicas_behind_cluster_ip_services(
    manifests: Manifests,
) -> None:
    rendered = manifests("default")
    deployments = objects(rendered, "Deployment")
    assert set(deployments) == {"kamus-encryptor", "kamus-decryptor"}
    assert all(d["spec"]["replicas"] == 2 for d in deployments.values())
    services = objects(rendered, "Service")
    assert set(services) == set(deployments)
    for name, service in services.items():
        assert service["spec"]["type"] == "ClusterIP"
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
    budgets = objects(rendered, "PodDisruptionBudget")
    assert {name: b["spec"]["maxUnavailable"] for name, b in budgets.items()} == {
        "kamus-encryptor": 1,
        "kamus-decryptor": 1,
    }


def test_every_container_is_non_root_read_only_and_without_capabilities(
    case: str, manifests: Manifests
) -> None:
    for name, spec in pod_specs(manifests(case)).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["enableServiceLinks"] is False, name
        assert spec.get("hostNetwork", False) is False
        assert spec.get("hostPID", False) is False
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == 10001, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context.get("privileged", False) is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_every_container_has_resources_probes_and_a_writable_tmp(
    case: str, manifests: Manifests, tls_enabled: TlsEnabled
) -> None:
    # Plain HTTP unless tls.enabled; then the port is named https and the probes speak HTTPS.
    port = {"port": "https", "scheme": "HTTPS"} if tls_enabled(case) else {"port": "http"}
    for name, spec in pod_specs(manifests(case)).items():
        (container,) = spec["containers"]
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) >= {"cpu", "memory"}, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", **port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", **port}
        assert container["ports"] == [
            {"name": port["port"], "containerPort": 8080, "protocol": "TCP"}
        ]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]], name


def test_only_the_decryptor_gets_an_api_token(case: str, manifests: Manifests) -> None:
    rendered = manifests(case)
    specs = pod_specs(rendered)
    accounts = objects(rendered, "ServiceAccount")
    encryptor = specs["kamus-encryptor"]
    assert encryptor["automountServiceAccountToken"] is False
    assert accounts[encryptor["serviceAccountName"]]["automountServiceAccountToken"] is False
    for volume in encryptor["volumes"]:
        sources = volume.get("projected", {}).get("sources", [])
        assert not any("serviceAccountToken" in source for source in sources)
    decryptor = specs["kamus-decryptor"]
    assert decryptor["automountServiceAccountToken"] is True  # in-cluster config for TokenReview
    assert decryptor["serviceAccountName"] != encryptor["serviceAccountName"]


def test_only_the_decryptor_account_may_review_tokens_and_nothing_else(
    case: str, manifests: Manifests
) -> None:
    rendered = manifests(case)
    decryptor_account = pod_specs(rendered)["kamus-decryptor"]["serviceAccountName"]
    (role,) = objects(rendered, "ClusterRole").values()
    rules = [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
              "verbs": ["create"]}]  # fmt: skip
    if case == "hybrid-tokens":
        rules.append({"nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"],
                      "verbs": ["get"]})  # fmt: skip
    assert role["rules"] == rules
    (binding,) = objects(rendered, "ClusterRoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": decryptor_account, "namespace": "kamus"}
    ]
    # The one namespaced right: with signed checkpoints, patching the audit witness ConfigMap.
    roles, bindings = objects(rendered, "Role"), objects(rendered, "RoleBinding")
    if case != "audit-file-pvc":
        assert not roles
        assert not bindings
        return
    (witness,) = roles.values()
    assert witness["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                 "resourceNames": ["kamus-decryptor-audit-heads"],
                                 "verbs": ["get", "patch"]}]  # fmt: skip
    (bound,) = bindings.values()
    assert bound["roleRef"]["name"] == witness["metadata"]["name"]
    assert bound["subjects"] == binding["subjects"]
    (configmap,) = (m for m in rendered if m["kind"] == "ConfigMap"
                    and m["metadata"]["name"] == "kamus-decryptor-audit-heads")  # fmt: skip
    assert "data" not in configmap  # helm upgrade leaves the decryptor's entries alone
    assert configmap["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_keys_are_read_only_files_never_environment_values(case: str, manifests: Manifests) -> None:
    for name, spec in pod_specs(manifests(case)).items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        (container,) = spec["containers"]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        for volume_name, volume in volumes.items():
            if "secret" in volume:
                assert mounts[volume_name]["readOnly"] is True, (name, volume_name)
                assert volume["secret"]["defaultMode"] == 0o440
        for variable in container["env"]:
            # Secret settings travel as *_FILE paths; a secretKeyRef would put them in the env.
            assert "secretKeyRef" not in variable.get("valueFrom", {}), variable["name"]
            assert variable["name"] not in {"KAMUS_DEV_MODE", "KAMUS_DEV_DIR", "KAMUS_KUBECONFIG"}


def test_network_policy_admits_only_pods_of_the_cluster_to_the_decryptor(
    case: str, manifests: Manifests, tls_enabled: TlsEnabled
) -> None:
    rendered = manifests(case)
    (policy,) = objects(rendered, "NetworkPolicy").values()
    decryptor = objects(rendered, "Deployment")["kamus-decryptor"]
    assert (
        policy["spec"]["podSelector"]["matchLabels"] == decryptor["spec"]["selector"]["matchLabels"]
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    port = "https" if tls_enabled(case) else "http"
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    for peer in rule["from"]:
        # A namespaceSelector matches pods only; an ipBlock could admit the outside world.
        assert "ipBlock" not in peer
        assert "namespaceSelector" in peer
    if case == "restricted-network":
        assert rule["from"][0]["namespaceSelector"] == {
            "matchLabels": {"kamus.io/secrets": "enabled"}
        }


def test_replicas_are_spread_over_nodes_and_zones(case: str, manifests: Manifests) -> None:
    for deployment in objects(manifests(case), "Deployment").values():
        spec = deployment["spec"]["template"]["spec"]
        constraints = spec["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in constraints] == [
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        ]
        for constraint in constraints:
            selected = constraint["labelSelector"]["matchLabels"]
            assert selected == deployment["spec"]["selector"]["matchLabels"]


def test_audit_chains_live_on_their_own_volume_one_file_per_process(manifests: Manifests) -> None:
    for case, kind in (
        ("audit-file-emptydir", "emptyDir"),
        ("audit-file-pvc", "persistentVolumeClaim"),
    ):
        spec = pod_specs(manifests(case))["kamus-decryptor"]
        (container,) = spec["containers"]
        env = {v["name"]: v for v in container["env"]}
        # Each worker writes <pod>-<pid>.jsonl there (HOSTNAME is the pod's name).
        assert env["KAMUS_AUDIT_DIR"]["value"] == "/var/log/kamus"
        assert "KAMUS_AUDIT_FILE" not in env
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/log/kamus"]
        volume = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
        assert kind in volume
    encryptor = pod_specs(manifests("audit-file-pvc"))["kamus-encryptor"]
    assert "KAMUS_AUDIT_DIR" not in {v["name"] for v in encryptor["containers"][0]["env"]}
