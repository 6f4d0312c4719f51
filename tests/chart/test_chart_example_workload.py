"""The example workload chart: valid objects, and a pod wired the way kamus-init and the decryptor
expect (a kamus-audience projected token, a memory emptyDir, no default token mount; with
`tls.enabled`, an https:// URL and the decryptor's CA mounted for KAMUS_CA_BUNDLE)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]

from kamus_init.settings import load_settings as load_init_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "charts" / "kamus-example-workload"
KAMUS = EXAMPLE.parent / "kamus"
CIPHERTEXTS = {
    "password": "kamus:v1:local:team-a:example-app:k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
    "api-key": "kamus:v1:local:team-a:example-app:k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8",
}

TLS_VALUES = {"secrets": CIPHERTEXTS, "tls": {"enabled": True, "caBundleConfigMap": "kamus-ca"}}

Render = Callable[..., dict[str, str]]


def render_example(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The example rendered into team-a."""
    with helm.Chart.load(EXAMPLE) as chart:
        rendered = chart.render(values, name="example", namespace="team-a", is_install=True)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


@pytest.fixture(scope="module")
def workload() -> list[dict[str, Any]]:
    """The example rendered into team-a with two ciphertexts."""
    return render_example({"secrets": CIPHERTEXTS})


@pytest.fixture(scope="module")
def tls_workload() -> list[dict[str, Any]]:
    """The same, for a decryptor serving HTTPS (the kamus chart's tls.enabled)."""
    return render_example(TLS_VALUES)


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def test_example_lints_clean_and_validates(workload: list[dict[str, Any]]) -> None:
    report = helm.lint(EXAMPLE, {"secrets": CIPHERTEXTS}, strict=True, namespace="team-a")
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert report["errors"] == []
    version = kubernetes_validate.latest_version()
    for manifest in workload:
        kubernetes_validate.validate(manifest, version, strict=True)
    assert sorted(m["kind"] for m in workload) == ["ConfigMap", "Deployment", "ServiceAccount"]


