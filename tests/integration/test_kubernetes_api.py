"""The decryptor against a Kubernetes API server: the development token authority and a real
kube-apiserver, side by side. Each scenario runs on both, so a stand-in that answers differently
from the real server fails here.

The decryptor runs under gunicorn as in a cluster: not in development mode, the default audience
`kamus`, and on the real server as its own service account allowed only `create tokenreviews`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
import requests
from clusters import Cluster, DevelopmentCluster, RealCluster
from cryptography.hazmat.primitives.asymmetric import rsa
from gunicorn_process import Service, base_environment, gunicorn

from kamus_dev.authority import REVIEW_CACHE_SECONDS

pytestmark = pytest.mark.integration

SECRET = "s3cret for team-a/app"
# The decryptor's own review cache, kept short so revocation tests wait mostly for the API
# server's ~10 s cache of successful reviews.
DECRYPTOR_CACHE_SECONDS = 1


@pytest.fixture(scope="module", params=["development-authority", "kube-apiserver"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Each API server in turn, with team-a/app, team-a/other and team-b/app."""
    chosen: Cluster
    development = None
    if request.param == "kube-apiserver":
        chosen = RealCluster(request.getfixturevalue("kube_apiserver"))
    else:
        chosen = development = DevelopmentCluster()
    for namespace, service_account in (("team-a", "app"), ("team-a", "other"), ("team-b", "app")):
        chosen.create_service_account(namespace, service_account)
    yield chosen
    if development is not None:
        development.close()


def _decryptor_env(
    cluster: Cluster, service_env: dict[str, str], folder: Path, **extra: str
) -> dict[str, str]:
    kubeconfig = folder / "kubeconfig"
    cluster.decryptor_kubeconfig(kubeconfig)
    return {
        **service_env,
        "KAMUS_KUBECONFIG": str(kubeconfig),
        "KAMUS_TOKENREVIEW_CACHE_SECONDS": str(DECRYPTOR_CACHE_SECONDS),
        "KAMUS_TOKENREVIEW_TIMEOUT_SECONDS": "2",
        **extra,
    }


