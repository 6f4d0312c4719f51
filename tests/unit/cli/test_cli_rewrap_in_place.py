"""kamus-cli rewrap --in-place: the selected ciphertexts of files replaced, nothing else touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from canned_server import CannedServer, Recorded, Reply, Responder, error_reply

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer

OLD_KEYRING = Keyring.generate("k1")
NEW_KEYRING = OLD_KEYRING.rotate("k2")
OLD, NEW = Sealer(LocalKeyringProvider(OLD_KEYRING)), Sealer(LocalKeyringProvider(NEW_KEYRING))


def rewrapped(recorded: Recorded) -> Reply:
    """What the decryptor's rewrap answers: the same secret under k2, for the same scope."""
    opened = NEW.open(recorded.body["data"])
    return Reply(200, NEW.seal(opened.plaintext, opened.ciphertext.scope))


def args(decryptor: CannedServer, token: Path, *extra: str) -> list[str]:
    return ["rewrap", "-u", decryptor.url, "--allow-insecure-url", "--token-file", str(token),
            *extra]  # fmt: skip


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("header.payload.signature")
    return path


def test_only_the_selected_ciphertexts_change_and_the_rest_stays_byte_for_byte(
    decryptor: CannedServer, token: Path, tmp_path: Path
) -> None:
    decryptor.otherwise = rewrapped
    api, worker = Scope("team-a", "api"), Scope("team-b", "worker")
    old_api, old_worker = OLD.seal(b"one", api), OLD.seal(b"two", worker)
    current = NEW.seal(b"three", api)
    values = tmp_path / "values.yaml"
    original = (f"# keep this comment\t\napp:\n  db: {old_api}   # trailing\n"
                f"  current: {current}\nworker:\n  token: \"{old_worker}\"\n")  # fmt: skip
    values.write_text(original)
    values.chmod(0o640)

    assert main(args(decryptor, token, "--in-place", str(values), "--key", "k1"), {}) == 0

    text = values.read_text()
    found = [Ciphertext.parse(word.strip('"')) for word in text.split()
             if word.strip('"').startswith("kamus:v1:")]  # fmt: skip
    new = {c.scope: c.encode() for c in found if c.encode() != current}
    assert {c.key_id for c in found} == {"k2"}
    # Byte for byte the same file, but for the two texts under k1 (the one under k2 is kept).
    assert text == original.replace(old_api, new[api]).replace(old_worker, new[worker])
    assert NEW.open(new[api]).plaintext == b"one"
    assert NEW.open(new[worker]).plaintext == b"two"
    assert values.stat().st_mode & 0o777 == 0o640
    assert [r.headers["Authorization"] for r in decryptor.requests] == [
        "Bearer header.payload.signature"
    ] * 2


def test_a_failure_leaves_that_file_unchanged_and_the_others_done(
    decryptor: CannedServer, token: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Scope("team-a", "api")
    broken, fine = tmp_path / "broken.env", tmp_path / "fine.env"
    broken.write_text(f"A={OLD.seal(b'a', api)}\nB={OLD.seal(b'b', api)}\n")
    fine.write_text(f"C={OLD.seal(b'c', api)}\n")
    before = broken.read_text()
    decryptor.queue(rewrapped, error_reply(503, "unavailable", "KMS down"))
    decryptor.otherwise = rewrapped

    argv = args(decryptor, token, "--in-place", str(broken), str(fine), "--all")
    assert main(argv, {}) == ExitCode.UNAVAILABLE

    assert broken.read_text() == before
    assert "k2:" in fine.read_text()
    err = capsys.readouterr().err
    assert f"{broken}: not changed" in err
    assert f"{fine}: 1 ciphertext(s) rewrapped" in err


def test_nothing_selected_is_an_input_error(
    decryptor: CannedServer, token: Path, tmp_path: Path
) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    assert main(args(decryptor, token, "--in-place", str(target)), {}) == ExitCode.INPUT


def _hostile(answer: str) -> Responder:
    """A decryptor that rewraps, then bends its answer with ``answer`` (``{new}`` is the text)."""

    def reply(recorded: Recorded) -> Reply:
        new = rewrapped(recorded).body
        other = NEW.seal(b"other", Scope("team-z", "thief"))
        return Reply(200, answer.format(new=new, other=other))

    return reply


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param('{new}", injected: "yes', id="quote-ends-the-string-and-adds-a-key"),
        pytest.param("{new} #comment", id="space-and-comment"),
        pytest.param("{new}\rinjected: yes", id="carriage-return"),
        pytest.param("{new}-v2", id="trailing-text-after-the-body"),
        pytest.param("{other}", id="a-well-formed-ciphertext-of-another-scope"),
        pytest.param("kamus:v1:local:team-a:api:k2:AAAA", id="too-short-to-be-a-ciphertext"),
        pytest.param("kamus:C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g==", id="legacy-form"),
    ],
)
def test_an_answer_that_is_not_a_ciphertext_of_the_same_scope_leaves_the_file_unchanged(
    decryptor: CannedServer, token: Path, tmp_path: Path, answer: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    decryptor.otherwise = _hostile(answer)
    values = tmp_path / "values.yaml"
    values.write_text(f'app:\n  db: "{OLD.seal(b"one", Scope("team-a", "api"))}"\n')
    before = values.read_bytes()

    argv = args(decryptor, token, "--in-place", str(values), "--all")
    assert main(argv, {}) == ExitCode.BAD_RESPONSE

    assert values.read_bytes() == before
    assert f"{values}: not changed" in capsys.readouterr().err


def test_a_symbolic_link_is_written_through_to_its_target_and_stays_a_link(
    decryptor: CannedServer, token: Path, tmp_path: Path
) -> None:
    decryptor.otherwise = rewrapped
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "values.yaml"
    target.write_text(f"db: {OLD.seal(b'one', Scope('team-a', 'api'))}\n")
    target.chmod(0o640)
    link = tmp_path / "values.yaml"
    link.symlink_to(Path("shared") / "values.yaml")

    assert main(args(decryptor, token, "--in-place", str(link), "--key", "k1"), {}) == 0

    assert link.is_symlink()
    assert ":k2:" in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_hard_linked_file_is_refused_and_no_name_changes(
    decryptor: CannedServer, token: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decryptor.otherwise = rewrapped
    first = tmp_path / "values.yaml"
    first.write_text(f"db: {OLD.seal(b'one', Scope('team-a', 'api'))}\n")
    second = tmp_path / "copy.yaml"
    second.hardlink_to(first)
    before = first.read_bytes()

    assert main(args(decryptor, token, "--in-place", str(first), "--all"), {}) == ExitCode.INPUT

    assert first.read_bytes() == second.read_bytes() == before
    assert first.stat().st_ino == second.stat().st_ino
    assert "hard links" in capsys.readouterr().err
    assert decryptor.requests == []
