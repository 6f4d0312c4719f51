"""The cluster witness against a real kube-apiserver: the decryptor, under gunicorn and as its own
service account with only the chart's rights, keeps each chain's latest signed checkpoint in the
chart's ConfigMap, and `kamus-audit verify --witness-from-cluster` finds chains deleted or cut
from the files, including those of a process that ended."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import requests
import yaml
from gunicorn_process import base_environment, gunicorn
from kube_apiserver import KubeAPIServer

pytestmark = pytest.mark.integration

CHART = Path(__file__).parents[2] / "charts" / "kamus"
# Its own namespace: the API server is shared by the session (tests/conftest.py).
NAMESPACE = "kamus-witness"
HEADS = "kamus-decryptor-audit-heads"
VALUES = {
    "auditKey": {"existingSecret": {"name": "kamus-audit"}},
    "keyring": {"existingSecret": {"name": "kamus-keyring"}},
    "decryptor": {"auditFile": {"enabled": True, "checkpointRecords": 3,
                                "signingKey": {"existingSecret": {"name": "kamus-signing"}}}},
}  # fmt: skip


def _chart_objects(namespace: str = NAMESPACE) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The chart's witness objects, and the decryptor's audit settings, as `helm install` makes
    them for the release `kamus` in the namespace `kamus`."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(VALUES, name="kamus", namespace=namespace, is_install=True)
    documents = [d for path, text in rendered.items() if path.endswith(".yaml")
                 for d in yaml.safe_load_all(text) if d]  # fmt: skip
    witness = [d for d in documents if d["metadata"]["name"] == HEADS]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"
                     and d["metadata"]["name"] == "kamus-decryptor"]  # fmt: skip
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("KAMUS_AUDIT_O")
           or e["name"] == "KAMUS_AUDIT_WITNESS_CONFIGMAP"}  # fmt: skip
    return witness, env


def _kamus_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kamus_cli.audit", *args], capture_output=True, text=True,
        env=base_environment({}), timeout=120, check=False,
    )  # fmt: skip


def _heads(server: KubeAPIServer, namespace: str = NAMESPACE) -> dict[str, str]:
    found = server.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{HEADS}")
    return dict(found.get("data") or {})


def _install(server: KubeAPIServer, namespace: str, folder: Path) -> Path:
    """The chart's witness objects in ``namespace`` and the decryptor's account there, allowed
    TokenReview; the decryptor's kubeconfig, written in ``folder``."""
    witness, _ = _chart_objects(namespace)
    server.create_service_account(namespace, "kamus-decryptor")
    server.grant_tokenreview(namespace, "kamus-decryptor")
    for document in witness:
        server.apply({**document, "metadata": {**document["metadata"], "namespace": namespace}})
    kubeconfig = folder / "decryptor.kubeconfig"
    server.write_kubeconfig(
        kubeconfig, server.mint(namespace, "kamus-decryptor", (), expiration_seconds=86400)
    )
    return kubeconfig


