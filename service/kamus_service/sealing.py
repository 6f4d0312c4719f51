"""Making and rotating a cluster's sealing keys, with the cluster's own key provider.

    python -m kamus_service.sealing new [--kem MLKEM768-X25519|X25519] [--cluster NAME] [FILE]
    python -m kamus_service.sealing retire KEY_ID FILE
    python -m kamus_service.sealing show FILE

Run where the services' settings are (``kubectl exec`` into the encryptor, or a Job with its
environment): the private keys are sealed by the configured provider, so only that provider's
keys open them. ``new`` adds a key (the previous active one becomes decrypt-only) to FILE, or
starts a new document without it, and prints the document on standard output: store it as the
Secret behind ``KAMUS_SEALING_KEYS_FILE`` of both services. Nothing printed holds a private key in
the clear.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from kamus_kms.errors import ConfigurationError
from kamus_kms.offline import DEFAULT_KEM, KEMS
from kamus_kms.sealingkeys import SealingKeyring
from kamus_service.providers import provider_from_settings
from kamus_service.settings import exit_on_configuration_error, load_settings


def _read(path: Path | None) -> SealingKeyring:
    if path is None:
        return SealingKeyring([])
    try:
        return SealingKeyring.parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the new document goes to standard output."""
    parser = argparse.ArgumentParser(prog="python -m kamus_service.sealing",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    actions = parser.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="add a new active sealing key")
    new.add_argument("file", type=Path, nargs="?", help="the current document, if any")
    new.add_argument("--kem", choices=list(KEMS), default=DEFAULT_KEM)
    new.add_argument("--cluster", default="", help="the cluster's name, shown to users")
    retire = actions.add_parser("retire", help="retire a decrypt-only key")
    retire.add_argument("key_id")
    retire.add_argument("file", type=Path)
    show = actions.add_parser("show", help="list the keys and their fingerprints")
    show.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    with exit_on_configuration_error("kamus-sealing"):
        ring = _read(args.file)
        if args.action == "show":
            for entry in ring.entries:
                print(f"{entry.id}  {entry.state:12}  {entry.public.kem:16}  "
                      f"{entry.public.cluster or '-':12}  {entry.public.fingerprint}")  # fmt: skip
            return 0
        if args.action == "retire":
            ring = ring.retired(args.key_id)
        else:
            settings = load_settings("encryptor")
            provider = provider_from_settings(settings, CollectorRegistry())
            cluster = args.cluster or settings.cluster_name
            ring, public = ring.with_new_key(provider, kem=args.kem, cluster=cluster)
            print(f"new sealing key {public.key_id}, fingerprint {public.fingerprint}",
                  file=sys.stderr)  # fmt: skip
    sys.stdout.write(ring.dumps())
    return 0


if __name__ == "__main__":
    sys.exit(main())
