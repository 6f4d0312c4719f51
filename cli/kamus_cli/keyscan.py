"""``kamus-cli keys scan``: which keys the ciphertexts in files (and a cluster's ConfigMaps) use.

An operator cannot retire a key without knowing what still uses it. The scan finds every Kamus
ciphertext in the given files and folders (recursively: YAML manifests, Helm values, .env, JSON,
plain files; anything text), and with ``--kubeconfig`` in every ConfigMap the credentials may list,
and reports them per provider, key id and scope. ``--keyring`` (a local keyring) and
``--sealing-keys`` (the sealing keys document) mark the keys that are decrypt-only, retired or
unknown; original Kamus texts are counted as ``kamus-legacy``. ``--uses KEY_ID`` exits 10 when
anything uses that key: the check before ``kamus-cli keyring retire``.

Nothing is decrypted: only headers are read, and no secret is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kamus_cli.kubeconfig import load as kubeconfig_of
from kamus_client.arguments import paragraph
from kamus_client.errors import InputError, KeyInUseError
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError
from kamus_kms.keyring import Keyring
from kamus_kms.legacy import PROVIDER_NAME as LEGACY
from kamus_kms.legacy import LegacyCiphertext
from kamus_kms.sealingkeys import SealingKeyring

# A v1 text anywhere in a line: header fields, then the body up to the first non-base64url byte.
V1 = re.compile(
    r"kamus:v1:[a-z0-9][a-z0-9-]{0,31}:[a-z0-9.-]{1,253}:[a-z0-9.-]{1,253}:"
    r"[A-Za-z0-9][A-Za-z0-9._/@+=-]{0,255}:[A-Za-z0-9_-]+"
)
# An original Kamus text: base64 of a 16-byte IV (24 characters ending in ==), ':', base64.
LEGACY_TEXT = re.compile(
    r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{22}==:[A-Za-z0-9+/]{22,}={0,2}(?![A-Za-z0-9+/=])"
)
MAX_FILE_BYTES = 16 * 1024 * 1024
SKIPPED_DIRECTORIES = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv"})


@dataclass
class Use:
    """Ciphertexts of one provider, key id and scope, and where they are."""

    provider: str
    key_id: str
    namespace: str
    service_account: str
    count: int = 0
    places: list[str] = field(default_factory=list)
    state: str = "-"


def _texts_in(text: str) -> Iterator[Ciphertext | LegacyCiphertext]:
    for found in V1.finditer(text):
        try:
            yield Ciphertext.parse(found.group())
        except InvalidCiphertextError:
            continue
    for found in LEGACY_TEXT.finditer(text):
        try:
            yield LegacyCiphertext.parse(found.group())
        except InvalidCiphertextError:
            continue


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, directories, names in os.walk(path):
                directories[:] = sorted(d for d in directories if d not in SKIPPED_DIRECTORIES)
                for name in sorted(names):
                    yield Path(root) / name
        elif path.exists():
            yield path
        else:
            raise InputError(f"{path} does not exist")


def _read(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES or not path.is_file():
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data:
        return None  # binary
    return data.decode("utf-8", "replace")


def scan(sources: Iterable[tuple[str, str]]) -> dict[tuple[str, str, str, str], Use]:
    """Every ciphertext in ``(place, text)`` pairs, grouped by provider, key id and scope."""
    uses: dict[tuple[str, str, str, str], Use] = {}
    for place, text in sources:
        for found in _texts_in(text):
            if isinstance(found, LegacyCiphertext):
                key = (LEGACY, "-", "-", "-")
            else:
                key = (found.provider, found.key_id, found.scope.namespace,
                       found.scope.service_account)  # fmt: skip
            use = uses.setdefault(key, Use(*key))
            use.count += 1
            if place not in use.places:
                use.places.append(place)
    return uses


def file_sources(paths: Iterable[Path]) -> Iterator[tuple[str, str]]:
    """``(file name, text)`` of every readable text file under ``paths``."""
    for path in _files(paths):
        text = _read(path)
        if text is not None:
            yield str(path), text


def configmap_sources(kubeconfig: str, context: str | None) -> Iterator[tuple[str, str]]:
    """``(configmap/NS/NAME, values)`` of every ConfigMap the kubeconfig's credentials list."""
    configuration = kubeconfig_of(kubeconfig, context, "scanning a cluster")
    from kubernetes import client  # noqa: PLC0415 - the kubernetes extra, only here

    with client.ApiClient(configuration) as api:
        try:
            listed = client.CoreV1Api(api).list_config_map_for_all_namespaces(_request_timeout=30)
        except Exception as exc:
            from kamus_client.errors import ServerUnavailableError  # noqa: PLC0415

            raise ServerUnavailableError(
                f"cannot list ConfigMaps with {kubeconfig} ({type(exc).__name__})",
                transient=False,
            ) from exc
    for item in listed.items:
        metadata = item.metadata
        place = f"configmap/{getattr(metadata, 'namespace', '')}/{getattr(metadata, 'name', '')}"
        yield place, "\n".join((item.data or {}).values())


