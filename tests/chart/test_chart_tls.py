"""Optional HTTPS (`tls.enabled`): gunicorn serves the certificate of a kubernetes.io/tls Secret
mounted read-only, and the probes, Services, NetworkPolicy, Ingress backend and ServiceMonitor
follow the `https` port; the release notes point kamus-init at https:// with a CA bundle. Without
`tls.enabled` every object stays plain HTTP, as before, and enabling it without a Secret fails."""

from __future__ import annotations

import os
import runpy
import shlex
from collections.abc import Callable
from typing import Any
from unittest import mock

import helm_python as helm
import pytest
import yaml
from gunicorn.config import Config

Manifest = dict[str, Any]
Manifests = Callable[[str], list[Manifest]]
Rendered = Callable[[str], dict[str, str]]
Render = Callable[..., dict[str, str]]
Values = Callable[[str], dict[str, Any]]

TLS_DIR = "/etc/kamus/tls"
CERT_ARGS = f"--certfile={TLS_DIR}/tls.crt --keyfile={TLS_DIR}/tls.key"
NOTES = "kamus/templates/NOTES.txt"
EXISTING_KEYS = {
    "keyring": {"existingSecret": {"name": "kamus-keys"}},
    "auditKey": {"existingSecret": {"name": "kamus-keys"}},
}
# The Secret each TLS value set mounts, and the port of each Service.
SECRETS = {
    "tls": {"encryptor": "kamus-tls", "decryptor": "kamus-tls"},
    "tls-per-service": {"encryptor": "kamus-encryptor-tls", "decryptor": "kamus-decryptor-tls"},
}
PORTS = {
    "tls": {"encryptor": 443, "decryptor": 443},
    "tls-per-service": {"encryptor": 443, "decryptor": 8443},
}


def by_component(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m
        for m in manifests
        if m["kind"] == kind
    }


def objects(rendered: dict[str, str]) -> list[Manifest]:
    """The Kubernetes objects of one rendering (NOTES.txt is not one)."""
    return [
        document
        for path, text in rendered.items()
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def gunicorn_args(deployment: Manifest) -> str:
    (container,) = pod_spec(deployment)["containers"]
    (value,) = [v["value"] for v in container["env"] if v["name"] == "GUNICORN_CMD_ARGS"]
    assert isinstance(value, str)
    return value


def gunicorn_settings(deployment: Manifest) -> Any:
    """What gunicorn makes of the container, in Application.load_config's order: the image's
    configuration module (kamus_service/gunicorn_conf.py) under the container's environment,
    then GUNICORN_CMD_ARGS."""
    (container,) = pod_spec(deployment)["containers"]
    environ = {v["name"]: v["value"] for v in container["env"] if "value" in v}
    config = Config()
    with mock.patch.dict(os.environ, environ):
        module = runpy.run_module("kamus_service.gunicorn_conf")
    for name, value in module.items():
        if name in config.settings:
            config.set(name, value)
    parsed = config.parser().parse_args(shlex.split(environ["GUNICORN_CMD_ARGS"]))
    for name, value in vars(parsed).items():
        if value is not None and name != "args":
            config.set(name.lower(), value)
    return config


def test_gunicorn_serves_the_certificate_of_the_mounted_secret(
    tls_case: str, manifests: Manifests, render: Render, case_values: Values
) -> None:
    plain_values = case_values(tls_case)
    plain_values["tls"]["enabled"] = False
    plain = by_component(objects(render(plain_values)), "Deployment")
    for component, deployment in by_component(manifests(tls_case), "Deployment").items():
        args = gunicorn_args(deployment)
        # Exactly the plain-HTTP command line (workers, threads, timeouts kept) plus the files.
        assert args == f"{gunicorn_args(plain[component])} {CERT_ARGS}", component
        settings = gunicorn_settings(deployment)
        assert settings.is_ssl, component
        assert settings.certfile == f"{TLS_DIR}/tls.crt"
        assert settings.keyfile == f"{TLS_DIR}/tls.key"
        assert settings.bind == ["0.0.0.0:8080"]
        assert settings.worker_class_str == "kamus_service.worker.BufferingWorker"
        # Each worker accepts on a socket of its own, so connections spread over the workers
        # (docs/PERFORMANCE.md); no admin control socket in the container.
        assert settings.reuse_port is True
        assert settings.control_socket_disable is True
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == TLS_DIR]
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == SECRETS[tls_case][component]
        assert secret["defaultMode"] == 0o440
        assert secret["items"] == [
            {"key": "tls.crt", "path": "tls.crt"},
            {"key": "tls.key", "path": "tls.key"},
        ]
        # No subPath: the kubelet swaps renewed certificates in; gunicorn reads them per connection.
        assert "subPath" not in mount
    if tls_case == "tls-per-service":
        encryptor = gunicorn_settings(plain["encryptor"])
        assert (encryptor.workers, encryptor.threads, encryptor.timeout) == (3, 8, 45)


