"""Offline sealing end to end: the sealing keys made with the admin command, the encryptor
publishing the public key, kamus-cli fetching it and encrypting with no network call, and pods of
several clusters decrypting through their own decryptors under gunicorn, or not at all.

Each "cluster" is a decryptor with a keyring of its own and a sealing key of its own (sealed by
that keyring); they share the development token authority, as clusters would each have theirs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from browser import chromium
from gunicorn_process import Service, base_environment, gunicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from kamus_kms.keyring import Keyring

TokenFactory = Callable[..., str]
SECRET = "sealed-offline-SENTINEL-7f3a"


def _run(module: str, *args: str, env: dict[str, str], stdin: str | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True,
        env=base_environment(env), timeout=120, check=False,
    )  # fmt: skip


class Cluster:
    """A keyring, the sealing keys made with it, and (once started) its services."""

    def __init__(self, name: str, folder: Path, base_env: dict[str, str]) -> None:
        folder.mkdir(parents=True)
        self.name = name
        self.folder = folder
        keyring = folder / "keyring.json"
        Keyring.generate().save(keyring)
        self.env = {**base_env, "KAMUS_KEYRING_FILE": str(keyring), "KAMUS_CLUSTER_NAME": name}
        made = _run("kamus_service.sealing", "new", "--cluster", name, env=self.env)
        assert made.returncode == 0, made.stderr
        assert "fingerprint" in made.stderr
        self.sealing_keys = folder / "sealing-keys.json"
        self.sealing_keys.write_text(made.stdout)
        self.env["KAMUS_SEALING_KEYS_FILE"] = str(self.sealing_keys)
        self.encryptor: Service | None = None
        self.decryptor: Service | None = None


@pytest.fixture(scope="module")
def clusters(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Cluster]]:
    folder = tmp_path_factory.mktemp("sealing-clusters")
    base = {k: v for k, v in service_env.items() if k != "KAMUS_KEYRING_FILE"}
    made = {name: Cluster(name, folder / name, base) for name in ("prod-eu", "prod-us", "other")}
    with ExitStack() as running:
        for name, cluster in made.items():
            encryptor_env = {k: v for k, v in cluster.env.items()
                             if k not in {"KAMUS_AUDIT_KEY_FILE", "KAMUS_KUBECONFIG"}}  # fmt: skip
            cluster.encryptor = running.enter_context(
                gunicorn(
                    "kamus_encryptor:create_app()", encryptor_env, folder / name / "enc", workers=1
                )
            )
            cluster.decryptor = running.enter_context(
                gunicorn(
                    "kamus_decryptor:create_app()", cluster.env, folder / name / "dec", workers=1
                )
            )
        yield made


def _fetch_key(cluster: Cluster, out: Path) -> str:
    assert cluster.encryptor is not None
    fetched = _run("kamus_cli.main", "sealing-key", "-u", cluster.encryptor.url,
                   "--allow-insecure-url", "-o", str(out), env={})  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    return fetched.stderr


def _sealing_key_text(cluster: Cluster) -> str:
    """The cluster's public sealing key, as its encryptor serves it."""
    assert cluster.encryptor is not None
    return requests.get(f"{cluster.encryptor.url}/api/v1/sealing-key", timeout=10).text.strip()


def _kamus_init(
    cluster: Cluster, folder: Path, out: Path, token: str
) -> subprocess.CompletedProcess[str]:
    assert cluster.decryptor is not None
    token_file = out.parent / f"token-{cluster.name}"
    token_file.write_text(token)
    out.mkdir(parents=True, exist_ok=True)
    env = {"KAMUS_URL": cluster.decryptor.url, "TOKEN_FILE_PATH": str(token_file)}
    return _run("kamus_init.main", "-e", str(folder), "-d", str(out), "-f", "files",
                "--timeout", "20", env=env)  # fmt: skip


def _opens_in_eu_and_us_only(
    clusters: dict[str, Cluster], ciphertext: str, token: TokenFactory, tmp_path: Path
) -> Path:
    """Check that a pod of team-s/app gets ``ciphertext`` decrypted by kamus-init in prod-eu and
    prod-us and nothing in the third cluster; return the folder holding it."""
    encrypted = tmp_path / "encrypted"
    encrypted.mkdir()
    (encrypted / "db-password").write_text(ciphertext)
    pod_token = token("team-s", "app")
    for cluster in (clusters["prod-eu"], clusters["prod-us"]):
        out = tmp_path / f"out-{cluster.name}"
        opened = _kamus_init(cluster, encrypted, out, pod_token)
        assert opened.returncode == 0, opened.stderr
        assert (out / "db-password").read_text() == SECRET
    refused = _kamus_init(clusters["other"], encrypted, tmp_path / "out-other", pod_token)
    assert refused.returncode == 5  # 400 invalid_ciphertext: not sealed for this cluster
    assert "invalid_ciphertext" in refused.stderr
    assert list((tmp_path / "out-other").iterdir()) == []
    return encrypted


