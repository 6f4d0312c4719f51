"""A real kube-apiserver with Debian's etcd on 127.0.0.1, started the way envtest starts one.

The binary is found through ``KAMUS_TEST_KUBE_APISERVER`` (a path to ``kube-apiserver``, or to
the ``kube-apiserver.xz`` it ships as, unpacked once beside a checksum into a cache folder) and
etcd on ``PATH`` (Debian's ``etcd-server``). Keys and certificates are generated fresh into a
temporary folder; the server trusts one static admin token (group ``system:masters``) and signs
service-account tokens with a key the harness holds, so tests can also forge what only the
cluster could sign (an expired token, say). Both processes are stopped by process id.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import lzma
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from gunicorn_process import free_port
from prometheus_client.parser import text_string_to_metric_families
from requests import Response

from kamus_dev.kubeconfig import mint_token, write_kubeconfig

ENVIRONMENT_VARIABLE = "KAMUS_TEST_KUBE_APISERVER"
ISSUER = "https://kubernetes.default.svc"
SKIP_REASON = (
    f"no real kube-apiserver: set {ENVIRONMENT_VARIABLE} to a kube-apiserver binary (or its .xz) "
    "and install etcd (Debian: etcd-server); scripts/test.sh does both when ../shared/k8s exists"
)
_STARTUP_SECONDS = 60.0


def locate() -> tuple[Path, Path] | None:
    """The kube-apiserver and etcd binaries, or None when either is missing."""
    configured = os.environ.get(ENVIRONMENT_VARIABLE, "")
    etcd = shutil.which("etcd")
    if not configured or etcd is None or not Path(configured).is_file():
        return None
    binary = Path(configured)
    if binary.suffix == ".xz":
        binary = _unpacked(binary)
    return binary, Path(etcd)


def _unpacked(archive: Path) -> Path:
    """``archive`` unpacked once into a cache folder named by its checksum."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kamus-tests"
    target = cache / f"kube-apiserver-{digest}"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        with lzma.open(archive) as source, partial.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        partial.chmod(0o755)
        partial.replace(target)
    return target


