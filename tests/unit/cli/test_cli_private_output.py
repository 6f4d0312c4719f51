from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kamus_cli.audit import main as audit_main
from kamus_cli.destinations import write_file
from kamus_client.errors import InputError


def test_a_plaintext_overwrite_never_keeps_a_readable_mode_or_follows_a_symlink(
    tmp_path: Path,
) -> None:
    existing = tmp_path / "out.txt"
    existing.write_text("old")
    existing.chmod(0o644)
    write_file(existing, "secret", overwrite=True, private=True)
    assert existing.read_text() == "secret"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600

    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_file(link, "secret", overwrite=True, private=True)
    assert target.read_text() == "untouched"
    assert not link.is_symlink()


def test_a_plaintext_is_never_written_over_a_file_without_overwrite(tmp_path: Path) -> None:
    existing = tmp_path / "out.txt"
    existing.write_text("old")
    with pytest.raises(InputError, match="already exists"):
        write_file(existing, "secret", overwrite=False, private=True)
    assert existing.read_text() == "old"


@pytest.mark.parametrize("top", ["0", "-1", "x"])
def test_report_top_must_be_positive(top: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        audit_main(["report", str(tmp_path / "audit.jsonl"), "--top", top], {})
    assert caught.value.code == 2