def test_probes_ports_and_services_speak_https(tls_case: str, manifests: Manifests) -> None:
    rendered = manifests(tls_case)
    services = by_component(rendered, "Service")
    for component, deployment in by_component(rendered, "Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        assert container["ports"] == [{"name": "https", "containerPort": 8080, "protocol": "TCP"}]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
        assert services[component]["spec"]["ports"] == [
            {
                "name": "https",
                "port": PORTS[tls_case][component],
                "targetPort": "https",
                "protocol": "TCP",
            }
        ]
    (policy,) = [m for m in rendered if m["kind"] == "NetworkPolicy"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": "https"}]


def test_ingress_backend_and_service_monitor_use_the_https_port(manifests: Manifests) -> None:
    rendered = manifests("tls")
    (ingress,) = [m for m in rendered if m["kind"] == "Ingress"]
    for path in ingress["spec"]["rules"][0]["http"]["paths"]:
        assert path["backend"]["service"]["port"] == {"name": "https"}
    (monitor,) = [m for m in rendered if m["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "https",
            "path": "/metrics",
            "scheme": "https",
            "tlsConfig": {
                "ca": {"secret": {"name": "kamus-tls", "key": "ca.crt"}},
                "serverName": "kamus-decryptor.kamus.svc",
                "insecureSkipVerify": False,
            },
        }
    ]


def test_service_monitor_verifies_the_certificate_without_extra_settings(render: Render) -> None:
    rendered = render(
        {
            **EXISTING_KEYS,
            "tls": {"enabled": True, "existingSecret": "kamus-tls"},
            "serviceMonitor": {"enabled": True},
        }
    )
    (monitor,) = [m for m in objects(rendered) if m["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": False}


def test_release_notes_point_kamus_init_at_https_with_a_ca_bundle(rendered: Rendered) -> None:
    notes = rendered("tls")[NOTES]
    assert "decryptor: https://kamus-decryptor.kamus.svc:443" in notes
    assert '{name: KAMUS_URL, value: "https://kamus-decryptor.kamus.svc:443"}' in notes
    assert "{name: KAMUS_CA_BUNDLE, value: /etc/kamus/ca/ca.crt}" in notes
    assert "{name: kamus-ca, mountPath: /etc/kamus/ca, readOnly: true}" in notes
    assert "backend-protocol: HTTPS" in notes
    assert "http://" not in notes
    per_service = rendered("tls-per-service")[NOTES]
    assert "https://kamus-decryptor.kamus.svc:8443" in per_service
    assert "port-forward service/kamus-encryptor 8443:443" in per_service
    assert "--cert-fingerprint" in per_service
    assert "--allow-insecure-url" not in per_service


def test_tls_off_leaves_everything_plain_http(
    plain_case: str, manifests: Manifests, rendered: Rendered
) -> None:
    rendered_objects = manifests(plain_case)
    for component, deployment in by_component(rendered_objects, "Deployment").items():
        args = gunicorn_args(deployment)
        assert "--certfile" not in args
        assert "--keyfile" not in args
        assert not gunicorn_settings(deployment).is_ssl
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        assert "tls" not in {v["name"] for v in spec["volumes"]}, component
        assert TLS_DIR not in {m["mountPath"] for m in container["volumeMounts"]}
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert "scheme" not in container["livenessProbe"]["httpGet"]
        assert "scheme" not in container["readinessProbe"]["httpGet"]
    for service in by_component(rendered_objects, "Service").values():
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
        ]
    for monitor in [m for m in rendered_objects if m["kind"] == "ServiceMonitor"]:
        assert {"scheme", "tlsConfig"}.isdisjoint(monitor["spec"]["endpoints"][0])
    for ingress in [m for m in rendered_objects if m["kind"] == "Ingress"]:
        for path in ingress["spec"]["rules"][0]["http"]["paths"]:
            assert path["backend"]["service"]["port"] == {"name": "http"}
    notes = rendered(plain_case)[NOTES]
    assert "http://kamus-decryptor.kamus.svc:80" in notes
    assert "KAMUS_CA_BUNDLE" not in notes


def test_a_certificate_secret_is_ignored_while_tls_is_off(render: Render) -> None:
    rendered = render({**EXISTING_KEYS, "tls": {"enabled": False, "existingSecret": "kamus-tls"}})
    for path in ("encryptor-deployment.yaml", "decryptor-deployment.yaml"):
        text = rendered[f"kamus/templates/{path}"]
        assert "kamus-tls" not in text
        assert "--certfile" not in text


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        pytest.param(
            {"enabled": True},
            r"tls.existingSecret is required when tls.enabled is true: the name of a"
            r" kubernetes.io/tls Secret with tls.crt and tls.key",
            id="no-secret",
        ),
        pytest.param(
            {"enabled": True, "encryptor": {"existingSecret": "kamus-encryptor-tls"}},
            r"for the decryptor .*or set tls.decryptor.existingSecret",
            id="no-decryptor-secret",
        ),
        pytest.param(
            {"enabled": True, "decryptor": {"existingSecret": "kamus-decryptor-tls"}},
            r"for the encryptor .*or set tls.encryptor.existingSecret",
            id="no-encryptor-secret",
        ),
    ],
)
def test_tls_without_a_certificate_secret_refuses_to_render(
    render: Render, tls: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render({**EXISTING_KEYS, "tls": tls})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        pytest.param({"tls": {"enabled": "yes"}}, "/tls/enabled", id="enabled-type"),
        pytest.param({"tls": {"enable": True}}, "additional properties 'enable'", id="typo"),
        pytest.param(
            {"tls": {"enabled": True, "existingSecret": "Kamus_TLS"}},
            "/tls/existingSecret",
            id="secret-name",
        ),
        pytest.param(
            {"encryptor": {"service": {"httpsPort": 0}}},
            "/encryptor/service/httpsPort",
            id="https-port",
        ),
        pytest.param(
            {"serviceMonitor": {"enabled": True, "tlsConfig": {"insecureSkipVerify": True}}},
            "/serviceMonitor/tlsConfig/insecureSkipVerify",
            id="skip-verify",
        ),
    ],
)
def test_schema_rejects_invalid_tls_values(
    render: Render, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render({**EXISTING_KEYS, **values})


def test_reuse_port_can_be_turned_off_per_service(render: Render, case_values: Values) -> None:
    values = case_values("default")
    values["decryptor"] = {"gunicorn": {"reusePort": False}}
    deployments = by_component(objects(render(values)), "Deployment")
    decryptor = gunicorn_settings(deployments["decryptor"])
    encryptor = gunicorn_settings(deployments["encryptor"])
    assert decryptor.reuse_port is False
    assert encryptor.reuse_port is True
    # Workers, threads and the rest stay as they were; the control socket stays off.
    assert (decryptor.workers, decryptor.threads, decryptor.timeout) == (2, 4, 30)
    assert decryptor.control_socket_disable is True
