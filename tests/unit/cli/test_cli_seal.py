"""kamus-cli seal: a Secret manifest or .env file → a ConfigMap of ciphertexts and a patch."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from canned_server import CannedServer, Recorded, Reply

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode
from kamus_client.version import VERSION

PASSWORD = "hunter2-SENTINEL"
TOKEN_TEXT = "tok-SENTINEL\nline two"


def sealed(recorded: Recorded) -> Reply:
    """A ciphertext naming the scope and the plaintext's length (never the plaintext)."""
    body = recorded.body
    return Reply(
        body=f"kamus:v1:local:{body['namespace']}:{body['service-account']}:k1:AA{len(body['data'])}"
    )


@pytest.fixture
def secret_manifest(tmp_path: Path) -> Path:
    """A Secret manifest with a base64 data value and a stringData value."""
    path = tmp_path / "secret.yaml"
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    path.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: team-a\n"
        f"type: Opaque\ndata:\n  password: {encoded}\n  token: b2xk\n"
        "stringData:\n  token: |-\n    tok-SENTINEL\n    line two\n"
    )
    return path


def seal_args(url: str, source: Path, *extra: str) -> list[str]:
    return ["seal", str(source), "-a", "api", "-u", url, "--allow-insecure-url", *extra]


def run_seal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[list[Any], str]:
    assert main(argv, {}) == ExitCode.OK
    out, err = capsys.readouterr()
    assert "SENTINEL" not in out + err
    return list(yaml.safe_load_all(out)), err


def test_secret_manifest_becomes_a_configmap_of_ciphertexts_and_never_shows_plaintext(
    encryptor: CannedServer, secret_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor.otherwise = sealed

    (configmap, _patch), err = run_seal(seal_args(encryptor.url, secret_manifest), capsys)

    assert configmap == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "db-encrypted", "namespace": "team-a"},
        "data": {
            "password": f"kamus:v1:local:team-a:api:k1:AA{len(PASSWORD)}",
            "token": f"kamus:v1:local:team-a:api:k1:AA{len(TOKEN_TEXT)}",
        },
    }
    sent = {r.body["data"] for r in encryptor.requests}
    assert sent == {PASSWORD, TOKEN_TEXT}  # stringData wins over data
    assert {r.body["namespace"] for r in encryptor.requests} == {"team-a"}
    assert "sealed 2 value(s) for team-a/api" in err


def test_patch_wires_init_container_memory_emptydir_and_projected_kamus_token(
    encryptor: CannedServer, secret_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor.otherwise = sealed
    argv = seal_args(encryptor.url, secret_manifest, "--workload", "api-server",
                     "--container", "server", "--image", "registry/kamus-init:9")  # fmt: skip

    (_configmap, patch), _ = run_seal(argv, capsys)

    assert patch["apiVersion"] == "apps/v1"
    assert patch["kind"] == "Deployment"
    assert patch["metadata"] == {"name": "api-server", "namespace": "team-a"}
    pod = patch["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "api"
    assert pod["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["kamus-decrypted"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["kamus-encrypted"]["configMap"] == {"name": "db-encrypted"}
    assert volumes["kamus-token"]["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "kamus", "expirationSeconds": 600, "path": "token"}}
    ]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry/kamus-init:9"
    assert init["args"] == ["-e", "/kamus/encrypted", "-d", "/kamus/decrypted", "-f", "files"]
    assert {e["name"]: e["value"] for e in init["env"]} == {
        "KAMUS_URL": "http://kamus-decryptor.kamus.svc",
        "TOKEN_FILE_PATH": "/var/run/secrets/kamus/token",
    }
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts == {
        "kamus-encrypted": "/kamus/encrypted",
        "kamus-decrypted": "/kamus/decrypted",
        "kamus-token": "/var/run/secrets/kamus",
    }
    assert pod["containers"] == [
        {
            "name": "server",
            "volumeMounts": [
                {"name": "kamus-decrypted", "mountPath": "/secrets", "readOnly": True}
            ],
        }
    ]


def test_env_file_seals_into_a_pod_patch_with_defaults_from_the_file_name(
    encryptor: CannedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    encryptor.otherwise = sealed
    env_file = tmp_path / "app.env"
    env_file.write_text(f"DB_PASSWORD={PASSWORD}\nAPI_KEY='k SENTINEL'\n")
    argv = seal_args(encryptor.url, env_file, "-n", "team-b", "--kind", "Pod",
                     "--init-format", "env", "--init-file-name", "app.env")  # fmt: skip

    (configmap, patch), _ = run_seal(argv, capsys)

    assert configmap["metadata"] == {"name": "app-encrypted", "namespace": "team-b"}
    assert set(configmap["data"]) == {"DB_PASSWORD", "API_KEY"}
    assert (patch["apiVersion"], patch["kind"]) == ("v1", "Pod")
    assert patch["metadata"] == {"name": "api", "namespace": "team-b"}
    assert patch["spec"]["initContainers"][0]["args"][-4:] == ["-f", "env", "-n", "app.env"]
    assert patch["spec"]["initContainers"][0]["image"] == f"kamus-init:{VERSION}"


def test_output_file_holds_both_documents(
    encryptor: CannedServer, secret_manifest: Path, tmp_path: Path
) -> None:
    encryptor.otherwise = sealed
    output = tmp_path / "sealed.yaml"

    assert main(seal_args(encryptor.url, secret_manifest, "-o", str(output)), {}) == ExitCode.OK

    kinds = [doc["kind"] for doc in yaml.safe_load_all(output.read_text())]
    assert kinds == ["ConfigMap", "Deployment"]


@pytest.mark.parametrize(
    ("content", "extra", "problem"),
    [
        pytest.param("kind: Secret\nmetadata: {name: x}\ndata: {k: '%%%'}\n", ["-n", "ns"],
                     "data.k is not valid base64", id="bad-base64"),
        pytest.param("kind: Secret\nmetadata: {name: x}\ndata: {k: '/w=='}\n", ["-n", "ns"],
                     "data.k is binary", id="binary"),
        pytest.param("kind: Secret\nmetadata: {name: x}\nstringData: {k: ''}\n", ["-n", "ns"],
                     "the value of k is empty", id="empty"),
        pytest.param("kind: Secret\nmetadata: {name: x}\nstringData: {k: v}\n", [],
                     "no namespace", id="no-namespace"),
        pytest.param("kind: Secret\nmetadata: {name: x, namespace: a}\nstringData: {k: v}\n",
                     ["-n", "b"], "namespace 'a' but -n says 'b'", id="namespace-clash"),
        pytest.param("kind: Secret\nmetadata: {name: x}\nstringData: {'a/b': v}\n",
                     ["-n", "ns"], "cannot be ConfigMap keys", id="bad-key"),
        pytest.param("kind: Secret\nmetadata: {}\nstringData: {k: v}\n", ["-n", "ns"],
                     "pass --name", id="no-name"),
        pytest.param("kind: ConfigMap\ndata: {k: v}\n", ["-n", "ns", "--input-format", "secret"],
                     "no Secret manifest", id="not-a-secret"),
    ],
)  # fmt: skip
def test_unusable_source_is_an_input_error_and_nothing_is_sent(
    encryptor: CannedServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    extra: list[str],
    problem: str,
) -> None:
    source = tmp_path / "secret.yaml"
    source.write_text(content)

    assert main(seal_args(encryptor.url, source, *extra), {}) == ExitCode.INPUT

    assert encryptor.requests == []
    assert problem in capsys.readouterr().err
