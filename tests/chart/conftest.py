"""The Helm charts rendered by Helm's own engine (helm-python-sdk binds Helm v4's Go SDK, shipped as
a native library inside the wheel: nothing is downloaded at run time), once per value set."""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from kamus_kms.keyring import Keyring

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kamus"
EXAMPLE_CHART = ROOT / "charts" / "kamus-example-workload"
RELEASE = "kamus"
NAMESPACE = "kamus"

Values = dict[str, Any]
Manifest = dict[str, Any]


_CLIENT = "3f9c1e2a-5b7d-4e8f-9a0b-1c2d3e4f5a6b"


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


# Keys given to the chart as values; the chart never makes up one of its own.
KEYS: Values = {
    "keyring": {"create": {"keyringJson": Keyring.generate().to_json()}},
    "auditKey": {"create": {"value": _key()}},
}
EXISTING_KEYS: Values = {
    "keyring": {"existingSecret": {"name": "kamus-keys"}},
    "auditKey": {"existingSecret": {"name": "kamus-keys"}},
}
_REMOTE_AUDIT_KEY: Values = {"auditKey": {"existingSecret": {"name": "kamus-audit"}}}

# Realistic value sets, each rendered and linted once per session.
CASES: dict[str, Values] = {
    "default": KEYS,
    "existing-secrets": {**EXISTING_KEYS, "clusterName": "prod-eu-1"},
    "gcp": {
        **_REMOTE_AUDIT_KEY,
        "provider": "gcp",
        "gcp": {
            "keyRing": "projects/acme/locations/europe-west1/keyRings/kamus",
            "endpoint": "europe-west1-cloudkms.googleapis.com:443",
        },
        "kms": {"key": "kamus-shared"},
        "encryptor": {
            "serviceAccount": {
                "annotations": {
                    "iam.gke.io/gcp-service-account": "kamus@acme.iam.gserviceaccount.com"
                }
            }
        },
        "decryptor": {
            "serviceAccount": {
                "annotations": {
                    "iam.gke.io/gcp-service-account": "kamus@acme.iam.gserviceaccount.com"
                }
            }
        },
    },
    "aws": {
        **_REMOTE_AUDIT_KEY,
        "provider": "aws",
        "aws": {
            "region": "eu-west-1",
            "endpointUrl": "https://vpce-0123456789abcdef-kms.eu-west-1.vpce.amazonaws.com",
        },
        "kms": {"key": "alias/kamus", "timeoutSeconds": 2.5},
        "encryptor": {
            "serviceAccount": {
                "annotations": {
                    "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kamus"
                }
            }
        },
    },
    "pkcs11": {
        **_REMOTE_AUDIT_KEY,
        "provider": "pkcs11",
        "pkcs11": {
            "library": "/opt/hsm/lib/libsofthsm2.so",
            "tokenLabel": "kamus",
            "pin": {"existingSecret": {"name": "kamus-hsm-pin"}},
        },
        "kms": {"key": "kamus-shared"},
        **{
            component: {
                "extraEnv": [{"name": "SOFTHSM2_CONF", "value": "/opt/hsm/softhsm2.conf"}],
                "extraVolumes": [{"name": "hsm", "persistentVolumeClaim": {"claimName": "hsm"}}],
                "extraVolumeMounts": [{"name": "hsm", "mountPath": "/opt/hsm", "readOnly": True}],
            }
            for component in ("encryptor", "decryptor")
        },
    },
    "vault": {
        **_REMOTE_AUDIT_KEY,
        "provider": "vault",
        "vault": {
            "addr": "https://vault.vault.svc:8200",
            "transitMount": "kamus-transit",
            "token": {"existingSecret": {"name": "kamus-vault", "key": "token"}},
            "caCert": {"existingSecret": {"name": "vault-ca", "key": "ca.crt"}},
        },
        "kms": {"key": "kamus"},
    },
    "offline-sealing": {
        **EXISTING_KEYS,
        "sealingKeys": {"existingSecret": {"name": "kamus-sealing"}},
    },
    "azure-workload-identity": {
        **_REMOTE_AUDIT_KEY,
        "provider": "azure",
        "azure": {"vaultUrl": "https://kamus-prod.vault.azure.net"},
        "kms": {"key": "kamus-shared"},
        "encryptor": {
            "serviceAccount": {"annotations": {"azure.workload.identity/client-id": _CLIENT}},
            "podLabels": {"azure.workload.identity/use": "true"},
        },
        "decryptor": {
            "serviceAccount": {"annotations": {"azure.workload.identity/client-id": _CLIENT}},
            "podLabels": {"azure.workload.identity/use": "true"},
        },
    },
    "azure-managed-hsm-client-secret": {
        "provider": "azure",
        "azure": {
            # A Managed HSM in Azure Government: its own token service.
            "vaultUrl": "https://kamus-hsm.managedhsm.usgovcloudapi.net",
            "authorityHost": "https://login.microsoftonline.us",
            "keyType": "oct-HSM",
            "credential": "client-secret",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "clientId": _CLIENT,
            "clientSecret": {"existingSecret": {"name": "kamus-azure"}},
        },
        "kms": {"keyMode": "per-service-account", "namingKey": {"create": {"value": _key()}}},
        "auditKey": {"create": {"value": _key()}},
    },
    "per-service-account": {
        "provider": "vault",
        "vault": {
            "addr": "https://vault.vault.svc:8200",
            "token": {"existingSecret": {"name": "kamus-vault"}},
        },
        "kms": {"keyMode": "per-service-account", "namingKey": {"create": {"value": _key()}}},
        "auditKey": {"create": {"value": _key()}},
    },
    "hpa": {
        **KEYS,
        "encryptor": {"autoscaling": {"enabled": True}},
        "decryptor": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12}},
    },
    "ingress": {
        **EXISTING_KEYS,
        "encryptor": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "kamus-encryptor.example.com",
                "tlsSecretName": "kamus-encryptor-tls",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            }
        },
    },
    "service-monitor": {
        **EXISTING_KEYS,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}, "interval": "30s"},
    },
    "monitoring": {
        **EXISTING_KEYS,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "ruleLabels": {"team": "platform"},
        },
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Security"}},
    },
    "audit-file-emptydir": {**EXISTING_KEYS, "decryptor": {"auditFile": {"enabled": True}}},
    "audit-file-pvc": {
        **EXISTING_KEYS,
        "decryptor": {
            "auditFile": {
                "enabled": True,
                "existingClaim": "kamus-audit",
                "policy": "best-effort",
                "signingKey": {"existingSecret": {"name": "kamus-audit-signing"}},
            }
        },
    },
    "hybrid-tokens": {
        **EXISTING_KEYS,
        "decryptor": {
            "tokenVerification": "hybrid",
            "tokenIssuer": "https://kubernetes.default.svc.cluster.local",
            "tokenAudiences": ["kamus", "kamus.example.com"],
        },
    },
    "legacy-migration": {
        **EXISTING_KEYS,
        "decryptor": {
            "legacyKey": {"existingSecret": {"name": "kamus-legacy"}, "keyDerivation": True}
        },
    },
    "restricted-network": {
        **EXISTING_KEYS,
        "networkPolicy": {
            "decryptor": {
                "namespaceSelector": {"matchLabels": {"kamus.io/secrets": "enabled"}},
            }
        },
        "topologySpread": {"whenUnsatisfiable": "DoNotSchedule"},
    },
    # HTTPS served by gunicorn: one certificate Secret for both services (e.g. from cert-manager),
    # with the Ingress, the ServiceMonitor and the NetworkPolicy following the https port.
    "tls": {
        **EXISTING_KEYS,
        "tls": {"enabled": True, "existingSecret": "kamus-tls"},
        "encryptor": {
            "ingress": {
                "enabled": True,
                "host": "kamus-encryptor.example.com",
                "tlsSecretName": "kamus-encryptor-public-tls",
                "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"},
            }
        },
        "serviceMonitor": {
            "enabled": True,
            "tlsConfig": {
                "ca": {"secret": {"name": "kamus-tls", "key": "ca.crt"}},
                "serverName": "kamus-decryptor.kamus.svc",
            },
        },
    },
    # One certificate per service, custom gunicorn sizing and Service ports, a remote provider.
    "tls-per-service": {
        **_REMOTE_AUDIT_KEY,
        "provider": "vault",
        "vault": {
            "addr": "https://vault.vault.svc:8200",
            "token": {"existingSecret": {"name": "kamus-vault"}},
        },
        "kms": {"key": "kamus"},
        "tls": {
            "enabled": True,
            "encryptor": {"existingSecret": "kamus-encryptor-tls"},
            "decryptor": {"existingSecret": "kamus-decryptor-tls"},
        },
        "encryptor": {"gunicorn": {"workers": 3, "threads": 8, "timeout": 45}},
        "decryptor": {"service": {"httpsPort": 8443}},
    },
}
TLS_CASES = frozenset(
    case for case, values in CASES.items() if values.get("tls", {}).get("enabled")
)


