from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode
from kamus_kms.keyring import Keyring, KeyState


def _states(path: Path) -> list[tuple[str, KeyState]]:
    return [(v.id, v.state) for v in Keyring.load(path).versions]


def test_new_rotate_retire_walks_the_key_lifecycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keyring.json"
    assert main(["keyring", "new", str(path)], {}) == ExitCode.OK
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["keyring", "rotate", str(path)], {}) == ExitCode.OK
    assert _states(path) == [("k2", KeyState.ACTIVE), ("k1", KeyState.DECRYPT_ONLY)]
    assert main(["keyring", "retire", str(path), "k1"], {}) == ExitCode.OK
    assert _states(path) == [("k2", KeyState.ACTIVE), ("k1", KeyState.RETIRED)]
    assert main(["keyring", "show", str(path)], {}) == ExitCode.OK
    printed = capsys.readouterr().out
    assert "k2\tactive" in printed
    for version in Keyring.load(path).versions:
        assert base64.b64encode(version.secret).decode() not in printed


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["keyring", "new", "{existing}"], ExitCode.OUTPUT),
        (["keyring", "retire", "{existing}", "k1"], ExitCode.INPUT),
        (["keyring", "retire", "{existing}", "nope"], ExitCode.INPUT),
        (["keyring", "rotate", "{existing}", "--id", "k1"], ExitCode.INPUT),
        (["keyring", "show", "{missing}"], ExitCode.INPUT),
        (["keyring", "new", "{missing}", "--id", "Bad Id"], ExitCode.INPUT),
    ],
)
def test_mistakes_are_refused_with_a_clear_exit_code_and_change_nothing(
    tmp_path: Path, argv: list[str], code: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "keyring.json"
    Keyring.generate().save(existing)
    before = existing.read_bytes()
    paths = {"existing": str(existing), "missing": str(tmp_path / "missing.json")}
    assert main([arg.format(**paths) for arg in argv], {}) == code
    assert existing.read_bytes() == before
    assert "error:" in capsys.readouterr().err
