"""The connection flags every kamus-cli command that talks to a Kamus service shares.

``-u/--kamus-url``, ``--allow-insecure-url``, ``--cert-fingerprint``, ``--ca-bundle`` and
``--timeout``, turned into a :class:`~kamus_client.api.KamusClient` after the checks that must
happen before anything is sent.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from kamus_client import environment
from kamus_client.api import KamusClient, is_insecure, parse_base_url
from kamus_client.arguments import positive_seconds
from kamus_client.errors import InputError
from kamus_client.pinning import is_sha1, normalize_fingerprint
from kamus_client.version import user_agent

DEFAULT_TIMEOUT = 10.0


def add_connection_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], *, url_env: str, service: str
) -> None:
    """Add the flags that reach ``service`` (the encryptor or the decryptor)."""
    parser.add_argument(
        "-u",
        "--kamus-url",
        default=environment.value(url_env, environ),
        metavar="URL",
        help=f"{service} base URL (default: ${url_env})",
    )
    parser.add_argument(
        "--allow-insecure-url",
        action="store_true",
        help="allow a plain http:// URL (secrets and tokens then travel in clear text)",
    )
    parser.add_argument(
        "--cert-fingerprint",
        metavar="HEX",
        help="accept only the server certificate with this SHA-256 fingerprint (hex, colons"
        " ok); replaces CA validation. Kamus's SHA-1 form is accepted with a warning",
    )
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        default=_path(environment.value(environment.CA_BUNDLE, environ)),
        metavar="FILE",
        help="PEM file of the CAs to trust instead of the system's"
        f" (default: ${environment.CA_BUNDLE})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to wait for the {service} (default: {DEFAULT_TIMEOUT:g})",
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def checked_url(args: argparse.Namespace, *, sends: str, url_env: str) -> str:
    """The validated base URL; refuses plain http unless allowed. ``sends``: what travels."""
    if not args.kamus_url:
        # A configuration problem (exit 3), as in kamus-init: the URL may come from the
        # environment, so its absence is not a mistyped command line.
        raise InputError(f"the Kamus URL is required: pass -u/--kamus-url or set {url_env}")
    url = parse_base_url(args.kamus_url)
    if is_insecure(url) and not args.allow_insecure_url:
        raise InputError(
            f"refusing to send {sends} over plain http to {url};"
            " use https:// or pass --allow-insecure-url"
        )
    return url


def open_client(args: argparse.Namespace, url: str) -> KamusClient:
    """A client for ``url`` with the pin or CA bundle of ``args``; warns about a SHA-1 pin."""
    if args.cert_fingerprint is not None and is_sha1(normalize_fingerprint(args.cert_fingerprint)):
        print(
            "kamus-cli: warning: --cert-fingerprint is a SHA-1 fingerprint (the original Kamus"
            " form); SHA-1 is weak, prefer the SHA-256 one"
            " (openssl x509 -noout -fingerprint -sha256 -in cert.pem)",
            file=sys.stderr,
        )
    return KamusClient(
        url,
        user_agent=user_agent("kamus-cli"),
        timeout=args.timeout,
        cert_fingerprint=args.cert_fingerprint,
        ca_bundle=args.ca_bundle,
    )
