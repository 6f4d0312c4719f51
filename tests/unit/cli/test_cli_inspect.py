"""kamus-cli inspect: the header of a ciphertext, read without any key or server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.scope import Scope

# The first committed vector of tests/vectors/v1.json: "hello" for team-a/app under k1.
VECTOR = (
    "kamus:v1:local:team-a:app:k1:AAB-R68Vjp21T8XkkClqScmXVAZsItjab29FYivBPfLItxgfd5WUF8NV7hjIDclJ0"
    "9vsRPKIsA9_1wyhjZw"
)
# Kamus's own published legacy vector (AES-256-CBC, base64(iv):base64(ciphertext)).
LEGACY = "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g=="


def test_v1_ciphertext_shows_version_provider_scope_key_id_and_lengths(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", VECTOR], {}) == ExitCode.OK

    assert capsys.readouterr().out == (
        "format:           kamus v1\n"
        "provider:         local\n"
        "namespace:        team-a\n"
        "service account:  app\n"
        "key id:           k1\n"
        "wrapped key:      0 bytes\n"
        "body:             62 bytes\n"
        "padded plaintext: 32 bytes\n"
    )


def test_envelope_ciphertext_in_json_shows_the_wrapped_key_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = Ciphertext(
        "gcp", Scope("team-b", "api.v2"), "projects/p/keys/k/1", b"w" * 113, b"n" * 12, b"s" * 48
    ).encode()
    path = tmp_path / "secret.kamus"
    path.write_text(text + "\n")

    assert main(["inspect", "-f", str(path), "--output-format", "json"], {}) == ExitCode.OK

    assert json.loads(capsys.readouterr().out) == {
        "format": "kamus",
        "version": 1,
        "provider": "gcp",
        "namespace": "team-b",
        "service_account": "api.v2",
        "key_id": "projects/p/keys/k/1",
        "wrapped_key_bytes": 113,
        "body_bytes": 2 + 113 + 12 + 48,
        "padded_plaintext_bytes": 32,
    }


def test_legacy_kamus_ciphertext_is_recognised_and_said_so(
    stdin: Callable[[bytes], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(LEGACY.encode() + b"\n")

    assert main(["inspect"], {}) == ExitCode.OK

    out = capsys.readouterr().out
    assert "legacy Kamus (base64(iv):base64(ciphertext))" in out
    assert "AES-256-CBC" in out
    assert "rewrap" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("hello", "not a Kamus ciphertext", id="plain-text"),
        pytest.param("YWJj:ZGVm", "not a Kamus ciphertext", id="base64-pair-of-wrong-sizes"),
        pytest.param(VECTOR[:-6], "malformed", id="truncated-v1"),
        pytest.param(VECTOR.replace(":team-a:", ":Team_A:"), "malformed", id="bad-namespace"),
    ],
)
def test_text_that_is_not_a_ciphertext_is_an_input_error(
    capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    assert main(["inspect", text], {}) == ExitCode.INPUT
    assert problem in capsys.readouterr().err
