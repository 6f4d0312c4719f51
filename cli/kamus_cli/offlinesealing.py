"""Offline encryption with a cluster's public sealing key, and the ``sealing-key`` command.

``kamus-cli sealing-key -u URL -o cluster.pub`` saves the encryptor's public sealing key and prints
its fingerprint (compare it out of band, or pin it with ``--expect-fingerprint``).
``kamus-cli encrypt --sealing-key cluster.pub ...`` (and ``seal``) then encrypts with no network
call; ``--sealing-key`` given several times makes one ciphertext that opens in each of those
clusters, for the same namespace and service account, and nowhere else.
"""

from __future__ import annotations

import argparse
import hmac
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from kamus_cli.connection import add_connection_arguments, checked_url, open_client
from kamus_cli.destinations import add_output_arguments, check_output, emit
from kamus_client import environment
from kamus_client.arguments import paragraph
from kamus_client.errors import InputError
from kamus_kms import offline
from kamus_kms.errors import ConfigurationError, KamusError
from kamus_kms.scope import Scope

Encrypter = Callable[[str, str, str], str]  # (secret, namespace, service account) -> ciphertext
_FINGERPRINT = re.compile(r"[0-9a-f]{2}(:?[0-9a-f]{2}){31}")


def expected_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 hex digits (colons between bytes allowed), lowercased.

    Empty or malformed text is an error, never "no check": an unset shell variable
    (``--expect-fingerprint "$FP"``) must not save whatever key the server sent.
    """
    digits = text.strip().lower()
    if not _FINGERPRINT.fullmatch(digits):
        raise argparse.ArgumentTypeError(
            "expected a SHA-256 fingerprint: 64 hex digits, colons between bytes allowed"
        )
    return digits.replace(":", "")


def add_sealing_key_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--sealing-key FILE`` (repeatable) to an encrypting command."""
    parser.add_argument(
        "--sealing-key",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="encrypt offline with this cluster's public sealing key (kamus-cli sealing-key);"
        " repeat for a ciphertext that opens in each of those clusters. No URL is used",
    )


def read_sealing_keys(paths: list[Path]) -> list[offline.SealingPublicKey]:
    """The public sealing keys in ``paths``; InputError names a bad file."""
    keys = []
    for path in paths:
        try:
            keys.append(offline.SealingPublicKey.parse(path.read_text(encoding="ascii")))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the sealing key {path}") from exc
        except ConfigurationError as exc:
            raise InputError(f"{path}: {exc}") from exc
    return keys


def offline_encrypter(keys: list[offline.SealingPublicKey]) -> Encrypter:
    """Encrypt with ``keys``, no network call."""

    def encrypt(secret: str, namespace: str, service_account: str) -> str:
        try:
            return offline.seal(secret.encode("utf-8"), Scope(namespace, service_account), keys)
        except KamusError as exc:  # an invalid namespace or service account, a size limit
            raise InputError(str(exc)) from exc

    return encrypt


@contextmanager
def encrypter(args: argparse.Namespace, *, sends: str, url_env: str) -> Iterator[Encrypter]:
    """Offline with ``--sealing-key``, else through the encryptor of ``-u``."""
    if args.sealing_key:
        yield offline_encrypter(read_sealing_keys(args.sealing_key))
        return
    url = checked_url(args, sends=sends, url_env=url_env)
    with open_client(args, url) as client:

        def encrypt(secret: str, namespace: str, service_account: str) -> str:
            return client.encrypt(secret, namespace=namespace, service_account=service_account)

        yield encrypt


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add the ``sealing-key`` command."""
    parser = commands.add_parser(
        "sealing-key",
        help="save a cluster's public sealing key, for offline encryption",
        description=paragraph(
            "Fetch the encryptor's public sealing key and save it (one line) for"
            " `kamus-cli encrypt --sealing-key FILE`, which then needs no network. The key's"
            " SHA-256 fingerprint goes to standard error: compare it with your cluster"
            " operator's, or pass --expect-fingerprint."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(parser, environ, url_env=environment.URL, service="encryptor")
    parser.add_argument(
        "--expect-fingerprint",
        metavar="HEX",
        type=expected_fingerprint,
        help="refuse (exit 8) a key whose SHA-256 fingerprint is not this one (64 hex digits;"
        " an empty or malformed value is a usage error)",
    )
    add_output_arguments(parser, "the key")
    parser.set_defaults(run=_run_sealing_key, parser=parser)


def _run_sealing_key(args: argparse.Namespace) -> None:
    from kamus_client.errors import UnexpectedResponseError  # noqa: PLC0415 - this command only

    # Plain http is refused too: someone on the path could hand over a key of their own.
    url = checked_url(args, sends="the sealing key request", url_env=environment.URL)
    check_output(args)
    with open_client(args, url) as client:
        text = client.sealing_key()
    try:
        key = offline.SealingPublicKey.parse(text)
    except ConfigurationError as exc:
        raise UnexpectedResponseError(f"the encryptor's sealing key is unusable: {exc}") from exc
    expected: str | None = args.expect_fingerprint
    if expected is not None and not hmac.compare_digest(expected, key.fingerprint):
        raise UnexpectedResponseError(
            f"the encryptor's sealing key has the fingerprint {key.fingerprint}, not the"
            " expected one: do not seal with it"
        )
    emit(args, key.text())
    cluster = f" of cluster {key.cluster!r}" if key.cluster else ""
    print(
        f"kamus-cli: sealing key {key.key_id}{cluster} ({key.kem}),"
        f" SHA-256 fingerprint {key.fingerprint}",
        file=sys.stderr,
    )
