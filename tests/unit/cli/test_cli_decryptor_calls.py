"""kamus-cli rewrap and decrypt against a canned decryptor, with a token file or a minted token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from canned_server import CannedServer, Reply, error_reply

from kamus_cli.main import main
from kamus_client.exitcodes import ExitCode
from kamus_client.version import VERSION
from kamus_dev.authority import TokenAuthority, create_authority_app, serve_in_thread
from kamus_dev.kubeconfig import write_kubeconfig

VECTOR = (
    "kamus:v1:local:team-a:app:k1:AAB-R68Vjp21T8XkkClqScmXVAZsItjab29FYivBPfLItxgfd5WUF8NV7hjIDclJ0"
    "9vsRPKIsA9_1wyhjZw"
)
REWRAPPED = "kamus:v1:local:team-a:app:k2:AABlTiyH14IMvrG1tVA59GN"
LEGACY = "C4gChhspnTa5yVqYmSitrg==:tr0Ke6OGUaUa8KZgMJg14g=="
TOKEN = "eyJ-cli-token-SENTINEL"
PLAINTEXT = "hello-SENTINEL"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file, as kamus-dev token writes one."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def authority() -> TokenAuthority:
    """The development token authority."""
    return TokenAuthority()


@pytest.fixture
def kubeconfig(authority: TokenAuthority, tmp_path: Path) -> Any:
    """A kubeconfig of the authority, served in a thread, with the admin's credentials."""
    path = tmp_path / "kubeconfig"
    with serve_in_thread(create_authority_app(authority)) as url:
        write_kubeconfig(path, url, authority.admin_token)
        yield path


def call(command: str, url: str, *extra: str) -> list[str]:
    return [command, "-u", url, "--allow-insecure-url", *extra]


def claims(authorization: str) -> dict[str, Any]:
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    return jwt.decode(token, options={"verify_signature": False})