def test_example_pod_is_wired_for_kamus_init(workload: list[dict[str, Any]]) -> None:
    config_map = by_kind(workload, "ConfigMap")
    assert config_map["data"] == CIPHERTEXTS
    account = by_kind(workload, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    spec = by_kind(workload, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"] == "example-app"
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["encrypted"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes["decrypted"]["emptyDir"]["medium"] == "Memory"
    (token,) = volumes["kamus-token"]["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == "kamus"
    assert token["serviceAccountToken"]["path"] == "token"

    (init,) = spec["initContainers"]
    assert init["args"] == ["-e", "/encrypted", "-d", "/decrypted", "-f", "files"]
    env = {v["name"]: v["value"] for v in init["env"]}
    assert env["TOKEN_FILE_PATH"] == "/var/run/secrets/kamus/token"
    assert "KAMUS_CA_BUNDLE" not in env  # tls.enabled is off by default
    assert "kamus-ca" not in volumes
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts == {
        "encrypted": "/encrypted",
        "decrypted": "/decrypted",
        "kamus-token": "/var/run/secrets/kamus",
    }
    # kamus-init itself accepts these flags and this environment.
    settings = load_init_settings(init["args"], env)
    assert str(settings.token_path) == env["TOKEN_FILE_PATH"]
    (app,) = spec["containers"]
    assert {"name": "decrypted", "mountPath": "/secrets", "readOnly": True} in app["volumeMounts"]


def test_example_reaches_the_decryptor_service_of_the_kamus_chart(
    workload: list[dict[str, Any]], manifests: Callable[[str], list[dict[str, Any]]]
) -> None:
    (service,) = [
        m
        for m in manifests("default")
        if m["kind"] == "Service"
        and m["metadata"]["labels"]["app.kubernetes.io/component"] == "decryptor"
    ]
    spec = by_kind(workload, "Deployment")["spec"]["template"]["spec"]
    env = {v["name"]: v["value"] for v in spec["initContainers"][0]["env"]}
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert service["spec"]["ports"][0]["port"] == 80
    assert env["KAMUS_URL"] == f"http://{name}.{namespace}.svc"


def test_example_refuses_the_default_service_account(render: Render) -> None:
    with pytest.raises(helm.HelmValuesError, match="serviceAccountName"):
        render({"serviceAccountName": "default"}, EXAMPLE)


def test_example_with_tls_lints_clean_and_validates(tls_workload: list[dict[str, Any]]) -> None:
    report = helm.lint(EXAMPLE, TLS_VALUES, strict=True, namespace="team-a")
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert report["errors"] == []
    version = kubernetes_validate.latest_version()
    for manifest in tls_workload:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_example_with_tls_trusts_the_ca_bundle(
    tls_workload: list[dict[str, Any]], tmp_path: Path
) -> None:
    spec = by_kind(tls_workload, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kamus-ca"]["configMap"] == {
        "name": "kamus-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    (init,) = spec["initContainers"]
    env = {v["name"]: v["value"] for v in init["env"]}
    assert env["KAMUS_URL"] == "https://kamus-decryptor.kamus.svc"
    assert env["KAMUS_CA_BUNDLE"] == "/etc/kamus/ca/ca.crt"
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert mounts["kamus-ca"] == {
        "name": "kamus-ca",
        "mountPath": "/etc/kamus/ca",
        "readOnly": True,
    }
    # The app container never sees the CA mount (nor anything but its plaintexts).
    (app,) = spec["containers"]
    assert [m["name"] for m in app["volumeMounts"]] == ["decrypted"]
    # kamus-init accepts the https:// URL and the bundle (here a stand-in file for the mount).
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_init_settings(init["args"], {**env, "KAMUS_CA_BUNDLE": str(bundle)})
    assert settings.ca_bundle == bundle
    assert settings.kamus_url.startswith("https://kamus-decryptor.kamus.svc")


def test_example_with_tls_reaches_the_https_decryptor_of_the_kamus_chart(
    tls_workload: list[dict[str, Any]], manifests: Callable[[str], list[dict[str, Any]]]
) -> None:
    (service,) = [
        m
        for m in manifests("tls")
        if m["kind"] == "Service"
        and m["metadata"]["labels"]["app.kubernetes.io/component"] == "decryptor"
    ]
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("https", 443)
    spec = by_kind(tls_workload, "Deployment")["spec"]["template"]["spec"]
    env = {v["name"]: v["value"] for v in spec["initContainers"][0]["env"]}
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert env["KAMUS_URL"] == f"https://{name}.{namespace}.svc"


@pytest.mark.parametrize(
    ("tls", "extra", "message"),
    [
        pytest.param({"enabled": True}, {}, "tls.caBundleConfigMap is required", id="no-ca"),
        pytest.param(
            {"enabled": True, "caBundleConfigMap": "kamus-ca"},
            {"kamusUrl": "http://kamus-decryptor.kamus.svc"},
            "kamusUrl must be an https:// URL",
            id="http-url",
        ),
    ],
)
def test_example_with_tls_refuses_what_kamus_init_could_not_use(
    render: Render, tls: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render({"tls": tls, **extra}, EXAMPLE)


def test_example_with_watch_runs_kamus_init_as_a_native_sidecar(render: Render) -> None:
    manifests = render_example({"secrets": CIPHERTEXTS, "watch": True})
    report = helm.lint(EXAMPLE, {"secrets": CIPHERTEXTS, "watch": True}, strict=True,
                       namespace="team-a")  # fmt: skip
    assert report["errors"] == []
    version = kubernetes_validate.latest_version()
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)
    spec = by_kind(manifests, "Deployment")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["restartPolicy"] == "Always"
    assert init["args"][-1] == "--watch"
    assert init["startupProbe"]["exec"]["command"] == ["test", "-e", "/decrypted/..data"]