def render_chart(
    chart: Path, values: Values, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path → rendered text, as `helm template` renders it for an install."""
    with helm.Chart.load(chart) as loaded:
        return loaded.render(values, name=release, namespace=namespace, is_install=True)


def manifests_of(rendered: dict[str, str]) -> list[Manifest]:
    """Every Kubernetes object in the rendered templates (NOTES.txt is not one)."""
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml"))
        for document in yaml.safe_load_all(text)
        if document
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", sorted(CASES))
    # The value sets serving HTTPS, and the ones left on plain HTTP (tls.enabled off: as before).
    if "tls_case" in metafunc.fixturenames:
        metafunc.parametrize("tls_case", sorted(TLS_CASES))
    if "plain_case" in metafunc.fixturenames:
        metafunc.parametrize("plain_case", sorted(set(CASES) - TLS_CASES))


@pytest.fixture(scope="session", autouse=True)
def _quiet_helm() -> None:
    """Helm's engine logs every `fail` it sees while linting; the tests read the reports instead."""
    helm.disable_logging()


@pytest.fixture(scope="session")
def case_values() -> Callable[[str], Values]:
    """The values of a value set of CASES (a copy: tests may not change the shared ones)."""
    return lambda case: copy.deepcopy(CASES[case])


@pytest.fixture(scope="session")
def case_names() -> list[str]:
    """The names of every value set of CASES."""
    return sorted(CASES)


@pytest.fixture(scope="session")
def tls_enabled() -> Callable[[str], bool]:
    """Whether a value set of CASES serves HTTPS (`tls.enabled`)."""
    return lambda case: case in TLS_CASES


@pytest.fixture
def keys() -> Values:
    """Values giving the chart its keyring and audit key (a fresh copy for each test)."""
    return copy.deepcopy(KEYS)


@pytest.fixture(scope="session")
def render() -> Callable[..., dict[str, str]]:
    """`render(values, chart=CHART)`: one rendering of any values, for the tests of failures."""

    def run(values: Values, chart: Path = CHART) -> dict[str, str]:
        return render_chart(chart, values)

    return run


@pytest.fixture(scope="session")
def objects_of() -> Callable[..., list[Manifest]]:
    """`objects_of(chart, values, release=..., namespace=...)`: the objects of any rendering."""
    return lambda chart, values, **where: manifests_of(render_chart(chart, values, **where))


@pytest.fixture(scope="session")
def rendered() -> Callable[[str], dict[str, str]]:
    """Renders a value set of CASES the first time it is asked for, then answers from a cache."""
    cache: dict[str, dict[str, str]] = {}

    def get(case: str) -> dict[str, str]:
        if case not in cache:
            cache[case] = render_chart(CHART, CASES[case])
        return cache[case]

    return get


@pytest.fixture(scope="session")
def manifests(rendered: Callable[[str], dict[str, str]]) -> Callable[[str], list[Manifest]]:
    """The Kubernetes objects of a value set of CASES."""
    cache: dict[str, list[Manifest]] = {}

    def get(case: str) -> list[Manifest]:
        if case not in cache:
            cache[case] = manifests_of(rendered(case))
        return cache[case]

    return get