class KubeAPIServer:
    """One running API server: admin access, objects, tokens, and ways to break it on purpose."""

    def __init__(self, binary: Path, etcd: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(32)
        self.ca_file = workdir / "ca.crt"
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._write_credentials()
        self._etcd_command, etcd_url = _etcd_command(etcd, workdir)
        self._command = [
            str(binary), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            f"--secure-port={self.port}", "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/16",
            f"--tls-cert-file={workdir / 'serving.crt'}",
            f"--tls-private-key-file={workdir / 'serving.key'}",
            f"--client-ca-file={self.ca_file}", f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC", f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={workdir / 'sa.pub'}",
            f"--service-account-signing-key-file={workdir / 'sa.key'}", "--profiling=false",
            # Native sidecars (init containers with restartPolicy: Always): on by default from
            # 1.29, behind this gate in the 1.28 server of the tests (kamus-init --watch).
            "--feature-gates=SidecarContainers=true",
        ]  # fmt: skip
        self._etcd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start etcd (once) and the API server; return when both answer."""
        if self._etcd is None:
            self._etcd = _spawn(self._etcd_command, self.workdir / "etcd.log")
        self._server = _spawn(self._command, self.workdir / "kube-apiserver.log")
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited: {self.log()[-3000:]}")
            try:
                if self.http("GET", "/readyz", timeout=2).text == "ok":
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready in time: {self.log()[-3000:]}")

    def stop(self) -> None:
        """Stop the API server, then etcd."""
        for process in (self._server, self._etcd):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a hung() block may have left it stopped
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._server = None
        self._etcd = None

    def log(self) -> str:
        """What the API server printed so far."""
        return (self.workdir / "kube-apiserver.log").read_text("utf-8", "replace")

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The API server is down (its port refuses connections) until the block ends."""
        assert self._server is not None
        self._server.terminate()
        self._server.wait(timeout=15)
        try:
            yield
        finally:
            self.start()

    @contextmanager
    def hung(self) -> Iterator[None]:
        """The API server accepts connections but answers nothing until the block ends."""
        assert self._server is not None
        os.kill(self._server.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self._server.pid, signal.SIGCONT)

    def http(self, method: str, path: str, *, timeout: float = 30, **options: Any) -> Response:
        """One request with the admin token, checked against the cluster's CA.

        A new session each time: a TLS context kept across tests failed ("NO_SUCH_ENGINE") once
        Helm's native library had been loaded into the test process meanwhile.
        """
        with requests.Session() as session:
            # The machine's REQUESTS_CA_BUNDLE or proxies must not replace the cluster's CA.
            session.trust_env = False
            return session.request(
                method, f"{self.url}{path}", timeout=timeout, verify=str(self.ca_file),
                headers={"Authorization": f"Bearer {self.admin_token}"}, **options,
            )  # fmt: skip

    def request(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        """An admin call; the decoded answer. Raises AssertionError on another status."""
        response = self.http(method, path, json=body)
        if response.status_code != expect:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create ``manifest``; the created object."""
        return dict(self.request("POST", self.collection_path(manifest), manifest, expect=201))

    def dry_run(self, manifest: dict[str, Any], namespace: str) -> requests.Response:
        """Create ``manifest`` with ``dryRun=All`` (admission runs, nothing is stored): the answer.

        ``namespace`` applies to namespaced objects whose manifest names none.
        """
        path = self.collection_path(manifest, namespace)
        params = {"dryRun": "All", "fieldValidation": "Strict"}
        return self.http("POST", path, params=params, json=manifest)

    def collection_path(self, manifest: dict[str, Any], namespace: str | None = None) -> str:
        """Where objects like ``manifest`` are created, found through API discovery."""
        group_version, kind = manifest["apiVersion"], manifest["kind"]
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        resources = self.request("GET", prefix)["resources"]
        (resource,) = [r for r in resources if r["kind"] == kind and "/" not in r["name"]]
        if not resource["namespaced"]:
            return f"{prefix}/{resource['name']}"
        where = manifest["metadata"].get("namespace") or namespace
        return f"{prefix}/namespaces/{where}/{resource['name']}"

    def install_crd(self, group: str, kind: str, plural: str) -> None:
        """Register a namespaced custom resource that accepts any fields, and wait until served.

        For third-party kinds a chart may render (a ServiceMonitor, say) whose real schema the
        tests do not carry: the dry run then proves the object is routable and well-formed.
        """
        self.apply({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [{
                    "name": "v1", "served": True, "storage": True,
                    "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
                    }},
                }],
            },
        })  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = self.http("GET", f"/apis/{group}/v1")
            if response.status_code == 200 and any(
                r["kind"] == kind for r in response.json()["resources"]
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"{plural}.{group} is not served")

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a namespace unless it exists."""
        manifest = {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels or {}}}  # fmt: skip
        response = self.http("POST", "/api/v1/namespaces", json=manifest)
        if response.status_code not in (201, 409):
            raise AssertionError(f"namespace {name}: {response.status_code} {response.text}")

    def create_service_account(self, namespace: str, name: str) -> str:
        """Create a service account (and its namespace); its UID."""
        self.create_namespace(namespace)
        manifest = {"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace}}  # fmt: skip
        return str(self.apply(manifest)["metadata"]["uid"])

    def delete_service_account(self, namespace: str, name: str) -> None:
        """Delete a service account: the API server stops accepting its tokens."""
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")

    def create_pod(self, namespace: str, name: str, service_account: str) -> str:
        """Create a pod object running as ``service_account`` (nothing runs it); its UID.

        The pod passes PodSecurity ``restricted``, so any namespace admits it.
        """
        security = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        manifest = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"serviceAccountName": service_account, "automountServiceAccountToken": False,
                     "containers": [{"name": "app", "image": "app:1",
                                     "securityContext": security}]},
        }  # fmt: skip
        return str(self.apply(manifest)["metadata"]["uid"])

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod object at once (it was never scheduled): its bound tokens die."""
        self.request(
            "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
            {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
        )  # fmt: skip

    def grant_tokenreview(self, namespace: str, service_account: str) -> None:
        """Let a service account create TokenReviews, and nothing else."""
        name = f"kamus-tokenreview-{namespace}-{service_account}"
        self.apply({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                       "verbs": ["create"]}],
        })  # fmt: skip
        self.apply({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account,
                          "namespace": namespace}],
        })  # fmt: skip

    def mint(
        self,
        namespace: str,
        service_account: str,
        audiences: Sequence[str] = ("kamus",),
        *,
        pod: str | None = None,
        pod_uid: str | None = None,
        expiration_seconds: int = 3600,
    ) -> str:
        """A token from TokenRequest, as the kubelet gets one for a pod."""
        return mint_token(
            self.url, self.admin_token, namespace, service_account, audiences, pod=pod,
            pod_uid=pod_uid, expiration_seconds=expiration_seconds, verify=str(self.ca_file),
        )  # fmt: skip

    def resign(self, token: str, **claims: Any) -> str:
        """``token`` with ``claims`` replaced, signed again with the cluster's own key."""
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False}) | claims
        return jwt.encode(payload, self.signing_key, algorithm="RS256", headers=header)

    def write_kubeconfig(self, path: Path, token: str) -> None:
        """A kubeconfig for this server with ``token`` and the cluster's CA."""
        write_kubeconfig(path, self.url, token, ca_file=self.ca_file)

    def tokenreviews(self) -> int:
        """TokenReview requests the server has answered, from its own metrics."""
        text = self.http("GET", "/metrics").text
        return int(sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "apiserver_request"
            for sample in family.samples
            if sample.name == "apiserver_request_total"
            and sample.labels.get("resource") == "tokenreviews"
            and sample.labels.get("verb") == "POST"
        ))  # fmt: skip

    def _write_credentials(self) -> None:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _certificate("kamus-test-ca", ca_key, ca_key, None, is_ca=True)
        serving_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        serving = _certificate("kube-apiserver", serving_key, ca_key, ca, is_ca=False)
        pem = serialization.Encoding.PEM
        self.ca_file.write_bytes(ca.public_bytes(pem))
        (self.workdir / "serving.crt").write_bytes(serving.public_bytes(pem))
        for name, key in (("serving.key", serving_key), ("sa.key", self.signing_key)):
            (self.workdir / name).write_bytes(key.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ))  # fmt: skip
            (self.workdir / name).chmod(0o600)
        (self.workdir / "sa.pub").write_bytes(self.signing_key.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo,
        ))  # fmt: skip
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},kamus-test-admin,admin-uid,"system:masters"\n')
        tokens.chmod(0o600)


def _certificate(
    name: str,
    key: rsa.RSAPrivateKey,
    issuer_key: rsa.RSAPrivateKey,
    issuer: x509.Certificate | None,
    *,
    is_ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _etcd_command(etcd: Path, workdir: Path) -> tuple[list[str], str]:
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    return [
        str(etcd), "--name", "t", "--data-dir", str(workdir / "etcd"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"t={peer}", "--listen-metrics-urls", "",
    ], client  # fmt: skip


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def running(workdir: Path) -> Iterator[KubeAPIServer]:
    """A started API server until the block ends; requires :func:`locate` to find the binaries."""
    found = locate()
    assert found is not None, SKIP_REASON
    server = KubeAPIServer(*found, workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