def test_rewrap_sends_the_ciphertext_with_the_token_file_and_prints_the_new_one(
    decryptor: CannedServer, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decryptor.queue(Reply(body=REWRAPPED))

    argv = call("rewrap", decryptor.url, VECTOR, "--token-file", str(token_file))
    assert main(argv, {}) == ExitCode.OK

    (request,) = decryptor.requests
    assert request.path == "/api/v1/rewrap"
    assert request.body == {"data": VECTOR}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == f"kamus-cli-{VERSION}"
    out, err = capsys.readouterr()
    assert out == REWRAPPED + "\n"
    assert "SENTINEL" not in err


def test_decrypt_prints_the_plaintext_and_warns_that_it_is_for_debugging(
    decryptor: CannedServer, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decryptor.queue(Reply(body=PLAINTEXT))

    argv = call("decrypt", decryptor.url, VECTOR, "--token-file", str(token_file))
    assert main(argv, {"KAMUS_DECRYPTOR_URL": "http://unused.invalid"}) == ExitCode.OK

    (request,) = decryptor.requests
    assert (request.path, request.body) == ("/api/v1/decrypt", {"data": VECTOR})
    out, err = capsys.readouterr()
    assert out == PLAINTEXT + "\n"
    assert "warning: decrypt is for debugging" in err
    assert "SENTINEL" not in err


def test_decrypt_to_a_file_writes_the_exact_plaintext_with_mode_0600(
    decryptor: CannedServer, token_file: Path, tmp_path: Path
) -> None:
    decryptor.queue(Reply(body=PLAINTEXT + "\n"))
    output = tmp_path / "plain.txt"

    argv = call("decrypt", decryptor.url, "--token-file", str(token_file), "-o", str(output),
                VECTOR)  # fmt: skip
    assert main(argv, {}) == ExitCode.OK

    assert output.read_text() == PLAINTEXT + "\n"
    assert output.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_token_is_minted_through_the_kubeconfig_for_the_ciphertext_scope_with_kamus_audience(
    decryptor: CannedServer,
    kubeconfig: Path,
    authority: TokenAuthority,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    decryptor.queue(Reply(body=REWRAPPED))
    argv = call("rewrap", decryptor.url, VECTOR)
    environ = {"KUBECONFIG": str(kubeconfig)}
    if where == "flag":
        argv += ["--kubeconfig", str(kubeconfig)]
        environ = {"KUBECONFIG": "/nonexistent/kubeconfig"}

    assert main(argv, environ) == ExitCode.OK

    minted = claims(decryptor.requests[0].headers["Authorization"])
    assert minted["aud"] == ["kamus"]
    assert minted["sub"] == "system:serviceaccount:team-a:app"
    assert minted["exp"] - minted["iat"] == 600
    assert authority.tokenrequest_calls == 1
    assert capsys.readouterr().out == REWRAPPED + "\n"


def test_legacy_ciphertext_needs_the_scope_flags_to_mint_a_token(
    decryptor: CannedServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decryptor.queue(Reply(body=REWRAPPED))
    argv = call("rewrap", decryptor.url, LEGACY, "--kubeconfig", str(kubeconfig))

    assert main(argv, {}) == ExitCode.INPUT
    assert "pass --namespace and --service-account" in capsys.readouterr().err
    assert main([*argv, "-n", "team-b", "-a", "worker"], {}) == ExitCode.OK

    assert claims(decryptor.requests[0].headers["Authorization"])["sub"] == (
        "system:serviceaccount:team-b:worker"
    )


def test_minting_for_a_deleted_service_account_is_refused_with_exit_5(
    decryptor: CannedServer,
    kubeconfig: Path,
    authority: TokenAuthority,
    capsys: pytest.CaptureFixture[str],
) -> None:
    authority.delete_service_account("team-a", "app")

    assert main(call("decrypt", decryptor.url, VECTOR, "--kubeconfig", str(kubeconfig)), {}) == 5

    assert decryptor.requests == []
    assert 'serviceaccounts "app" not found [HTTP 404]' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setup", "code", "shown"),
    [
        pytest.param("missing", ExitCode.INPUT, "cannot load the kubeconfig", id="no-kubeconfig"),
        pytest.param("unreachable", ExitCode.UNAVAILABLE, "cannot reach the Kubernetes API",
                     id="api-down"),
    ],
)  # fmt: skip
def test_kubeconfig_problems_map_to_exit_codes(
    decryptor: CannedServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    code: int,
    shown: str,
) -> None:
    path = tmp_path / "kubeconfig"
    if setup == "unreachable":
        write_kubeconfig(path, "http://127.0.0.1:9", "admin")

    assert main(call("decrypt", decryptor.url, VECTOR, "--kubeconfig", str(path)), {}) == code

    assert decryptor.requests == []
    assert shown in capsys.readouterr().err


@pytest.mark.parametrize("command", ["rewrap", "decrypt"])
def test_refusal_of_the_decryptor_exits_5_with_its_code(
    decryptor: CannedServer,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    decryptor.queue(error_reply(403, "scope_mismatch", "the ciphertext is for team-a/app"))

    assert main(call(command, decryptor.url, VECTOR, "--token-file", str(token_file)), {}) == 5

    err = capsys.readouterr().err
    assert "[scope_mismatch, HTTP 403]" in err
    assert "SENTINEL" not in err


def test_rewrap_answer_that_is_not_a_ciphertext_exits_8(
    decryptor: CannedServer, token_file: Path
) -> None:
    decryptor.queue(Reply(body="<html>login</html>"))

    argv = call("rewrap", decryptor.url, VECTOR, "--token-file", str(token_file))
    assert main(argv, {}) == ExitCode.BAD_RESPONSE


@pytest.mark.parametrize("command", ["rewrap", "decrypt"])
def test_plain_http_decryptor_is_refused_before_the_token_is_sent(
    decryptor: CannedServer, token_file: Path, command: str
) -> None:
    argv = [command, "-u", decryptor.url, VECTOR, "--token-file", str(token_file)]

    assert main(argv, {}) == ExitCode.INPUT
    assert decryptor.requests == []