def test_one_ciphertext_sealed_offline_opens_in_each_recipient_cluster_and_nowhere_else(
    clusters: dict[str, Cluster], token: TokenFactory, tmp_path: Path
) -> None:
    eu, us = clusters["prod-eu"], clusters["prod-us"]
    said = _fetch_key(eu, tmp_path / "eu.pub")
    _fetch_key(us, tmp_path / "us.pub")
    assert "of cluster 'prod-eu' (MLKEM768-X25519), SHA-256 fingerprint" in said

    # No URL and no proxy: the encryption happens on this machine.
    sealed = _run("kamus_cli.main", "encrypt", "-n", "team-s", "-a", "app",
                  "--sealing-key", str(tmp_path / "eu.pub"),
                  "--sealing-key", str(tmp_path / "us.pub"),
                  env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"},
                  stdin=SECRET)  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr
    assert sealed.stdout.startswith("kamus:v1:sealed:team-s:app:")
    encrypted = _opens_in_eu_and_us_only(clusters, sealed.stdout, token, tmp_path)
    wrong_scope = _kamus_init(eu, encrypted, tmp_path / "out-intruder", token("team-s", "intruder"))
    assert wrong_scope.returncode == 5
    assert "scope_mismatch" in wrong_scope.stderr

    for cluster in clusters.values():
        assert cluster.decryptor is not None
        assert cluster.encryptor is not None
        assert SECRET not in cluster.decryptor.output() + cluster.encryptor.output()


def test_the_seal_api_makes_the_same_multi_cluster_ciphertext_without_kamus_cli(
    clusters: dict[str, Cluster], token: TokenFactory, tmp_path: Path
) -> None:
    eu, us = clusters["prod-eu"], clusters["prod-us"]
    assert eu.encryptor is not None
    assert us.encryptor is not None
    us_key = _sealing_key_text(us)
    response = requests.post(
        f"{eu.encryptor.url}/api/v1/seal",
        json={"data": SECRET, "namespace": "team-s", "service-account": "app",
              "sealing-keys": [us_key]},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.text.startswith("kamus:v1:sealed:team-s:app:")
    _opens_in_eu_and_us_only(clusters, response.text, token, tmp_path)


def test_the_encrypt_page_seals_for_several_clusters(
    clusters: dict[str, Cluster], token: TokenFactory, tmp_path: Path
) -> None:
    # In a browser, on prod-eu's encryptor: the other-clusters option, prod-us's key pasted in.
    eu, us = clusters["prod-eu"], clusters["prod-us"]
    assert eu.encryptor is not None
    assert us.encryptor is not None
    us_key = _sealing_key_text(us)
    with chromium(tmp_path / "profile") as browser:
        driver = browser.driver
        driver.get(eu.encryptor.url + "/")
        details = driver.find_element(By.ID, "clusters")
        assert details.is_displayed()  # this Kamus has a sealing key
        details.find_element(By.TAG_NAME, "summary").click()
        for field, value in (("namespace", "team-s"), ("service-account", "app"),
                             ("secret", SECRET), ("sealing-keys", us_key)):  # fmt: skip
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "encrypt").click()
        WebDriverWait(driver, 10).until(
            expected_conditions.visibility_of_element_located((By.ID, "result"))
        )
        ciphertext = driver.find_element(By.ID, "ciphertext").get_attribute("textContent") or ""
        status = driver.find_element(By.ID, "status").text
        assert browser.console_errors() == []
    assert "in this cluster and 1 other(s)" in status
    assert ciphertext.startswith("kamus:v1:sealed:team-s:app:")
    _opens_in_eu_and_us_only(clusters, ciphertext, token, tmp_path)


def test_a_pinned_fingerprint_refuses_another_cluster_s_key(
    clusters: dict[str, Cluster], tmp_path: Path
) -> None:
    said = _fetch_key(clusters["prod-eu"], tmp_path / "eu.pub")
    fingerprint = said.rsplit("fingerprint ", 1)[1].strip()
    other = clusters["other"]
    assert other.encryptor is not None
    pinned = _run("kamus_cli.main", "sealing-key", "-u", other.encryptor.url,
                  "--allow-insecure-url", "--expect-fingerprint", fingerprint,
                  "-o", str(tmp_path / "other.pub"), env={})  # fmt: skip
    assert pinned.returncode == 8
    assert "not the expected one" in pinned.stderr
    assert not (tmp_path / "other.pub").exists()


def test_the_sealing_keys_document_holds_no_private_key_in_the_clear(
    clusters: dict[str, Cluster],
) -> None:
    import json  # noqa: PLC0415

    document = json.loads(clusters["prod-eu"].sealing_keys.read_text())
    (key,) = document["keys"]
    assert key["state"] == "active"
    assert key["private"].startswith("local:")
    shown = _run("kamus_service.sealing", "show", str(clusters["prod-eu"].sealing_keys), env={})
    assert shown.returncode == 0
    assert key["id"] in shown.stdout
    assert os.path.getsize(clusters["prod-eu"].sealing_keys) > 0
