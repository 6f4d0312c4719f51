"""The signing key file shared by several processes, and the kubeconfig written for clients."""

from __future__ import annotations

import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kamus_dev.authority import ManualClock, TokenAuthority
from kamus_dev.kubeconfig import write_kubeconfig
from kamus_dev.tokens import key_id, load_or_create_signing_key


def test_key_file_is_created_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"

    first = load_or_create_signing_key(path)
    second = load_or_create_signing_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id(first.public_key()) == key_id(second.public_key())


def test_racing_processes_end_up_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"

    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(lambda _: load_or_create_signing_key(path), range(4)))

    assert len({key_id(key.public_key()) for key in keys}) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["signing-key.pem"]


def test_authorities_sharing_a_key_file_accept_each_others_tokens(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "signing-key.pem"
    issuer = TokenAuthority(signing_key=load_or_create_signing_key(path), clock=clock)
    reviewer = TokenAuthority(signing_key=load_or_create_signing_key(path), clock=clock)
    token, _ = issuer.issue_token("shop", "app", ["kamus"])

    status = reviewer.review(token, ["kamus"])

    assert status["authenticated"] is True
    assert status["user"]["uid"] == issuer.service_account_uid("shop", "app")


def test_kubeconfig_is_private_and_names_server_and_token(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("old")
    path.chmod(0o644)

    write_kubeconfig(path, "http://127.0.0.1:8001", "secret-token")

    config = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:8001"
    assert config["users"][0]["user"] == {"token": "secret-token"}
    assert config["current-context"] == config["contexts"][0]["name"]
