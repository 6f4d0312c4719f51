"""The environment the chart gives each service is one the service accepts: every KAMUS_* variable
is a setting of that service, every *_FILE points at a mounted Secret file, and the settings
parser (`load_settings`) finds nothing missing or invalid."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kamus_kms.keyring import Keyring
from kamus_service.settings import PREFIX, SPEC, Service, load_settings

Manifest = dict[str, Any]
Manifests = Callable[[str], list[Manifest]]
SERVICES: tuple[Service, ...] = ("encryptor", "decryptor")
# Settings the chart deliberately never sets: development-only or test-server-only switches.
# Development and test-double settings: never in a deployment made by the chart.
NOT_EXPOSED = {
    "DEV_MODE",
    "DEV_DIR",
    "KUBECONFIG",
    "GCP_INSECURE_ENDPOINT",
    "AZURE_CA_CERT",
    # The chart writes per-process chains into KAMUS_AUDIT_DIR; the single file is for other
    # deployments.
    "AUDIT_FILE",
    "AZURE_VERIFY_CHALLENGE_RESOURCE",
}


def containers(manifests: list[Manifest]) -> dict[Service, dict[str, Any]]:
    found: dict[Service, dict[str, Any]] = {}
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            (container,) = manifest["spec"]["template"]["spec"]["containers"]
            found[container["name"]] = container
    assert set(found) == set(SERVICES)
    return found


def kamus_env(container: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container["env"] if v["name"].startswith(PREFIX)}


def plausible_file(variable: str, directory: Path) -> Path:
    """A file holding a value of the kind the secret setting expects."""
    contents = {
        "KAMUS_KEYRING_FILE": Keyring.generate().to_json(),
        "KAMUS_PKCS11_PIN_FILE": "1234",
        "KAMUS_VAULT_TOKEN_FILE": "hvs.example-token",
    }
    path = directory / variable.lower()
    path.write_text(contents.get(variable, base64.b64encode(os.urandom(32)).decode() + "\n"))
    return path


def test_every_variable_is_a_setting_of_its_service(case: str, manifests: Manifests) -> None:
    for service, container in containers(manifests(case)).items():
        known = {v.env for v in SPEC if service in v.services}
        known |= {v.env + "_FILE" for v in SPEC if v.secret and service in v.services}
        unknown = sorted(set(kamus_env(container)) - known)
        assert unknown == [], f"{service}: {unknown}"


def test_every_secret_setting_is_a_file_of_a_mounted_secret(
    case: str, manifests: Manifests
) -> None:
    secret_files = {v.env + "_FILE" for v in SPEC if v.secret}
    for manifest in manifests(case):
        if manifest["kind"] != "Deployment":
            continue
        spec = manifest["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        files = {}
        for mount in container["volumeMounts"]:
            secret = volumes[mount["name"]].get("secret")
            if secret:
                for item in secret["items"]:
                    files[f"{mount['mountPath']}/{item['path']}"] = secret["secretName"]
        for name, value in kamus_env(container).items():
            if name in secret_files or name == "KAMUS_VAULT_CA_CERT":
                assert value in files, f"{name}={value} is not a mounted Secret file"
        for name in {v.env for v in SPEC if v.secret}:
            assert name not in kamus_env(container), f"{name} given as a plain value"


def test_services_accept_the_rendered_environment(
    case: str, manifests: Manifests, tmp_path: Path
) -> None:
    secret_files = {v.env + "_FILE" for v in SPEC if v.secret}
    for service, container in containers(manifests(case)).items():
        env = {
            name: str(plausible_file(name, tmp_path)) if name in secret_files else value
            for name, value in kamus_env(container).items()
        }
        settings = load_settings(service, env)  # raises ConfigurationError listing every problem
        assert settings.dev_mode is False
        assert settings.provider == env["KAMUS_PROVIDER"]
        if service == "decryptor":
            assert settings.audit_key is not None


def test_decryptor_checks_the_kamus_audience_by_default(manifests: Manifests) -> None:
    env = kamus_env(containers(manifests("default"))["decryptor"])
    assert env["KAMUS_TOKEN_AUDIENCES"] == "kamus"
    assert env["KAMUS_TOKEN_VERIFICATION"] == "tokenreview"
    hybrid = kamus_env(containers(manifests("hybrid-tokens"))["decryptor"])
    assert hybrid["KAMUS_TOKEN_AUDIENCES"] == "kamus,kamus.example.com"
    assert hybrid["KAMUS_TOKEN_VERIFICATION"] == "hybrid"


@pytest.mark.parametrize(
    ("value_set", "expected"),
    [
        ("default", {"KAMUS_PROVIDER": "local"}),
        (
            "gcp",
            {
                "KAMUS_PROVIDER": "gcp",
                "KAMUS_GCP_KEY_RING": "projects/acme/locations/europe-west1/keyRings/kamus",
                "KAMUS_KMS_KEY_MODE": "shared",
                "KAMUS_KMS_KEY": "kamus-shared",
            },
        ),
        (
            "aws",
            {
                "KAMUS_PROVIDER": "aws",
                "KAMUS_AWS_REGION": "eu-west-1",
                "KAMUS_KMS_TIMEOUT_SECONDS": "2.5",
            },
        ),
        (
            "pkcs11",
            {
                "KAMUS_PROVIDER": "pkcs11",
                "KAMUS_PKCS11_LIBRARY": "/opt/hsm/lib/libsofthsm2.so",
                "KAMUS_PKCS11_TOKEN_LABEL": "kamus",
                "KAMUS_PKCS11_PIN_FILE": "/etc/kamus/keys/pkcs11/pin",
            },
        ),
        (
            "vault",
            {
                "KAMUS_PROVIDER": "vault",
                "KAMUS_VAULT_ADDR": "https://vault.vault.svc:8200",
                "KAMUS_VAULT_TRANSIT_MOUNT": "kamus-transit",
                "KAMUS_VAULT_TOKEN_FILE": "/etc/kamus/keys/vault/token",
                "KAMUS_VAULT_CA_CERT": "/etc/kamus/vault-ca/ca.crt",
            },
        ),
        (
            "per-service-account",
            {
                "KAMUS_KMS_KEY_MODE": "per-service-account",
                "KAMUS_KMS_NAMING_KEY_FILE": "/etc/kamus/keys/naming/naming.key",
            },
        ),
    ],
)
def test_provider_settings_reach_both_services(
    manifests: Manifests, value_set: str, expected: dict[str, str]
) -> None:
    for service, container in containers(manifests(value_set)).items():
        env = kamus_env(container)
        assert {k: env.get(k) for k in expected} == expected, service
        if value_set != "default":
            assert "KAMUS_KEYRING_FILE" not in env, "a remote provider needs no keyring"


def test_every_setting_is_either_exposed_or_deliberately_not(manifests: Manifests) -> None:
    from_chart: set[str] = set()
    for case in ("default", "existing-secrets", "gcp", "aws", "pkcs11", "vault",
                 "per-service-account", "hybrid-tokens", "audit-file-pvc",
                 "legacy-migration", "azure-workload-identity", "offline-sealing",
                 "azure-managed-hsm-client-secret"):  # fmt: skip
        for container in containers(manifests(case)).values():
            from_chart |= set(kamus_env(container))
    from_chart |= {v.env for v in SPEC if v.secret and v.env + "_FILE" in from_chart}
    missing = {v.env for v in SPEC} - from_chart - {PREFIX + name for name in NOT_EXPOSED}
    assert missing == set(), "settings the chart cannot set; add values for them"
