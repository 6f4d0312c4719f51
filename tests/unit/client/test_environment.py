"""The clients' environment: one specification, the services' *_FILE rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from kamus_cli.auditfiles import load_key
from kamus_client import environment
from kamus_client.errors import InputError

KEY = "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleS0xMjM0"  # 36 bytes, base64


def test_unset_and_blank_values_are_none() -> None:
    assert environment.value(environment.URL, {}) is None
    assert environment.value(environment.URL, {environment.URL: "  "}) is None
    assert environment.value(environment.URL, {environment.URL: " http://k "}) == "http://k"


def test_a_secret_comes_from_its_file_without_the_trailing_line_break(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(f"{KEY}\n")
    environ = {"KAMUS_AUDIT_KEY_FILE": str(tmp_path / "key")}
    assert environment.value(environment.AUDIT_KEY, environ) == KEY
    assert len(load_key(None, environ)) == 36


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY)
    environ = {"KAMUS_AUDIT_KEY": KEY, "KAMUS_AUDIT_KEY_FILE": str(tmp_path / "key")}
    with pytest.raises(InputError, match="set KAMUS_AUDIT_KEY or KAMUS_AUDIT_KEY_FILE, not both"):
        environment.value(environment.AUDIT_KEY, environ)


def test_an_unreadable_or_binary_file_is_named_without_its_content(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="KAMUS_AUDIT_KEY_FILE: cannot read"):
        environment.value(environment.AUDIT_KEY, {"KAMUS_AUDIT_KEY_FILE": str(tmp_path / "no")})
    (tmp_path / "binary").write_bytes(b"\xff\xfesecret")
    with pytest.raises(InputError, match="is not UTF-8 text") as caught:
        environment.value(environment.AUDIT_KEY, {"KAMUS_AUDIT_KEY_FILE": str(tmp_path / "binary")})
    assert "secret" not in str(caught.value)


def test_only_secret_variables_have_a_file_form() -> None:
    assert "KAMUS_AUDIT_KEY_FILE" in environment.NAMES
    assert "KAMUS_URL_FILE" not in environment.NAMES
    # A _FILE form of a non-secret is not read: the value stays unset.
    assert environment.value(environment.URL, {"KAMUS_URL_FILE": "/etc/passwd"}) is None
