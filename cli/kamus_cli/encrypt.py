"""The ``encrypt`` command: send one secret to the encryptor and print its ciphertext."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Mapping
from pathlib import Path

from kamus_cli.arguments import positive_seconds
from kamus_cli.client import KamusClient, is_insecure, parse_base_url, user_agent
from kamus_cli.errors import InputError, OutputError

DEFAULT_TIMEOUT = 10.0


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add the ``encrypt`` command and its Kamus-compatible flags to ``commands``."""
    parser = commands.add_parser(
        "encrypt",
        help="encrypt a secret for a namespace and service account",
        description=(
            "Encrypt a secret for one namespace and service account. The secret comes from -s,"
            " -f or standard input (one trailing newline stripped); only the ciphertext is"
            " printed on standard output."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-s", "--secret", help="the secret (visible in the process list)")
    source.add_argument(
        "-f", "--secret-file", type=Path, help="file holding the secret, used byte for byte"
    )
    parser.add_argument("-a", "--service-account", required=True, help="target service account")
    parser.add_argument("-n", "--namespace", required=True, help="target namespace")
    parser.add_argument(
        "-u",
        "--kamus-url",
        default=environ.get("KAMUS_URL"),
        help="encryptor URL (default: $KAMUS_URL)",
    )
    parser.add_argument(
        "--allow-insecure-url", action="store_true", help="allow a plain http:// Kamus URL"
    )
    parser.add_argument(
        "--cert-fingerprint",
        help="accept only the server certificate with this SHA-256 fingerprint (hex, colons ok)",
    )
    parser.add_argument("-o", "--output", type=Path, help="write the ciphertext to this file")
    parser.add_argument(
        "-O", "--overwrite", action="store_true", help="overwrite the --output file if it exists"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the encryptor (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> None:
    """Encrypt the secret and write the ciphertext; raises a ClientError on failure."""
    if not args.kamus_url:
        args.parser.error("the Kamus URL is required: pass -u/--kamus-url or set KAMUS_URL")
    url = parse_base_url(args.kamus_url)
    if is_insecure(url) and not args.allow_insecure_url:
        raise InputError(
            f"refusing to send a secret over plain http to {url};"
            " use https:// or pass --allow-insecure-url"
        )
    if args.output is not None and args.output.exists() and not args.overwrite:
        raise InputError(f"{args.output} already exists; pass -O/--overwrite to replace it")
    secret = read_secret(args.secret, args.secret_file)
    with KamusClient(
        url,
        user_agent=user_agent("kamus-cli"),
        timeout=args.timeout,
        cert_fingerprint=args.cert_fingerprint,
    ) as client:
        ciphertext = client.encrypt(
            secret, namespace=args.namespace, service_account=args.service_account
        )
    if args.output is None:
        sys.stdout.write(ciphertext + "\n")
        sys.stdout.flush()
    else:
        write_ciphertext(args.output, ciphertext, overwrite=args.overwrite)
    print(
        f"kamus-cli: encrypted for service account {args.service_account!r}"
        f" in namespace {args.namespace!r}",
        file=sys.stderr,
    )


def read_secret(secret: str | None, secret_file: Path | None) -> str:
    """Return the secret from the flag, the file (as-is) or stdin (one trailing newline dropped)."""
    if secret is not None:
        # Arguments that are not UTF-8 reach Python as lone surrogates (surrogateescape).
        try:
            raw = secret.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise InputError("the -s/--secret value is not valid UTF-8 text") from exc
        return _checked(raw, "the -s/--secret value")
    if secret_file is not None:
        try:
            raw = secret_file.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {secret_file}: {exc.strerror}") from exc
        return _checked(raw, str(secret_file))
    if sys.stdin.isatty():
        # Interactive: do not echo the secret on the terminal.
        return _checked(getpass.getpass("Secret: ").encode("utf-8"), "the secret")
    raw = sys.stdin.buffer.read()
    # `echo secret | kamus-cli encrypt …` adds exactly one newline that is not part of the secret.
    return _checked(raw.removesuffix(b"\n"), "standard input")


def write_ciphertext(path: Path, ciphertext: str, *, overwrite: bool) -> None:
    """Write ``ciphertext`` (no trailing newline, as Kamus did) to ``path``."""
    # "x" re-checks at open time, so a file created since the early check is not clobbered.
    mode = "w" if overwrite else "x"
    try:
        with path.open(mode, encoding="ascii") as handle:
            handle.write(ciphertext)
    except FileExistsError as exc:
        raise InputError(f"{path} already exists; pass -O/--overwrite to replace it") from exc
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc


def _checked(raw: bytes, origin: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{origin} is not valid UTF-8 text") from exc
    if not text:
        raise InputError(f"{origin} is empty; there is nothing to encrypt")
    return text
