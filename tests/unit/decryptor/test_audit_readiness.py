"""Readiness follows the pod's own audit trail: a worker that cannot write its audit chain is not
ready (fail-closed: plain /readyz 503, so the kubelet takes the pod out of the Service), and is
ready again without a restart once the volume is repaired. The check never writes to the chain."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audit_volume import DAMAGES, Damage, block_folder, unblock_folder
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from reviewer_double import StaticReviewer

from kamus_decryptor import create_app
from kamus_decryptor.audit import AuditEvent, AuditTrail
from kamus_decryptor.auditfile import AuditDirectory, AuditFile
from kamus_kms.errors import AuditWriteError
from kamus_kms.keyring import Keyring
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.settings import Settings

KEY = b"k" * 32


class Volume:
    """What os.statvfs says about the test's folder: its free bytes can be set."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.free: int | None = None  # None: the real answer

    def statvfs(self, path: Any, real: Callable[[Any], os.statvfs_result]) -> os.statvfs_result:
        found = real(path)
        if self.free is None or not Path(path).is_relative_to(self.root):
            return found
        blocks = self.free // found.f_frsize
        return os.statvfs_result((found.f_bsize, found.f_frsize, found.f_blocks, blocks, blocks,
                                  found.f_files, found.f_ffree, found.f_favail, found.f_flag,
                                  found.f_namemax))  # fmt: skip


class FullVolume(AuditFile):
    """An audit file that refuses records as a full volume does, while ``full`` is set."""

    full = False

    def append(self, event: dict[str, Any]) -> Any:  # what AuditFile.append returns
        if self.full:
            raise AuditWriteError(f"cannot write audit file {self.path}: No space left on device")
        return super().append(event)


@pytest.fixture
def volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Volume:
    """The free space the check sees under tmp_path."""
    volume, real = Volume(tmp_path), os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: volume.statvfs(path, real))
    return volume


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    """Where the chain is written: a file in a folder of its own."""
    (tmp_path / "audit").mkdir()
    return tmp_path / "audit" / "audit.jsonl"


@pytest.fixture
def file(audit_path: Path) -> FullVolume:
    """The chain file, written for real until made full."""
    return FullVolume(audit_path, KEY, fsync=False)


@pytest.fixture
def trail(file: FullVolume) -> AuditTrail:
    """A fail-closed trail writing to the chain file."""
    return AuditTrail(KEY, file=file)


def _emit(trail: AuditTrail) -> None:
    trail.emit(AuditEvent("decrypt", "request-1", "10.0.0.1", "kamus-init"), None)


def _reason(trail: AuditTrail) -> str | None:
    """What the check finds: None when ready, else the reason it gives."""
    try:
        trail.check_ready()
    except AuditWriteError as exc:
        return f"{exc.code}: {exc.reason}".removeprefix("audit_unavailable: ")
    return None


def test_a_healthy_trail_is_ready_and_its_check_writes_nothing(
    trail: AuditTrail, audit_path: Path
) -> None:
    assert _reason(trail) is None
    assert not audit_path.exists()  # no chain file is created for the check either
    _emit(trail)
    before = audit_path.read_bytes()
    assert [_reason(trail) for _ in range(3)] == [None] * 3
    assert audit_path.read_bytes() == before


@DAMAGES
def test_a_chain_that_cannot_be_written_is_found_before_a_write_fails_and_its_repair_too(
    trail: AuditTrail, audit_path: Path, damage: Damage, repair: Damage
) -> None:
    _emit(trail)
    damage(audit_path)
    # Found by the check alone: every worker of the pod sees it, not only one whose write failed.
    assert _reason(trail) == "not_writable"
    with pytest.raises(AuditWriteError):
        _emit(trail)
    assert _reason(trail) == "not_writable"
    repair(audit_path)
    assert _reason(trail) is None
    _emit(trail)
    assert [json.loads(line)["seq"] for line in audit_path.read_text().splitlines()] == [1, 2]


def test_a_worker_chain_in_a_folder_that_cannot_be_written_is_not_ready(tmp_path: Path) -> None:
    blocker = tmp_path / "chains"
    blocker.write_text("not a folder")
    trail = AuditTrail(KEY, file=AuditDirectory(blocker, KEY, fsync=False))
    assert _reason(trail) == "not_writable"
    blocker.unlink()
    blocker.mkdir()
    assert _reason(trail) is None
    _emit(trail)
    assert len(list(blocker.glob("*.jsonl"))) == 1


def test_after_a_refused_write_a_full_volume_keeps_the_worker_out_until_space_is_freed(
    trail: AuditTrail, file: FullVolume, volume: Volume
) -> None:
    volume.free = 4096
    _emit(trail)
    # Little free space alone is no reason while writes succeed: a healthy pod does not flap.
    assert _reason(trail) is None
    file.full = True
    with pytest.raises(AuditWriteError):
        _emit(trail)
    assert [_reason(trail) for _ in range(3)] == ["volume_full"] * 3
    # Space freed (the volume recovers): the worker is back without a restart or a decrypt.
    file.full = False
    volume.free = 1 << 30
    assert _reason(trail) is None


def test_a_refused_write_the_check_cannot_explain_does_not_keep_the_worker_out(
    trail: AuditTrail, file: FullVolume, volume: Volume
) -> None:
    # A worker out of the Service gets no decrypt that could succeed: the check must let it back.
    volume.free = 1 << 30
    file.full = True
    with pytest.raises(AuditWriteError):
        _emit(trail)
    assert _reason(trail) is None