def test_the_decryptor_keeps_its_heads_in_the_cluster_and_verify_finds_what_the_files_lost(
    kube_apiserver: KubeAPIServer, service_env: dict[str, str], encryptor: Any, tmp_path: Path
) -> None:
    server = kube_apiserver
    witness, audit_env = _chart_objects()
    assert sorted(d["kind"] for d in witness) == ["ConfigMap", "Role", "RoleBinding"]
    assert audit_env == {"KAMUS_AUDIT_ORIGIN": f"{NAMESPACE}/kamus-decryptor",
                         "KAMUS_AUDIT_WITNESS_CONFIGMAP": f"{NAMESPACE}/{HEADS}"}  # fmt: skip
    decryptor_kubeconfig = _install(server, NAMESPACE, tmp_path)
    server.create_service_account("witness-app", "app")
    admin = tmp_path / "admin.kubeconfig"
    server.write_kubeconfig(admin, server.admin_token)
    keys = tmp_path / "keys"
    keys.mkdir()
    made = _kamus_audit("signing-key", "new", str(keys / "signing.key"))
    assert made.returncode == 0, made.stderr
    (keys / "signing.pub").write_text(made.stdout)
    chains = tmp_path / "chains"
    chains.mkdir()
    env = {**service_env, **audit_env, "KAMUS_KUBECONFIG": str(decryptor_kubeconfig),
           "KAMUS_AUDIT_DIR": str(chains), "KAMUS_AUDIT_CHECKPOINT_RECORDS": "3",
           "KAMUS_AUDIT_SIGNING_KEY_FILE": str(keys / "signing.key")}  # fmt: skip
    response = requests.post(f"{encryptor.url}/api/v1/encrypt", timeout=10, json={
        "data": "witnessed", "namespace": "witness-app", "service-account": "app"})  # fmt: skip
    ciphertext = response.text
    token = server.mint("witness-app", "app")

    # As in the image (20 s), time for a stopping worker to sign its chain and publish that.
    logs = tmp_path / "logs"
    with gunicorn("kamus_decryptor:create_app()", env, logs, graceful_timeout=10) as service:
        for _ in range(10):
            answer = requests.post(
                f"{service.url}/api/v1/decrypt", json={"data": ciphertext}, timeout=30,
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30
        while {p.name for p in chains.glob("*.jsonl")} - set(_heads(server)):
            assert time.monotonic() < deadline, "the heads did not reach the ConfigMap"
            time.sleep(0.2)
        stdout = service.stdout.read_text()
    # The workers signed their chains as they stopped; those heads stay after they ended.
    files = sorted(chains.glob("*.jsonl"))
    heads = _heads(server)
    assert set(heads) == {path.name for path in files}
    for path in files:
        last = json.loads(path.read_text().splitlines()[-1])
        assert last["event"] == "checkpoint", "a worker that stops signs its chain"
        assert json.loads(heads[path.name])["seq"] == last["seq"], "and the cluster keeps it"
    assert "cannot publish" not in stdout

    argv = ["verify", str(chains), "--public-key", str(keys / "signing.pub"), "--kubeconfig",
            str(admin), "--witness-from-cluster", f"{NAMESPACE}/{HEADS}"]  # fmt: skip
    checked = _kamus_audit(*argv)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK: ") == len(files)

    # The decryptor's account can patch that ConfigMap alone.
    other = requests.patch(
        f"{server.url}/api/v1/namespaces/{NAMESPACE}/configmaps/{HEADS}-other",
        data=json.dumps({"data": {"x": "y"}}), verify=str(server.ca_file), timeout=10,
        headers={"Authorization": f"Bearer {server.mint(NAMESPACE, 'kamus-decryptor', ())}",
                 "Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert other.status_code == 403

    victim = files[0]
    victim.write_text("".join(victim.read_text().splitlines(keepends=True)[:-2]))
    cut = _kamus_audit(*argv)
    assert cut.returncode == 9
    assert f"{victim}: TAMPERED: deleted: seq" in cut.stdout
    victim.unlink()
    gone = _kamus_audit(*argv)
    assert gone.returncode == 9
    assert f"{victim.name}: TAMPERED: missing: the chain {victim.name} is not among" in gone.stdout


def test_chains_broken_on_purpose_do_not_fill_the_configmap(
    kube_apiserver: KubeAPIServer, service_env: dict[str, str], encryptor: Any, tmp_path: Path
) -> None:
    # Whoever can write the volume breaks the live chain before every request (one byte): each
    # request starts a new chain. Its successor's signed link replaces the old entry.
    server, namespace = kube_apiserver, "kamus-witness-full"
    _, audit_env = _chart_objects(namespace)
    kubeconfig = _install(server, namespace, tmp_path)
    server.create_service_account("witness-full-app", "app")
    made = _kamus_audit("signing-key", "new", str(tmp_path / "signing.key"))
    assert made.returncode == 0, made.stderr
    chains = tmp_path / "chains"
    chains.mkdir()
    env = {**service_env, **audit_env, "KAMUS_KUBECONFIG": str(kubeconfig),
           "KAMUS_AUDIT_DIR": str(chains),
           "KAMUS_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "signing.key")}  # fmt: skip
    body = {"data": "witnessed", "namespace": "witness-full-app", "service-account": "app"}
    ciphertext = requests.post(f"{encryptor.url}/api/v1/encrypt", json=body, timeout=10).text
    token = server.mint("witness-full-app", "app")

    def decrypt() -> int:
        return requests.post(
            f"{service.url}/api/v1/decrypt", json={"data": ciphertext}, timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        ).status_code  # fmt: skip

    def settle(expected: int) -> dict[str, str]:
        deadline = time.monotonic() + 20
        while len(heads := _heads(server, namespace)) != expected:
            assert time.monotonic() < deadline, heads.keys()
            time.sleep(0.2)
        return heads

    with gunicorn("kamus_decryptor:create_app()", env, tmp_path / "logs", workers=1) as service:
        assert decrypt() == 200
        for _ in range(8):
            (live,) = (p for p in chains.glob("*.jsonl") if p.stat().st_mtime == max(
                q.stat().st_mtime for q in chains.glob("*.jsonl")))  # fmt: skip
            with live.open("a") as stream:
                stream.write("\n")
            assert decrypt() == 200
        assert len(list(chains.glob("*.jsonl"))) == 9
        (last,) = settle(1)  # one entry: the newest chain, whose link names the one before
        assert json.loads(_heads(server, namespace)[last])["chain"] == last
