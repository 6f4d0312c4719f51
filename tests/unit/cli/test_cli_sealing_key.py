"""kamus-cli sealing-key: the expected fingerprint is checked before anything is fetched."""

from __future__ import annotations

import pytest
from canned_server import CannedServer

from kamus_cli.main import main
from kamus_cli.offlinesealing import expected_fingerprint
from kamus_client.exitcodes import ExitCode

FINGERPRINT = "b80bf83728d0d90440b76fa3858b61fa5e3740bea53c590ee314ba7182ecfee1"


def _with_colons(digits: str) -> str:
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


@pytest.mark.parametrize(
    "expected",
    ["", " ", ":", "::", "b80bf837", "zz" * 32, "b8" * 31 + ":b8:", "b8" * 33],
    ids=["empty", "blank", "colon", "colons", "short", "not-hex", "trailing-colon", "long"],
)
def test_an_empty_or_malformed_expected_fingerprint_is_a_usage_error_and_nothing_is_fetched(
    encryptor: CannedServer, capsys: pytest.CaptureFixture[str], expected: str
) -> None:
    argv = ["sealing-key", "-u", encryptor.url, "--allow-insecure-url",
            "--expect-fingerprint", expected]  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main(argv, {})
    assert exited.value.code == ExitCode.USAGE
    assert "--expect-fingerprint" in capsys.readouterr().err
    assert encryptor.requests == []


@pytest.mark.parametrize("written", [FINGERPRINT, FINGERPRINT.upper(), _with_colons(FINGERPRINT)])
def test_an_expected_fingerprint_is_hex_with_optional_colons_in_any_case(written: str) -> None:
    assert expected_fingerprint(f" {written} ") == FINGERPRINT
