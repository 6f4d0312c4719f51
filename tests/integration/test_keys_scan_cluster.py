"""kamus-cli keys scan --kubeconfig against a real kube-apiserver: the ConfigMaps of a cluster."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from gunicorn_process import base_environment
from kube_apiserver import KubeAPIServer

from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer


def test_the_configmaps_of_a_cluster_are_scanned_with_the_operators_credentials(
    kube_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    sealer = Sealer(LocalKeyringProvider(Keyring.generate("k7")))
    kube_apiserver.create_namespace("scan-a")
    kube_apiserver.create_namespace("scan-b")
    for namespace, service_account in (("scan-a", "api"), ("scan-b", "worker")):
        kube_apiserver.apply({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-encrypted", "namespace": namespace},
            "data": {"password": sealer.seal(b"x", Scope(namespace, service_account)),
                     "plain": "not a secret"},
        })  # fmt: skip
    wrapped = sealer.seal(b"y", Scope("scan-b", "worker")).encode()
    kube_apiserver.apply({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app-binary", "namespace": "scan-b"},
        "binaryData": {"password": base64.b64encode(wrapped).decode()},
    })  # fmt: skip
    kubeconfig = tmp_path / "kubeconfig"
    kube_apiserver.write_kubeconfig(kubeconfig, kube_apiserver.admin_token)

    finished = subprocess.run(
        [sys.executable, "-m", "kamus_cli.main", "keys", "scan", "--kubeconfig", str(kubeconfig),
         "--output-format", "json", "--uses", "k7"],
        capture_output=True, text=True, env=base_environment({}), timeout=120, check=False,
    )  # fmt: skip

    assert finished.returncode == 10, finished.stderr
    result = json.loads(finished.stdout)
    found = {(u["namespace"], u["service_account"]): u["places"]
             for u in result["uses"]}  # fmt: skip
    assert result["skipped"] == []
    assert found == {
        ("scan-a", "api"): ["configmap/scan-a/app-encrypted"],
        ("scan-b", "worker"): ["configmap/scan-b/app-binary", "configmap/scan-b/app-encrypted"],
    }
    assert "is still used by 3 ciphertext(s)" in finished.stderr
