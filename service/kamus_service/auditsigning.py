"""Making the decryptor's audit signing key sealed by the cluster's own key provider.

    python -m kamus_service.auditsigning new [--public-key-file FILE] [--service decryptor]
    python -m kamus_service.auditsigning public FILE

Run where the services' settings are (``kubectl exec`` into the encryptor, or a Job with its
environment; ``--service decryptor`` inside the decryptor). ``new`` prints on standard output the
value for ``KAMUS_AUDIT_SIGNING_KEY`` (the chart's ``decryptor.auditFile.signingKey`` Secret): the
Ed25519 key sealed by the provider, so the Secret holds nothing that signs without the KMS, HSM or
keyring. The public key, which auditors verify with (``kamus-audit verify --public-key``), goes to
standard error and, with ``--public-key-file``, to that file. ``public`` prints the public key of
a sealed signing key (the provider opens it). ``kamus-audit signing-key new`` makes an unsealed key
instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from kamus_kms.auditsign import key_id, public_text, seal_private, signing_key
from kamus_kms.errors import ConfigurationError
from kamus_kms.provider import KeyProvider
from kamus_service.providers import provider_from_settings
from kamus_service.settings import exit_on_configuration_error, load_settings

PROGRAM = "python -m kamus_service.auditsigning"


def _provider(service: str) -> KeyProvider:
    settings = load_settings("decryptor" if service == "decryptor" else "encryptor")
    return provider_from_settings(settings, CollectorRegistry())


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--service",
        choices=("encryptor", "decryptor"),
        default="encryptor",
        help="whose settings (KAMUS_*) this runs with (default: encryptor)",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="make a signing key sealed by the provider")
    new.add_argument("--public-key-file", type=Path, help="also write the public key here")
    public = actions.add_parser("public", help="print the public key of a sealed signing key")
    public.add_argument("file", type=Path, help="a file holding the sealed signing key")
    args = parser.parse_args(argv)
    with exit_on_configuration_error("kamus-auditsigning"):
        provider = _provider(args.service)
        if args.action == "public":
            private = signing_key(_read(args.file), provider)
            print(public_text(private.public_key()))
            return 0
        private = Ed25519PrivateKey.generate()
        sealed = seal_private(private, provider)
        public_key = public_text(private.public_key())
        if args.public_key_file is not None:
            try:
                args.public_key_file.write_text(public_key + "\n", encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot write {args.public_key_file}: {exc.strerror}"
                ) from exc
    print(sealed)
    print(f"{PROGRAM}: new audit signing key {key_id(private.public_key())}, sealed by the "
          f"{provider.name} provider (above). Public key, for kamus-audit verify --public-key:\n"
          f"{public_key}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
