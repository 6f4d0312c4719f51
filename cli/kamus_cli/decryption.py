"""The ``rewrap`` and ``decrypt`` commands: calls to the decryptor with a service-account token.

Both present a token of the ciphertext's own service account: from ``--token-file``, or minted
through the kubeconfig (:mod:`kamus_cli.tokens`) for the scope in the ciphertext's header (or
``--namespace`` / ``--service-account``, needed for a legacy ciphertext). ``rewrap`` never
shows a plaintext; ``decrypt`` does, and warns that it is meant for debugging.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from kamus_cli import rewrapfiles
from kamus_cli.connection import add_connection_arguments, checked_url, open_client
from kamus_cli.destinations import add_output_arguments, check_output, emit
from kamus_cli.inspection import read_ciphertext
from kamus_cli.tokens import AUDIENCE, kubeconfig_path, mint_token
from kamus_client import environment
from kamus_client.arguments import paragraph
from kamus_client.errors import InputError
from kamus_client.tokenfile import read_token_file
from kamus_kms.ciphertext import PREFIX, Ciphertext
from kamus_kms.errors import InvalidCiphertextError

URL_ENV = environment.DECRYPTOR_URL

_CREDENTIALS_EPILOG = """\
token:
  --token-file FILE sends the token in FILE. Without it, a token of the ciphertext's namespace
  and service account is minted with the TokenRequest API (audience kamus, 600 s) through the
  kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config); that needs permission to create
  serviceaccounts/token for the service account.
"""


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add the ``rewrap`` and ``decrypt`` commands to ``commands``."""
    rewrap = commands.add_parser(
        "rewrap",
        help="re-seal a ciphertext under the active key (plaintext never leaves the decryptor)",
        description=paragraph(
            "Send a ciphertext to the decryptor's rewrap API and print the same secret sealed"
            " under the active key, for the same scope. Use it after a key rotation, and to turn"
            " legacy Kamus ciphertexts into v1. The plaintext is never shown."
        ),
        epilog=_CREDENTIALS_EPILOG
        + """
examples:
  kamus-cli rewrap -f db-password.kamus -o db-password.kamus -O -u https://kamus-decryptor
  kamus-cli rewrap "$(cat old.kamus)" --token-file token -u https://kamus-decryptor
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(rewrap, environ, "the new ciphertext")
    rewrapfiles.add_arguments(rewrap)
    rewrap.set_defaults(run=run_rewrap, parser=rewrap, environ=environ)

    decrypt = commands.add_parser(
        "decrypt",
        help="decrypt a ciphertext and print the plaintext (for debugging)",
        description=paragraph(
            "Decrypt one ciphertext with the decryptor and print the plaintext. This is for"
            " debugging: it puts a secret on your terminal. Pods use kamus-init."
        ),
        epilog=_CREDENTIALS_EPILOG
        + """
examples:
  kamus-cli decrypt -f db-password.kamus --token-file token -u http://127.0.0.1:8442 \\
      --allow-insecure-url
  kamus-cli decrypt -f db-password.kamus --kubeconfig ~/.kube/dev -u https://kamus-decryptor
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(decrypt, environ, "the plaintext (file mode 0600)")
    decrypt.set_defaults(run=run_decrypt, parser=decrypt, environ=environ)


def _add_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], output: str
) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("ciphertext", nargs="?", help="the ciphertext (default: standard input)")
    source.add_argument("-f", "--file", type=Path, help="file holding the ciphertext")
    add_connection_arguments(parser, environ, url_env=URL_ENV, service="decryptor")
    tokens = parser.add_argument_group("token")
    tokens.add_argument("--token-file", type=Path, metavar="FILE", help="bearer token to send")
    tokens.add_argument(
        "--kubeconfig", type=Path, metavar="FILE", help="kubeconfig to mint a token with"
    )
    tokens.add_argument("--context", help="kubeconfig context (default: the current one)")
    tokens.add_argument(
        "-n", "--namespace", help="namespace to mint a token for (default: the ciphertext's)"
    )
    tokens.add_argument(
        "-a",
        "--service-account",
        help="service account to mint a token for (default: the ciphertext's)",
    )
    add_output_arguments(parser, output)


def _token(args: argparse.Namespace, ciphertext: str) -> str:
    namespace, service_account = args.namespace, args.service_account
    if ciphertext.startswith(PREFIX):
        try:
            scope = Ciphertext.parse(ciphertext).scope
        except InvalidCiphertextError:
            scope = None
        if scope is not None:
            namespace = namespace or scope.namespace
            service_account = service_account or scope.service_account
    return _token_for(args, namespace, service_account)


def _token_for(args: argparse.Namespace, namespace: str | None, service_account: str | None) -> str:
    if args.token_file is not None:
        if args.kubeconfig is not None or args.context is not None:
            raise InputError("--token-file excludes --kubeconfig and --context")
        return read_token_file(args.token_file)
    if not namespace or not service_account:
        raise InputError(
            "cannot tell whose token to mint: pass --namespace and --service-account (a legacy"
            " ciphertext names no scope), or --token-file"
        )
    print(
        f"kamus-cli: minting a token of {namespace}/{service_account} (audience {AUDIENCE})",
        file=sys.stderr,
    )
    return mint_token(
        kubeconfig_path(args.kubeconfig, args.environ),
        namespace,
        service_account,
        context=args.context,
        timeout=args.timeout,
    )


def run_rewrap(args: argparse.Namespace) -> None:
    """Rewrap the ciphertext and print the new one (or, with --in-place, those in files)."""
    url = checked_url(args, sends="a ciphertext and a token", url_env=URL_ENV)
    if args.in_place:
        if args.ciphertext is not None or args.file is not None or args.output is not None:
            raise InputError("--in-place rewrites files: it takes no ciphertext, -f or -o")
        tokens: dict[tuple[str | None, str | None], str] = {}
        with open_client(args, url) as client:

            def rewrap(text: str, namespace: str | None, service_account: str | None) -> str:
                scope = (namespace or args.namespace, service_account or args.service_account)
                if scope not in tokens:
                    tokens[scope] = _token_for(args, *scope)
                return client.rewrap(text, token=tokens[scope])

            rewrapfiles.rewrap_files(args, rewrap)
        return
    check_output(args)
    ciphertext = read_ciphertext(args.ciphertext, args.file)
    token = _token(args, ciphertext)
    with open_client(args, url) as client:
        rewrapped = client.rewrap(ciphertext, token=token)
    emit(args, rewrapped)
    print("kamus-cli: rewrapped under the decryptor's active key", file=sys.stderr)


def run_decrypt(args: argparse.Namespace) -> None:
    """Decrypt the ciphertext and print the plaintext, with a warning on stderr."""
    url = checked_url(args, sends="a token and receive a plaintext", url_env=URL_ENV)
    check_output(args)
    ciphertext = read_ciphertext(args.ciphertext, args.file)
    print(
        "kamus-cli: warning: decrypt is for debugging; it shows the plaintext of a secret",
        file=sys.stderr,
    )
    token = _token(args, ciphertext)
    with open_client(args, url) as client:
        plaintext = client.decrypt(ciphertext, token=token)
    emit(args, plaintext, private=True)