def test_a_successful_write_ends_a_refused_writes_state(
    trail: AuditTrail, file: FullVolume, volume: Volume
) -> None:
    volume.free = 4096
    file.full = True
    with pytest.raises(AuditWriteError):
        _emit(trail)
    assert _reason(trail) == "volume_full"
    file.full = False
    _emit(trail)
    assert _reason(trail) is None


@pytest.fixture
def settings(keyring: Keyring, audit_path: Path) -> Callable[..., Settings]:
    """Decryptor settings with the audit file, checked at every /readyz."""

    def make(**overrides: Any) -> Settings:
        return Settings(
            service="decryptor", keyring=keyring.to_json(), audit_key=KEY, audit_file=audit_path,
            audit_fsync=False, readiness_check_seconds=0.0, **overrides,
        )  # fmt: skip

    return make


@pytest.fixture
def registry() -> CollectorRegistry:
    """The decryptor's metrics."""
    return CollectorRegistry()


@pytest.fixture
def ciphertext(sealer: Sealer, team_a_app: Scope) -> str:
    """A ciphertext for team-a/app."""
    return sealer.seal(b"the-plaintext", team_a_app)


def _decrypt(client: FlaskClient, ciphertext: str) -> tuple[int, str]:
    response = client.post("/api/v1/decrypt", json={"data": ciphertext},
                           headers={"Authorization": "Bearer token-team_a-app"})  # fmt: skip
    body = response.get_json(silent=True)
    return response.status_code, body["error"] if body else response.get_data(as_text=True)


def _readyz(client: FlaskClient) -> tuple[int, int, dict[str, Any]]:
    """Plain and verbose /readyz statuses (verbose first: it waits for the check) and the entry."""
    verbose = client.get("/readyz?verbose")
    plain = client.get("/readyz")
    return plain.status_code, verbose.status_code, verbose.get_json()["dependencies"]["audit"]


def _audit_ready(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("kamus_dependency_ready", {"dependency": "audit"})


@pytest.fixture
def client(
    settings: Callable[..., Settings], reviewer: StaticReviewer, registry: CollectorRegistry
) -> FlaskClient:
    """A fail-closed decryptor writing the audit file."""
    return create_app(settings(), reviewer=reviewer, registry=registry).test_client()


def test_fail_closed_a_worker_that_cannot_write_its_chain_leaves_the_service_and_comes_back(
    client: FlaskClient, ciphertext: str, audit_path: Path, registry: CollectorRegistry
) -> None:
    assert _decrypt(client, ciphertext) == (200, "the-plaintext")
    plain, verbose, entry = _readyz(client)
    assert (plain, verbose, entry["ready"], entry["enforced"]) == (200, 200, True, True)
    assert _audit_ready(registry) == 1

    block_folder(audit_path)
    assert _decrypt(client, ciphertext) == (503, "audit_unavailable")
    plain, verbose, entry = _readyz(client)
    assert (plain, verbose) == (503, 503)
    assert (entry["ready"], entry["error"], entry["reason"]) == (False, "audit_unavailable",
                                                                 "not_writable")  # fmt: skip
    assert client.get("/readyz").get_json() == {"status": "not_ready"}
    assert _audit_ready(registry) == 0
    # Why, but nothing of the file: not even its path.
    assert str(audit_path.parent) not in client.get("/readyz?verbose").get_data(as_text=True)

    unblock_folder(audit_path)
    plain, verbose, entry = _readyz(client)
    assert (plain, verbose, entry["ready"]) == (200, 200, True)
    assert _audit_ready(registry) == 1
    assert _decrypt(client, ciphertext) == (200, "the-plaintext")


def test_best_effort_reports_the_audit_trail_but_the_worker_stays_ready(
    settings: Callable[..., Settings], reviewer: StaticReviewer, registry: CollectorRegistry,
    ciphertext: str, audit_path: Path,
) -> None:  # fmt: skip
    app = create_app(settings(audit_policy="best-effort"), reviewer=reviewer, registry=registry)
    client = app.test_client()
    assert _decrypt(client, ciphertext) == (200, "the-plaintext")
    block_folder(audit_path)
    # Decrypts are still answered: taking the pod out would only cost capacity.
    assert _decrypt(client, ciphertext) == (200, "the-plaintext")
    plain, verbose, entry = _readyz(client)
    assert (plain, verbose) == (200, 200)
    assert (entry["ready"], entry["reason"], entry["enforced"]) == (False, "not_writable", False)
    assert _audit_ready(registry) == 0


def test_without_an_audit_file_there_is_no_audit_entry(
    keyring: Keyring, reviewer: StaticReviewer
) -> None:
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=KEY,
                        readiness_check_seconds=0.0)  # fmt: skip
    readyz = create_app(settings, reviewer=reviewer).test_client().get("/readyz?verbose")
    assert readyz.status_code == 200
    assert set(readyz.get_json()["dependencies"]) == {"kms", "tokenreview"}


def test_a_missing_audit_folder_at_start_keeps_the_worker_out(
    settings: Callable[..., Settings], reviewer: StaticReviewer, audit_path: Path
) -> None:
    shutil.rmtree(audit_path.parent)
    client = create_app(settings(), reviewer=reviewer).test_client()
    plain, verbose, entry = _readyz(client)
    assert (plain, verbose, entry["reason"]) == (503, 503, "not_writable")
