"""kamus-cli against the real services: encrypt, inspect, rewrap and decrypt with a minted token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gunicorn_process import Service, base_environment

from kamus_dev.authority import TokenAuthority
from kamus_dev.kubeconfig import write_kubeconfig

SECRET = "integration-secret ✓"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kamus_cli.main", *args],
        capture_output=True,
        text=True,
        env=base_environment(env or {}),
        timeout=60,
        check=False,
    )


def test_encrypt_inspect_rewrap_decrypt_round_trip_with_a_minted_token(
    encryptor: Service,
    decryptor: Service,
    authority: TokenAuthority,
    authority_url: str,
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, authority_url, authority.admin_token)
    insecure = ("--allow-insecure-url",)

    encrypted = cli("encrypt", "-n", "team-a", "-a", "cli-app", "-s", SECRET,
                    "-u", encryptor.url, *insecure)  # fmt: skip
    assert encrypted.returncode == 0, encrypted.stderr
    ciphertext = encrypted.stdout.strip()

    inspected = cli("inspect", ciphertext)
    assert "service account:  cli-app" in inspected.stdout

    rewrapped = cli("rewrap", ciphertext, "-u", decryptor.url, *insecure,
                    env={"KUBECONFIG": str(kubeconfig)})  # fmt: skip
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert rewrapped.stdout.strip().startswith("kamus:v1:local:team-a:cli-app:")
    assert SECRET not in rewrapped.stdout + rewrapped.stderr

    decrypted = cli("decrypt", rewrapped.stdout.strip(), "-u", decryptor.url, *insecure,
                    "--kubeconfig", str(kubeconfig))  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr
    assert decrypted.stdout == SECRET + "\n"
    assert "for debugging" in decrypted.stderr


def test_decrypt_with_a_token_of_another_service_account_is_refused(
    encryptor: Service, decryptor: Service, authority: TokenAuthority, authority_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, authority_url, authority.admin_token)
    encrypted = cli("encrypt", "-n", "team-a", "-a", "cli-app", "-s", SECRET,
                    "-u", encryptor.url, "--allow-insecure-url")  # fmt: skip

    decrypted = cli("decrypt", encrypted.stdout.strip(), "-u", decryptor.url,
                    "--allow-insecure-url", "--kubeconfig", str(kubeconfig),
                    "-n", "team-a", "-a", "other")  # fmt: skip

    assert decrypted.returncode == 5
    assert "scope_mismatch" in decrypted.stderr
    assert SECRET not in decrypted.stdout + decrypted.stderr