def mark_states(
    uses: Iterable[Use], keyring: Keyring | None, sealing: SealingKeyring | None
) -> None:
    """Set each use's key state from the local keyring and the sealing keys, when given."""
    local = {version.id: version.state.value for version in keyring.versions} if keyring else {}
    sealed = {entry.id: entry.state for entry in sealing.entries} if sealing else {}
    for use in uses:
        if use.provider == "local" and keyring is not None:
            use.state = local.get(use.key_id, "unknown")
        elif use.provider == "sealed" and sealing is not None:
            states = {sealed.get(key_id, "unknown") for key_id in use.key_id.split("+")}
            use.state = "/".join(sorted(states))
        elif use.provider == LEGACY:
            use.state = "legacy"


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add ``keys scan``."""
    parser = commands.add_parser(
        "keys",
        help="inventory of the keys ciphertexts use (keys scan)",
        description=paragraph(
            "Inventory of the keys Kamus ciphertexts use, before retiring one. Nothing is"
            " decrypted and no secret is printed."
        ),
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    scan_parser = actions.add_parser(
        "scan", help="find ciphertexts in files and ConfigMaps and report their keys"
    )
    add_scan_arguments(scan_parser)
    scan_parser.add_argument("--output-format", choices=("table", "json"), default="table")
    scan_parser.add_argument(
        "--uses",
        metavar="KEY_ID",
        help="exit 10 when any ciphertext uses this key id (any provider)",
    )
    scan_parser.set_defaults(run=_run_scan, parser=scan_parser)


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs of a scan (also used by ``keyring retire --scan``)."""
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="files and folders to search (recursively)")  # fmt: skip
    parser.add_argument("--kubeconfig", help="also search every ConfigMap of this cluster")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--keyring", type=Path, help="mark local keys' states from this keyring")
    parser.add_argument("--sealing-keys", type=Path,
                        help="mark sealing keys' states from this document")  # fmt: skip


def run_scan(args: argparse.Namespace) -> list[Use]:
    """Scan what ``args`` names; InputError for unusable inputs."""
    if not args.paths and not args.kubeconfig:
        raise InputError("nothing to scan: give files or folders, and/or --kubeconfig")
    sources: list[Iterable[tuple[str, str]]] = [file_sources(args.paths)]
    if args.kubeconfig:
        sources.append(configmap_sources(args.kubeconfig, args.context))
    uses = scan(pair for source in sources for pair in source)
    try:
        keyring = Keyring.load(args.keyring) if args.keyring else None
        sealing = (
            SealingKeyring.parse(args.sealing_keys.read_text("utf-8"))
            if args.sealing_keys
            else None
        )
    except (ConfigurationError, OSError) as exc:
        raise InputError(f"cannot read the key states: {exc}") from exc
    mark_states(uses.values(), keyring, sealing)
    return sorted(uses.values(), key=lambda u: (u.provider, u.key_id, u.namespace,
                                                 u.service_account))  # fmt: skip


def users_of(uses: Iterable[Use], key_id: str) -> list[Use]:
    """The uses of ``key_id`` (a sealed ciphertext uses each of its recipients' keys)."""
    return [use for use in uses if key_id == use.key_id or key_id in use.key_id.split("+")]


def refuse_if_used(uses: Iterable[Use], key_id: str, advice: str) -> None:
    """Raise KeyInUseError (exit 10) naming where ``key_id`` is still used."""
    found = users_of(uses, key_id)
    if found:
        places = sorted({place for use in found for place in use.places})
        shown = ", ".join(places[:5]) + (f" and {len(places) - 5} more" if len(places) > 5 else "")
        raise KeyInUseError(
            f"key {key_id!r} is still used by {sum(use.count for use in found)} ciphertext(s)"
            f" in {shown}{advice}"
        )


def _run_scan(args: argparse.Namespace) -> None:
    uses = run_scan(args)
    if args.output_format == "json":
        print(json.dumps([use.__dict__ for use in uses], indent=2))
    else:
        print(f"{'PROVIDER':14} {'KEY':20} {'STATE':13} {'NAMESPACE':20} {'SERVICE ACCOUNT':20} "
              f"{'TEXTS':>5}  WHERE")  # fmt: skip
        for use in uses:
            where = ", ".join(use.places[:3]) + (" ..." if len(use.places) > 3 else "")
            print(f"{use.provider:14} {use.key_id[:20]:20} {use.state:13} {use.namespace:20} "
                  f"{use.service_account:20} {use.count:5}  {where}")  # fmt: skip
    if args.uses:
        refuse_if_used(uses, args.uses, "")
