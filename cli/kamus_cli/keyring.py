"""The ``keyring`` command: create, rotate, retire and list the keys of a local keyring file.

Operators run it against the keyring file before updating the Kubernetes Secret the services mount.
It never prints key material.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from kamus_cli import keyscan
from kamus_client.errors import InputError, OutputError
from kamus_kms.errors import ConfigurationError
from kamus_kms.keyring import Keyring


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add the ``keyring`` command and its actions to ``commands``."""
    parser = commands.add_parser(
        "keyring",
        help="manage a local keyring file (new, rotate, retire, show)",
        description="Manage the key versions of a local keyring file (docs/FORMAT.md).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="create a keyring with one active random key")
    new.add_argument("file", type=Path)
    new.add_argument("--id", default="k1", help="id of the first key (default k1)")
    new.set_defaults(run=_run_mapped(_new))
    rotate = actions.add_parser(
        "rotate", help="add a new active key; the active one becomes decrypt-only"
    )
    rotate.add_argument("file", type=Path)
    rotate.add_argument("--id", help="id of the new key (default k<N+1>)")
    rotate.set_defaults(run=_run_mapped(_rotate))
    retire = actions.add_parser("retire", help="retire a decrypt-only key: it opens nothing more")
    retire.add_argument("file", type=Path)
    retire.add_argument("key_id")
    retire.add_argument(
        "--scan",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="first search these files and folders (repeatable) and refuse (exit 10) while any"
        " ciphertext uses the key",
    )
    retire.add_argument("--kubeconfig", help="first search this cluster's ConfigMaps too")
    retire.add_argument("--context", help="kubeconfig context (default: the current one)")
    retire.add_argument("--force", action="store_true", help="retire even if the scan finds uses")
    retire.set_defaults(run=_run_mapped(_retire))
    show = actions.add_parser("show", help="list key ids, states and creation times")
    show.add_argument("file", type=Path)
    show.set_defaults(run=_run_mapped(_show))


def _load(path: Path) -> Keyring:
    return Keyring.load(path)


def _save(keyring: Keyring, path: Path, *, exclusive: bool = False) -> None:
    try:
        written = keyring.save(path, exclusive=exclusive)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
    if not written:
        raise OutputError(f"{path} exists; refusing to replace a keyring")
    _print(keyring)


def _print(keyring: Keyring) -> None:
    for version in keyring.versions:
        print(f"{version.id}\t{version.state.value}\t{version.created}")


def _new(args: argparse.Namespace) -> None:
    _save(Keyring.generate(args.id), args.file, exclusive=True)


def _rotate(args: argparse.Namespace) -> None:
    _save(_load(args.file).rotate(args.id), args.file)


def _retire(args: argparse.Namespace) -> None:
    keyring = _load(args.file).retire(args.key_id)
    if (args.scan or args.kubeconfig) and not args.force:
        scan_args = argparse.Namespace(
            paths=args.scan,
            kubeconfig=args.kubeconfig,
            context=args.context,
            keyring=None,
            sealing_keys=None,
        )
        result = keyscan.run_scan(scan_args)
        uses = [use for use in result.uses if use.provider == "local"]
        keyscan.refuse_if_used(
            uses, args.key_id, "; rewrap them first, or pass --force", result.skipped
        )
    _save(keyring, args.file)


def _show(args: argparse.Namespace) -> None:
    _print(_load(args.file))


def _run_mapped(
    action: Callable[[argparse.Namespace], None],
) -> Callable[[argparse.Namespace], None]:
    """The one place keyring problems become the CLI's input error (exit 3)."""

    def run(args: argparse.Namespace) -> None:
        try:
            action(args)
        except ConfigurationError as exc:
            raise InputError(str(exc)) from exc

    return run
