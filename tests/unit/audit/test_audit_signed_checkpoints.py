"""Audit verifiable without the forging key: the public hash chain, signed checkpoints, witnesses
and per-process chains (kamus_kms.auditsign, kamus_decryptor.auditfile)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kamus_cli.audit import main as audit_main
from kamus_client.exitcodes import ExitCode
from kamus_decryptor.app import SIGNER_RETRY_WAITS, _signer
from kamus_decryptor.auditfile import AuditDirectory, AuditFile
from kamus_kms.auditchain import json_line, verify
from kamus_kms.auditsign import (
    SIGNING_SCOPE,
    public_text,
    record_hash,
    seal_private,
    signing_key,
)
from kamus_kms.auditverify import ChainReport, CheckpointPolicy, verify_chains
from kamus_kms.auditwitness import Witness
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError
from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.sealer import Sealer
from kamus_service.settings import Settings

SampleEvent = Callable[[int], dict[str, Any]]


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write(
    path: Path, key: bytes, signer: Ed25519PrivateKey, events: int, sample: SampleEvent,
    witnessed: list[dict[str, Any]] | None = None,
) -> AuditFile:  # fmt: skip
    log = AuditFile(path, key, fsync=False, signer=signer, checkpoint_records=3,
                    checkpoint_seconds=3600,
                    witness=(lambda chain, record: witnessed.append(record))
                    if witnessed is not None else None)  # fmt: skip
    for number in range(1, events + 1):
        log.append(sample(number))
    return log


def verify_public(
    path: Path, public: Ed25519PublicKey, witnessed: list[dict[str, Any]] | None = None
) -> ChainReport:
    """One chain checked with the public key, against the checkpoints a witness printed."""
    witness = Witness()
    for record in witnessed or []:
        witness.add({**record, "chain": path.name}, from_log=False)
    (report,) = verify_chains([path], public, witness, CheckpointPolicy(3, 3600))
    return report


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_checkpoints_are_signed_every_n_records_and_verify_with_the_public_key_only(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent
) -> None:
    path = tmp_path / "chain.jsonl"
    witnessed: list[dict[str, Any]] = []
    write(path, key, signer, 7, sample_event, witnessed)

    records = [json.loads(line) for line in lines(path)]
    checkpoints = [r for r in records if r.get("event") == "checkpoint"]
    # The new chain is signed first (seq 1 signs 0 records); events 1-3 are seq 2-4, signed by the
    # checkpoint at seq 5; events 4-6 are seq 6-8, signed at seq 9; event 7 is seq 10, not yet.
    assert [c["checkpoint"]["seq"] for c in checkpoints] == [0, 4, 8]
    assert checkpoints == witnessed  # every record the writer adds by itself reaches the witness
    result = verify_public(path, signer.public_key())
    assert result.ok, result.problems
    assert (result.records, result.checkpoints, result.uncovered) == (10, 3, 1)
    assert verify(path, key).ok  # the HMAC chain still verifies with the audit key


def test_an_edit_is_found_without_any_key(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent
) -> None:
    path = tmp_path / "chain.jsonl"
    write(path, key, signer, 5, sample_event)
    content = lines(path)
    content[2] = content[2].replace('"outcome":"allowed"', '"outcome":"denied"')
    path.write_text("".join(content))
    (problem,) = verify_public(path, signer.public_key()).problems
    assert problem.startswith("line 3: edited")


def test_rewriting_the_chain_without_the_signing_key_breaks_a_checkpoint(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent
) -> None:
    # Whoever can write the file recomputes every public hash after an edit: only the signed
    # checkpoint, which they cannot re-sign, tells.
    path = tmp_path / "chain.jsonl"
    write(path, key, signer, 5, sample_event)
    records = [json.loads(line) for line in lines(path)]
    records[1]["outcome"] = "denied"
    previous = "0" * 64
    for record in records:
        record["hash"] = record_hash(previous, record)
        previous = record["hash"]
    path.write_text("".join(json_line(r) + "\n" for r in records))
    (problem,) = verify_public(path, signer.public_key()).problems
    assert "differ from what the checkpoint signed" in problem


def test_records_removed_from_the_end_are_found_against_a_witnessed_checkpoint(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent
) -> None:
    path = tmp_path / "chain.jsonl"
    witnessed: list[dict[str, Any]] = []
    write(path, key, signer, 7, sample_event, witnessed)
    path.write_text("".join(lines(path)[:6]))  # the third checkpoint and after: gone

    alone = verify_public(path, signer.public_key())
    assert alone.ok  # the file alone cannot tell
    assert alone.uncovered == 1
    (problem,) = verify_public(path, signer.public_key(), witnessed).problems
    assert problem == "deleted: seq 7..9 missing at the end (the witnesses saw seq 9)"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "deleted or reordered"),
        (lambda ls: [*ls[:2], ls[1], *ls[2:]], "inserted: a repeated sequence number"),
        (lambda ls: [ls[0], *ls[2:]], "deleted or reordered"),
    ],
    ids=["reordered", "duplicated", "deleted"],
)
def test_reordering_insertion_and_deletion_are_found(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent,
    change: Callable[[list[str]], list[str]], expected: str,
) -> None:  # fmt: skip
    path = tmp_path / "chain.jsonl"
    write(path, key, signer, 5, sample_event)
    path.write_text("".join(change(lines(path))))
    (problem,) = verify_public(path, signer.public_key()).problems
    assert expected in problem


def test_a_checkpoint_signed_by_another_key_is_a_forgery(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent
) -> None:
    path = tmp_path / "chain.jsonl"
    write(path, key, Ed25519PrivateKey.generate(), 4, sample_event)
    (problem,) = verify_public(path, signer.public_key()).problems
    assert "forged checkpoint" in problem


def test_a_checkpoint_is_written_after_t_seconds_without_further_records(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent
) -> None:
    path = tmp_path / "chain.jsonl"
    log = AuditFile(path, key, fsync=False, signer=signer, checkpoint_records=1000,
                    checkpoint_seconds=0.2)  # fmt: skip
    log.append(sample_event(1))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(lines(path)) < 3:
        time.sleep(0.05)
    assert json.loads(lines(path)[2])["checkpoint"]["seq"] == 2
    assert verify_public(path, signer.public_key()).uncovered == 0


def test_each_process_writes_a_chain_of_its_own(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("HOSTNAME", "kamus-decryptor-7d9f")
    folder = AuditDirectory(tmp_path, key, fsync=False, signer=signer, checkpoint_records=2)
    for pid in (101, 102):
        monkeypatch.setattr("kamus_decryptor.auditfile.os.getpid", lambda pid=pid: pid)
        for number in range(3):
            folder.append(sample_event(number))
    names = sorted(path.name for path in tmp_path.iterdir())
    assert [re.sub(r"-\d{8}T\d{6}\.", "-<start>.", name) for name in names] == [
        "kamus-decryptor-7d9f-101-<start>.jsonl", "kamus-decryptor-7d9f-102-<start>.jsonl",
    ]  # fmt: skip
    for path in tmp_path.iterdir():
        assert verify_public(path, signer.public_key()).ok


def test_a_restarted_container_starts_new_chains_and_leaves_the_old_ones_checkable(
    tmp_path: Path, key: bytes, signer: Ed25519PrivateKey, sample_event: SampleEvent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # Same pod name, same pid: the old chain, deleted or cut while the container was down, must
    # not be taken for the new one (red team: the cluster witness then forgot it).
    monkeypatch.setenv("HOSTNAME", "kamus-decryptor-7d9f")
    monkeypatch.setattr("kamus_decryptor.auditfile.os.getpid", lambda: 7)
    stamps = iter(datetime(2026, 12, 6, 10, 0, second, tzinfo=UTC) for second in (0, 12, 30))
    options: dict[str, Any] = {"fsync": False, "signer": signer, "checkpoint_records": 2,
                               "clock": lambda: next(stamps)}  # fmt: skip
    old = AuditDirectory(tmp_path, key, **options).append(sample_event(1)).chain
    first = AuditDirectory(tmp_path, key, **options).append(sample_event(2)).chain
    (tmp_path / first).unlink()
    second = AuditDirectory(tmp_path, key, **options).append(sample_event(3)).chain
    assert len({old, first, second}) == 3
    assert second == "kamus-decryptor-7d9f-7-20261206T100030.jsonl"
    assert verify_public(tmp_path / old, signer.public_key()).ok


def test_kamus_audit_verifies_a_folder_with_the_public_key(
    tmp_path: Path, key: bytes, sample_event: SampleEvent, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "signing.key"
    assert audit_main(["signing-key", "new", str(key_file)], {}) == ExitCode.OK
    public = capsys.readouterr().out.strip()
    (tmp_path / "signing.pub").write_text(public + "\n")
    assert key_file.stat().st_mode & 0o777 == 0o600
    private = Ed25519PrivateKey.from_private_bytes(
        __import__("base64").b64decode(key_file.read_text())
    )
    assert public_text(private.public_key()) == public
    chains = tmp_path / "chains"
    chains.mkdir()
    write(chains / "pod-a-1.jsonl", key, private, 4, sample_event)
    write(chains / "pod-b-1.jsonl", key, private, 2, sample_event)

    argv = ["verify", str(chains), "--public-key", str(tmp_path / "signing.pub")]
    assert audit_main(argv, {}) == ExitCode.OK
    out = capsys.readouterr().out
    assert "pod-a-1.jsonl: OK: 6 records, 2 signed checkpoint(s), origin kamus-decryptor; 1" in out
    assert "pod-b-1.jsonl: OK: 3 records, 1 signed checkpoint(s), origin kamus-decryptor; 2" in out

    tampered = chains / "pod-a-1.jsonl"
    tampered.write_text(tampered.read_text().replace("req-1", "req-9"))
    assert audit_main(argv, {}) == ExitCode.TAMPERED
    assert "pod-a-1.jsonl: TAMPERED: line 2: edited" in capsys.readouterr().out


def test_a_signing_key_sealed_by_the_provider_keeps_no_seed_in_the_clear(
    signer: Ed25519PrivateKey,
) -> None:
    provider = LocalKeyringProvider(Keyring.generate())
    sealed = seal_private(signer, provider)
    seed = signer.private_bytes_raw()
    for form in (
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
        seed.hex(),
    ):
        assert form not in sealed
    assert signing_key(sealed, provider).private_bytes_raw() == seed
    # The plain form still works: base64 of the seed.
    assert signing_key(base64.b64encode(seed).decode(), provider).private_bytes_raw() == seed


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s[:-4] + ("BBBB" if s.endswith("AAAA") else "AAAA"),
        lambda s: s.replace("kamus-audit-signing-key:v1:", "kamus-audit-signing-key:v1:f", 1),
        lambda s: s.replace(":local:", ":vault:", 1),
        lambda s: s.replace("kamus-audit-signing-key:v1:", "kamus-audit-signing-key:v1:é", 1),
        lambda s: "kamus-audit-signing-key:v1:",
    ],
    ids=["body", "key-id", "provider", "non-ascii-key-id", "truncated"],
)
def test_an_edited_or_foreign_sealed_signing_key_is_a_configuration_error(
    signer: Ed25519PrivateKey, edit: Callable[[str], str]
) -> None:
    provider = LocalKeyringProvider(Keyring.generate())
    with pytest.raises(ConfigurationError):
        signing_key(edit(seal_private(signer, provider)), provider)


def test_no_decrypt_request_opens_a_sealed_signing_key(signer: Ed25519PrivateKey) -> None:
    # Even a pod running as the reserved scope cannot pass the sealed key off as a ciphertext:
    # its associated data is not a ciphertext's.
    provider = LocalKeyringProvider(Keyring.generate())
    sealed = seal_private(signer, provider)
    _, _, body = sealed.removeprefix("kamus-audit-signing-key:v1:").split(":", 2)
    key = provider.current_key_id(SIGNING_SCOPE)
    text = f"kamus:v1:local:{SIGNING_SCOPE.namespace}:{SIGNING_SCOPE.service_account}:{key}:{body}"
    with pytest.raises(InvalidCiphertextError):
        Sealer(provider).open(text, SIGNING_SCOPE)


class _FlakyKms(LocalKeyringProvider):
    """A provider that does not answer its first ``failures`` unwraps."""

    def __init__(self, keyring: Keyring, failures: int) -> None:
        super().__init__(keyring)
        self.failures = failures

    def recover_data_key(self, *args: Any, **kwargs: Any) -> bytes:
        if self.failures:
            self.failures -= 1
            raise UnavailableError("the KMS did not answer")
        return super().recover_data_key(*args, **kwargs)


@pytest.mark.parametrize(("failures", "starts"), [(0, True), (3, True), (4, False)])
def test_a_kms_blip_at_start_is_waited_out_then_the_decryptor_refuses_to_start(
    signer: Ed25519PrivateKey, failures: int, starts: bool
) -> None:
    keyring = Keyring.generate()
    sealed = seal_private(signer, LocalKeyringProvider(keyring))
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        audit_signing_key=sealed, audit_dir=Path("/nonexistent"))  # fmt: skip
    waits: list[float] = []
    provider = _FlakyKms(keyring, failures)
    if starts:
        opened = _signer(settings, provider, sleep=waits.append)
        assert opened is not None
        assert opened.private_bytes_raw() == signer.private_bytes_raw()
    else:
        with pytest.raises(SystemExit):
            _signer(settings, provider, sleep=waits.append)
    assert waits == list(SIGNER_RETRY_WAITS[:failures])
