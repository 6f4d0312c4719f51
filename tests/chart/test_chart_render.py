"""The chart renders with Helm's engine, lints clean in strict mode, produces objects valid for a
current Kubernetes, and refuses to render without keys or with values the schema rejects."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]

CHART = Path(__file__).resolve().parents[2] / "charts" / "kamus"
KUBERNETES = kubernetes_validate.latest_version()
# Custom resources kubernetes-validate has no schema for; every other kind must validate.
UNKNOWN_TO_VALIDATOR = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # its rules: promtool (test_chart_monitoring)
}

Manifests = Callable[[str], list[dict[str, Any]]]
Render = Callable[..., dict[str, str]]
Values = Callable[[str], dict[str, Any]]


def lint_findings(values: dict[str, Any]) -> list[str]:
    report = helm.lint(CHART, values, strict=True, namespace="kamus", kube_version=f"v{KUBERNETES}")
    # Severity 2 is a warning, 3 an error; strict lint fails on both. Info (1) is advice only.
    findings = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return findings + [str(error) for error in report["errors"]]


def test_chart_lints_clean_in_strict_mode(case: str, case_values: Values) -> None:
    assert lint_findings(case_values(case)) == []


def test_every_object_is_valid_for_a_current_kubernetes_in_strict_mode(
    case: str, manifests: Manifests
) -> None:
    skipped = []
    for manifest in manifests(case):
        kind = (manifest["apiVersion"], manifest["kind"])
        if kind in UNKNOWN_TO_VALIDATOR:
            skipped.append(kind)
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {path}: {exc.message}")
    assert all(kind in UNKNOWN_TO_VALIDATOR for kind in skipped)


def test_service_monitor_scrapes_metrics_of_both_services(manifests: Manifests) -> None:
    (monitor,) = [m for m in manifests("service-monitor") if m["kind"] == "ServiceMonitor"]
    services = [m for m in manifests("service-monitor") if m["kind"] == "Service"]
    selector = monitor["spec"]["selector"]
    for service in services:
        labels = service["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector["matchLabels"].items())
        assert labels["app.kubernetes.io/component"] in selector["matchExpressions"][0]["values"]
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_optional_objects_appear_only_when_enabled(manifests: Manifests) -> None:
    def kinds(case: str) -> list[str]:
        return sorted(m["kind"] for m in manifests(case))

    assert "HorizontalPodAutoscaler" not in kinds("default")
    assert kinds("hpa").count("HorizontalPodAutoscaler") == 2
    assert "Ingress" not in kinds("default")
    assert kinds("ingress").count("Ingress") == 1
    assert "ServiceMonitor" not in kinds("default")
    assert "PrometheusRule" not in kinds("default")
    assert "ConfigMap" not in kinds("default")
    assert kinds("monitoring").count("PrometheusRule") == 1
    assert kinds("monitoring").count("ConfigMap") == 1
    assert kinds("default").count("PodDisruptionBudget") == 2
    assert kinds("default").count("NetworkPolicy") == 1
    # Keys given as existing Secrets are never copied into a chart-made one.
    assert "Secret" not in kinds("existing-secrets")
    assert kinds("default").count("Secret") == 1


def test_chart_created_secret_holds_exactly_the_keys_given(
    manifests: Manifests, case_values: Values
) -> None:
    (secret,) = [m for m in manifests("default") if m["kind"] == "Secret"]
    assert sorted(secret["data"]) == ["audit.key", "keyring.json"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (named,) = [m for m in manifests("per-service-account") if m["kind"] == "Secret"]
    assert sorted(named["data"]) == ["audit.key", "naming.key"]
    given = case_values("default")["keyring"]["create"]["keyringJson"]
    assert base64.b64decode(secret["data"]["keyring.json"]).decode() == given


def test_ingress_exposes_only_the_encrypt_routes_of_the_encryptor(manifests: Manifests) -> None:
    (ingress,) = [m for m in manifests("ingress") if m["kind"] == "Ingress"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "kamus-encryptor.example.com"
    paths = rule["http"]["paths"]
    assert {(p["path"], p["pathType"]) for p in paths} == {
        ("/api/v1/encrypt", "Exact"),
        ("/api/v1/isAlive", "Exact"),
        ("/", "Exact"),  # the encrypt page (webPage, on by default) and its files
        ("/ui/", "Prefix"),
    }
    assert {p["backend"]["service"]["name"] for p in paths} == {"kamus-encryptor"}
    assert ingress["spec"]["tls"] == [
        {"hosts": ["kamus-encryptor.example.com"], "secretName": "kamus-encryptor-tls"}
    ]


def test_without_the_web_page_the_ingress_routes_only_the_api(
    objects_of: Callable[..., list[dict[str, Any]]], case_values: Values
) -> None:
    values = case_values("ingress")
    values["encryptor"]["webPage"] = False
    objects = objects_of(CHART, values)
    (ingress,) = [m for m in objects if m["kind"] == "Ingress"]
    paths = {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/api/v1/encrypt", "/api/v1/isAlive"}
    (encryptor,) = [
        m for m in objects if m["kind"] == "Deployment" and "encryptor" in m["metadata"]["name"]
    ]
    env = {
        e["name"]: e.get("value")
        for e in encryptor["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KAMUS_WEB_PAGE"] == "false"


def test_page_paths_given_by_the_user_are_not_repeated(
    objects_of: Callable[..., list[dict[str, Any]]], case_values: Values
) -> None:
    values = case_values("ingress")
    values["encryptor"]["ingress"]["paths"] = [{"path": "/", "pathType": "Prefix"}]
    (ingress,) = [m for m in objects_of(CHART, values) if m["kind"] == "Ingress"]
    paths = [(p["path"], p["pathType"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == [("/", "Prefix"), ("/ui/", "Prefix")]


def test_with_sealing_keys_the_ingress_routes_the_public_key_and_the_seal_api(
    objects_of: Callable[..., list[dict[str, Any]]], case_values: Values
) -> None:
    values = case_values("ingress")
    values["sealingKeys"] = {"existingSecret": {"name": "kamus-sealing"}}
    (ingress,) = [m for m in objects_of(CHART, values) if m["kind"] == "Ingress"]
    paths = {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert {"/api/v1/sealing-key", "/api/v1/seal", "/", "/ui/"} <= paths
    assert "/api/v1/decrypt" not in paths


def test_autoscaler_owns_the_replica_count(manifests: Manifests) -> None:
    deployments = {m["metadata"]["name"]: m for m in manifests("hpa") if m["kind"] == "Deployment"}
    hpas = {
        m["metadata"]["name"]: m for m in manifests("hpa") if m["kind"] == "HorizontalPodAutoscaler"
    }
    assert set(hpas) == set(deployments) == {"kamus-encryptor", "kamus-decryptor"}
    for name, hpa in hpas.items():
        assert "replicas" not in deployments[name]["spec"]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
    assert hpas["kamus-decryptor"]["spec"]["minReplicas"] == 3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({}, "The local provider's keyring is required", id="no-keyring"),
        pytest.param(
            {"auditKey": {"create": {"value": "QUJD" * 11}}},
            "kamus-cli keyring new",
            id="no-keyring-says-how-to-make-one",
        ),
        pytest.param(
            {"keyring": {"existingSecret": {"name": "kamus-keys"}}},
            "The decryptor's audit key is required",
            id="no-audit-key",
        ),
        pytest.param(
            {
                "keyring": {"existingSecret": {"name": "k"}, "create": {"keyringJson": "{}"}},
                "auditKey": {"existingSecret": {"name": "k"}},
            },
            "not both",
            id="keyring-twice",
        ),
        pytest.param(
            {
                "keyring": {"create": {"keyringJson": "not json"}},
                "auditKey": {"existingSecret": {"name": "k"}},
            },
            "must be the JSON keyring",
            id="keyring-not-json",
        ),
        pytest.param(
            {
                "keyring": {"existingSecret": {"name": "k"}},
                "auditKey": {"create": {"value": "c2hvcnQ="}},
            },
            "at least 32 bytes",
            id="audit-key-too-short",
        ),
        pytest.param(
            {"provider": "gcp", "kms": {"key": "k"}, "auditKey": {"existingSecret": {"name": "a"}}},
            "gcp.keyRing is required",
            id="gcp-without-key-ring",
        ),
        pytest.param(
            {
                "provider": "aws",
                "aws": {"region": "eu-west-1"},
                "auditKey": {"existingSecret": {"name": "a"}},
            },
            "kms.key is required",
            id="shared-mode-without-key",
        ),
        pytest.param(
            {
                "provider": "aws",
                "aws": {"region": "eu-west-1"},
                "kms": {"keyMode": "per-service-account"},
                "auditKey": {"existingSecret": {"name": "a"}},
            },
            "naming key is required",
            id="per-service-account-without-naming-key",
        ),
        pytest.param(
            {
                "provider": "vault",
                "vault": {"addr": "https://vault:8200"},
                "kms": {"key": "k"},
                "auditKey": {"existingSecret": {"name": "a"}},
            },
            "vault.token.existingSecret.name is required",
            id="vault-without-token",
        ),
        pytest.param(
            {
                "provider": "pkcs11",
                "pkcs11": {"library": "/hsm.so", "tokenLabel": "t"},
                "kms": {"key": "k"},
                "auditKey": {"existingSecret": {"name": "a"}},
            },
            "pkcs11.pin.existingSecret.name is required",
            id="pkcs11-without-pin",
        ),
        pytest.param(
            {
                "provider": "azure",
                "kms": {"key": "k"},
                "auditKey": {"existingSecret": {"name": "a"}},
            },
            "azure.vaultUrl is required for the azure provider",
            id="azure-without-vault",
        ),
        pytest.param(
            {
                "provider": "azure",
                "azure": {"vaultUrl": "https://v.vault.azure.net", "credential": "client-secret"},
                "kms": {"key": "k"},
                "auditKey": {"existingSecret": {"name": "a"}},
            },
            "azure.credential client-secret needs azure.tenantId",
            id="azure-client-secret-without-secret",
        ),
        pytest.param(
            {
                "keyring": {"existingSecret": {"name": "k"}},
                "auditKey": {"existingSecret": {"name": "k"}},
                "encryptor": {"ingress": {"enabled": True}},
            },
            "encryptor.ingress.host is required",
            id="ingress-without-host",
        ),
    ],
)
def test_chart_refuses_to_render_without_what_it_needs(
    render: Render, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        pytest.param({"provider": "hashicorp"}, "/provider", id="unknown-provider"),
        pytest.param({"keyring": {"existingSecert": {}}}, "existingSecert", id="typo"),
        pytest.param(
            {"encryptor": {"extraEnv": [{"name": "KAMUS_DEV_MODE", "value": "true"}]}},
            "/encryptor/extraEnv/0/name",
            id="kamus-variable-in-extra-env",
        ),
        pytest.param({"decryptor": {"replicaCount": "2"}}, "/decryptor/replicaCount", id="type"),
        pytest.param(
            {"decryptor": {"tokenVerification": "none"}},
            "/decryptor/tokenVerification",
            id="token-verification",
        ),
        pytest.param({"auditKey": {"create": {"value": "not base64!"}}}, "/auditKey", id="base64"),
    ],
)
def test_schema_rejects_invalid_values(
    render: Render, keys: dict[str, Any], values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render({**keys, **values})
