"""The ``encrypt`` command: send secrets to the encryptor and print their ciphertexts.

One secret comes from ``-s``, ``-f`` or standard input; many come from a ``.env`` file
(``--env-file``), one ciphertext per key. ``--output-format`` prints them as text, JSON or YAML.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from kamus_cli import kamusflags
from kamus_cli.connection import add_connection_arguments
from kamus_cli.destinations import add_output_arguments, check_output, emit
from kamus_cli.envfile import read_env_file
from kamus_cli.offlinesealing import add_sealing_key_argument, encrypter
from kamus_client import environment
from kamus_client.arguments import paragraph
from kamus_client.errors import InputError

OUTPUT_FORMATS = ("text", "json", "yaml")
URL_ENV = environment.URL

EPILOG = """\
output formats:
  text   the ciphertext on one line; with --env-file, KEY=ciphertext lines (a .env file)
  json   {"data": ciphertext, "namespace": ..., "service-account": ...}, the encryptor's own
         JSON answer; with --env-file, {"KEY": ciphertext, ...}
  yaml   the same as YAML; the --env-file map is what kamus-init --encrypted-file reads

examples:
  echo -n "$DB_PASSWORD" | kamus-cli encrypt -n team-a -a api -u https://kamus.example.com
  kamus-cli encrypt -f tls.key -n team-a -a api -o tls.key.kamus
  kamus-cli encrypt --env-file app.env -n team-a -a api --output-format yaml > secrets.yaml
  kamus-cli encrypt -s x -n team-a -a api --cert-fingerprint 3F:9A:...:C1
  kamus-cli encrypt -f tls.key -n team-a -a api --sealing-key prod-eu.pub --sealing-key prod-us.pub
"""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add the ``encrypt`` command and its Kamus-compatible flags to ``commands``."""
    parser = commands.add_parser(
        "encrypt",
        help="encrypt secrets for a namespace and service account",
        description=paragraph(
            "Encrypt secrets for one namespace and service account with the Kamus encryptor."
            " The secret comes from -s, -f or standard input (one trailing newline stripped),"
            " or many from --env-file; only ciphertexts are printed on standard output."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-s", "--secret", help="the secret (visible in the process list)")
    source.add_argument(
        "-f", "--secret-file", type=Path, help="file holding the secret, used byte for byte"
    )
    source.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="a .env file: every KEY=value is encrypted, one ciphertext per key",
    )
    parser.add_argument("-a", "--service-account", required=True, help="target service account")
    parser.add_argument("-n", "--namespace", required=True, help="target namespace")
    add_connection_arguments(parser, environ, url_env=URL_ENV, service="encryptor")
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="text",
        help="text (default), json or yaml; see below",
    )
    add_output_arguments(parser, "the output (a single text ciphertext without newline)")
    add_sealing_key_argument(parser)
    kamusflags.add_arguments(parser)
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> None:
    """Encrypt the secret(s) and write the ciphertext(s); raises a ClientError on failure."""
    kamusflags.refuse_azure_login(args)
    log = kamusflags.StepLog(args)
    check_output(args)
    log.info("Encryption started...")
    log.info(f"service account: {args.service_account}")
    log.info(f"namespace: {args.namespace}")
    many = args.env_file is not None
    if many:
        secrets = _checked_values(read_env_file(args.env_file), args.env_file)
    else:
        secret = read_secret(args.secret, args.secret_file, encoding=args.secret_file_encoding)
        if args.secret is not None or args.secret_file is not None:
            kamusflags.warn_about_line_break(secret, args)
        secrets = {"": secret}
    with encrypter(args, sends="a secret", url_env=URL_ENV) as encrypt:
        ciphertexts = {
            name: encrypt(secret, args.namespace, args.service_account)
            for name, secret in secrets.items()
        }
    if many:
        text = format_map(ciphertexts, args.output_format)
    else:
        text = format_one(ciphertexts[""], args.namespace, args.service_account, args.output_format)
    log.info(
        f"Successfully encrypted data to {args.service_account} service account in"
        f" {args.namespace} namespace"
    )
    # The single text ciphertext goes to a file without a newline, as Kamus wrote it.
    single_text = not many and args.output_format == "text"
    emit(args, text if args.output is None or single_text else text + "\n")
    print(
        f"kamus-cli: encrypted {len(ciphertexts)} secret(s) for service account"
        f" {args.service_account!r} in namespace {args.namespace!r}",
        file=sys.stderr,
    )


def format_one(ciphertext: str, namespace: str, service_account: str, output_format: str) -> str:
    """One ciphertext as text, or as the encryptor's JSON answer in JSON or YAML."""
    if output_format == "text":
        return ciphertext
    document = {"data": ciphertext, "namespace": namespace, "service-account": service_account}
    return _dump(document, output_format)


def format_map(ciphertexts: Mapping[str, str], output_format: str) -> str:
    """``{name: ciphertext}`` as ``NAME=ciphertext`` lines, JSON or YAML (no final newline)."""
    if output_format == "text":
        # A ciphertext has no character that needs quoting in a .env file or a shell.
        return "\n".join(f"{name}={ciphertext}" for name, ciphertext in ciphertexts.items())
    return _dump(dict(ciphertexts), output_format)


def _dump(document: Mapping[str, str], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(document, indent=2)
    return yaml.safe_dump(dict(document), default_flow_style=False, sort_keys=False).rstrip("\n")


def _checked_values(values: Mapping[str, str], origin: Path) -> dict[str, str]:
    if not values:
        raise InputError(f"{origin} holds no KEY=value; there is nothing to encrypt")
    empty = [key for key, value in values.items() if not value]
    if empty:
        raise InputError(f"{origin}: the value of {', '.join(empty)} is empty")
    return dict(values)


def read_secret(
    secret: str | None, secret_file: Path | None, *, encoding: str | None = None
) -> str:
    """Return the secret from the flag, the file (as-is, in ``encoding``: see
    kamus_cli.kamusflags) or stdin (one trailing newline dropped)."""
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
        if encoding is not None:
            text = kamusflags.decode_secret_file(raw, encoding, str(secret_file))
            if not text:
                raise InputError(f"{secret_file} is empty; there is nothing to encrypt")
            return text
        return _checked(raw, str(secret_file))
    if sys.stdin.isatty():
        # Interactive: do not echo the secret on the terminal.
        return _checked(getpass.getpass("Secret: ").encode("utf-8"), "the secret")
    raw = sys.stdin.buffer.read()
    # `echo secret | kamus-cli encrypt …` adds exactly one newline that is not part of the secret.
    return _checked(raw.removesuffix(b"\n"), "standard input")


def _checked(raw: bytes, origin: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{origin} is not valid UTF-8 text") from exc
    if not text:
        raise InputError(f"{origin} is empty; there is nothing to encrypt")
    return text