@pytest.fixture(scope="module")
def decryptor_on(
    cluster: Cluster, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The decryptor, two workers, reviewing tokens with this cluster."""
    folder = tmp_path_factory.mktemp(f"decryptor-{cluster.name}")
    with gunicorn(
        "kamus_decryptor:create_app()", _decryptor_env(cluster, service_env, folder), folder
    ) as service:
        yield service


@pytest.fixture(scope="module")
def hybrid_on(
    cluster: Cluster, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The decryptor in hybrid mode (offline check with the cluster's OIDC keys first)."""
    folder = tmp_path_factory.mktemp(f"hybrid-{cluster.name}")
    env = _decryptor_env(cluster, service_env, folder, KAMUS_TOKEN_VERIFICATION="hybrid")
    with gunicorn("kamus_decryptor:create_app()", env, folder, workers=1) as service:
        yield service


def _encrypt(encryptor: Service, namespace: str, service_account: str, data: str) -> str:
    body = {"data": data, "namespace": namespace, "service-account": service_account}
    response = requests.post(f"{encryptor.url}/api/v1/encrypt", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="module")
def ciphertext(encryptor: Service) -> str:
    """SECRET encrypted for team-a/app."""
    return _encrypt(encryptor, "team-a", "app", SECRET)


def _decrypt(service: Service, ciphertext: str, token: str) -> requests.Response:
    return requests.post(
        f"{service.url}/api/v1/decrypt",
        json={"data": ciphertext},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _error(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


def test_a_pod_token_of_the_bound_scope_decrypts(
    cluster: Cluster, decryptor_on: Service, ciphertext: str
) -> None:
    readyz = requests.get(f"{decryptor_on.url}/readyz?verbose", timeout=30).json()
    assert {name: state["ready"] for name, state in readyz["dependencies"].items()} == {
        "kms": True,
        "tokenreview": True,
    }
    cluster.create_pod("team-a", "app-allowed", "app")
    token = cluster.mint("team-a", "app", pod="app-allowed")
    response = _decrypt(decryptor_on, ciphertext, token)
    assert (response.status_code, response.text) == (200, SECRET)


def test_a_decryptor_not_allowed_to_review_tokens_says_so_and_decrypts_nothing(
    cluster: Cluster,
    service_env: dict[str, str],
    ciphertext: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp(f"unprivileged-{cluster.name}")
    cluster.unprivileged_kubeconfig(folder / "kubeconfig")
    env = {**service_env, "KAMUS_KUBECONFIG": str(folder / "kubeconfig")}
    with gunicorn("kamus_decryptor:create_app()", env, folder, workers=1) as service:
        ready = requests.get(f"{service.url}/readyz?verbose", timeout=10)
        response = _decrypt(service, ciphertext, cluster.mint("team-a", "app"))
        output = service.output()
    assert ready.status_code == 200  # reported, not enforced: the same holds for every replica
    state = ready.json()["dependencies"]["tokenreview"]
    assert (state["ready"], state["error"]) == (False, "unavailable")
    assert _error(response) == (503, "unavailable")
    assert SECRET not in response.text
    assert "TokenReview refused the decryptor's credentials" in output  # tells the operator


def test_two_token_requests_in_one_second_can_return_the_same_token(
    cluster: Cluster, decryptor_on: Service, ciphertext: str
) -> None:
    """Kubernetes 1.28 tokens carry no `jti`: nothing may assume every token is unique."""
    for _ in range(20):
        first, second = cluster.mint("team-a", "app"), cluster.mint("team-a", "app")
        claims = [jwt.decode(t, options={"verify_signature": False}) for t in (first, second)]
        if claims[0]["iat"] == claims[1]["iat"]:
            break
    assert "jti" not in claims[0]
    assert first == second
    for token in (first, second):
        assert _decrypt(decryptor_on, ciphertext, token).text == SECRET


@pytest.mark.parametrize(
    ("namespace", "service_account"),
    [("team-a", "other"), ("team-b", "app")],
    ids=["other-service-account", "other-namespace"],
)
def test_a_token_of_another_scope_gets_403_and_no_plaintext(
    cluster: Cluster, decryptor_on: Service, ciphertext: str, namespace: str, service_account: str
) -> None:
    response = _decrypt(decryptor_on, ciphertext, cluster.mint(namespace, service_account))
    assert _error(response) == (403, "scope_mismatch")
    assert SECRET not in response.text


def _expired(cluster: Cluster) -> str:
    now = int(time.time())
    token = cluster.mint("team-a", "app")
    # Past the API server's 60 s leeway; signed by the cluster's own key, so only `exp` is wrong.
    return cluster.resign(token, iat=now - 7200, nbf=now - 7200, exp=now - 3600)


def _foreign(cluster: Cluster) -> str:
    header = jwt.get_unverified_header(token := cluster.mint("team-a", "app"))
    claims = jwt.decode(token, options={"verify_signature": False})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers=header)


INVALID_TOKENS: dict[str, Callable[[Cluster], str]] = {
    "garbage": lambda cluster: "garbage",
    "not-for-kamus": lambda cluster: cluster.mint("team-a", "app", ("not-kamus",)),
    "no-audience-requested": lambda cluster: cluster.mint("team-a", "app", ()),
    "expired": _expired,
    "forged-signature": _foreign,
}


@pytest.mark.parametrize("kind", sorted(INVALID_TOKENS))
def test_an_invalid_token_gets_401_and_no_plaintext(
    cluster: Cluster, decryptor_on: Service, ciphertext: str, kind: str
) -> None:
    response = _decrypt(decryptor_on, ciphertext, INVALID_TOKENS[kind](cluster))
    assert _error(response) == (401, "unauthorized")
    assert SECRET not in response.text


def test_readiness_probes_cost_at_most_one_token_review_per_interval(
    cluster: Cluster, decryptor_on: Service
) -> None:
    before, started = cluster.tokenreviews(), time.monotonic()
    with requests.Session() as session:
        answers = [session.get(f"{decryptor_on.url}/readyz", timeout=10) for _ in range(300)]
    elapsed = time.monotonic() - started
    assert {a.status_code for a in answers} == {200}
    # Two worker processes, each checking at most once per 5 s interval.
    assert cluster.tokenreviews() - before <= 2 * (1 + int(elapsed / 5))


def test_revoked_identities_stop_decrypting_once_the_review_caches_expire(
    cluster: Cluster, decryptor_on: Service, encryptor: Service
) -> None:
    """A deleted service account, one deleted and created again, a deleted pod and a pod created
    again under the same name: each token worked before and fails after both caches expire."""
    cases = {
        "sa-deleted": ("revoked-a", "gone", None),
        "sa-recreated": ("revoked-b", "reborn", None),
        "pod-deleted": ("revoked-c", "app", "pod-gone"),
        "pod-recreated": ("revoked-d", "app", "pod-reborn"),
    }
    tokens, texts = {}, {}
    for case, (namespace, service_account, pod) in cases.items():
        cluster.create_service_account(namespace, service_account)
        if pod is not None:
            cluster.create_pod(namespace, pod, service_account)
        tokens[case] = cluster.mint(namespace, service_account, pod=pod)
        texts[case] = _encrypt(encryptor, namespace, service_account, f"value of {case}")
        assert _decrypt(decryptor_on, texts[case], tokens[case]).text == f"value of {case}"
    cluster.delete_service_account("revoked-a", "gone")
    cluster.delete_service_account("revoked-b", "reborn")
    cluster.create_service_account("revoked-b", "reborn")
    cluster.delete_pod("revoked-c", "pod-gone")
    cluster.delete_pod("revoked-d", "pod-reborn")
    cluster.create_pod("revoked-d", "pod-reborn", "app")
    time.sleep(REVIEW_CACHE_SECONDS + DECRYPTOR_CACHE_SECONDS + 1)
    outcomes = {case: _decrypt(decryptor_on, texts[case], tokens[case]) for case in cases}
    assert {case: _error(r) for case, r in outcomes.items()} == dict.fromkeys(
        cases, (401, "unauthorized")
    )


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_an_unreachable_api_server_means_503_then_recovery(
    cluster: Cluster, decryptor_on: Service, ciphertext: str, outage: str
) -> None:
    # A token never reviewed, so no cache can answer for it: bound to a pod of its own, since
    # two plain tokens asked for in the same second are the same token on Kubernetes 1.28.
    pod = f"outage-{outage}"
    cluster.create_pod("team-a", pod, "app")
    token = cluster.mint("team-a", "app", pod=pod)
    with cluster.stopped() if outage == "stopped" else cluster.hung():
        during = [_decrypt(decryptor_on, ciphertext, token) for _ in range(2)]
    for response in during:
        assert _error(response) == (503, "unavailable")
        assert int(response.headers["Retry-After"]) > 0
        assert SECRET not in response.text
    # A restarted API server may take a moment before it answers reviews: the decryptor answers
    # 503 meanwhile and decrypts as soon as a review succeeds.
    deadline = time.monotonic() + 15
    after = _decrypt(decryptor_on, ciphertext, token)
    while after.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
        after = _decrypt(decryptor_on, ciphertext, token)
    assert (after.status_code, after.text) == (200, SECRET)


def test_kamus_init_starts_a_pod_with_one_token_review(
    cluster: Cluster, decryptor_on: Service, encryptor: Service, tmp_path: Path
) -> None:
    secrets = {f"secret-{n}": f"value {n}" for n in range(5)}
    mounted = tmp_path / "encrypted"
    mounted.mkdir()
    for name, value in secrets.items():
        (mounted / name).write_text(_encrypt(encryptor, "team-a", "app", value))
    out = tmp_path / "decrypted"
    out.mkdir()
    cluster.create_pod("team-a", "app-init", "app")
    token_file = tmp_path / "token"
    token_file.write_text(cluster.mint("team-a", "app", pod="app-init"))
    before = cluster.tokenreviews()
    result = subprocess.run(
        [sys.executable, "-m", "kamus_init.main", "-e", str(mounted), "-d", str(out),
         "-f", "files"],
        env=base_environment({"KAMUS_URL": decryptor_on.url, "TOKEN_FILE_PATH": str(token_file)}),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == secrets
    assert cluster.tokenreviews() - before == 1


def test_hybrid_mode_is_ready_and_decrypts_with_one_review(
    cluster: Cluster, hybrid_on: Service, ciphertext: str
) -> None:
    # ?verbose waits for the checks it starts, so none lands inside the count below.
    readyz = requests.get(f"{hybrid_on.url}/readyz?verbose", timeout=30)
    assert readyz.status_code == 200
    assert readyz.json()["dependencies"]["tokenreview"]["ready"] is True  # the key set is read
    token = cluster.mint("team-a", "app")
    before = cluster.tokenreviews()
    for _ in range(3):
        response = _decrypt(hybrid_on, ciphertext, token)
        assert (response.status_code, response.text) == (200, SECRET)
    assert cluster.tokenreviews() - before == 1


@pytest.mark.parametrize("kind", sorted(INVALID_TOKENS))
def test_hybrid_mode_refuses_invalid_tokens_without_a_review(
    cluster: Cluster, hybrid_on: Service, ciphertext: str, kind: str
) -> None:
    token = INVALID_TOKENS[kind](cluster)
    before = cluster.tokenreviews()
    response = _decrypt(hybrid_on, ciphertext, token)
    assert _error(response) == (401, "unauthorized")
    assert cluster.tokenreviews() == before
