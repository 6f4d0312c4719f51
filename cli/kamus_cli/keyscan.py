"""``kamus-cli keys scan``: which keys the ciphertexts in files (and a cluster's ConfigMaps) use.

An operator cannot retire a key without knowing what still uses it. The scan finds every Kamus
ciphertext in the given files and folders (recursively: YAML manifests, Helm values and packages,
.env, JSON, UTF-16 text, base64-wrapped values, ASCII inside binaries), and with ``--kubeconfig``
in every ConfigMap the credentials may list, and reports them per provider, key id and scope.
Every place it cannot read (too large, unreadable, a link to a folder, a zip archive) is reported
as skipped, and makes ``--uses`` and ``keyring retire --scan`` refuse: an unseen use is no proof
that a key is unused. ``--keyring`` (a local keyring) and
``--sealing-keys`` (the sealing keys document) mark the keys that are decrypt-only, retired or
unknown; original Kamus texts are counted as ``kamus-legacy``. ``--uses KEY_ID`` exits 10 when
anything uses that key: the check before ``kamus-cli keyring retire``.

Nothing is decrypted: only headers are read, and no secret is printed.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import bz2
import codecs
import gzip
import io
import json
import lzma
import os
import re
import stat
import sys
import tarfile
import zlib
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
# A YAML double-quoted string continued on the next line: backslash, line break, indentation.
CONTINUATION = re.compile(r"\\\r?\n[ \t]*")
# A base64 value long enough to hold a ciphertext (Secret data, ConfigMap binaryData).
BASE64_RUN = re.compile(
    r"(?<![A-Za-z0-9+/=_-])(?:[A-Za-z0-9+/]{4}){16,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
    r"(?![A-Za-z0-9+/=_-])"
)
_SUFFIX_CUTS = 16
_ZIP_MAGIC = b"PK\x03\x04"
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")
_MAX_ARCHIVE_DEPTH = 3
_MAX_ARCHIVE_BYTES = 4 * MAX_FILE_BYTES
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


@dataclass(frozen=True)
class Skipped:
    """A place the scan could not read: a ciphertext there would go unseen."""

    place: str
    reason: str


@dataclass
class Scan:
    """What a scan found, and where it could not look."""

    uses: list[Use]
    skipped: list[Skipped]


def _v1(candidate: str) -> Ciphertext | None:
    try:
        return Ciphertext.parse(candidate)
    except InvalidCiphertextError:
        pass
    # '-' and '_' are base64url, so a suffix such as "-v2" is swallowed into the body: try the
    # body cut before each of its last separators.
    body = candidate.rfind(":") + 1
    cuts = [i for i in range(len(candidate) - 1, body, -1) if candidate[i] in "-_"]
    for cut in cuts[:_SUFFIX_CUTS]:
        try:
            return Ciphertext.parse(candidate[:cut])
        except InvalidCiphertextError:
            continue
    return None


def _legacy(candidate: str) -> LegacyCiphertext | None:
    try:
        return LegacyCiphertext.parse(candidate)
    except InvalidCiphertextError:
        return None


def _parsed(candidate: str, is_v1: bool) -> Ciphertext | LegacyCiphertext | None:
    return _v1(candidate) if is_v1 else _legacy(candidate)


def _continued(text: str) -> list[tuple[int, int, Ciphertext | LegacyCiphertext]]:
    """``(start, end, text)`` of the ciphertexts a YAML ``\\``-continuation splits in two."""
    breaks = list(CONTINUATION.finditer(text))
    if not breaks:
        return []
    # The text with every continuation removed, and where each of its pieces starts in both.
    pieces, joined_starts, original_starts, position, length = [], [], [], 0, 0
    for found in [*breaks, None]:
        end = found.start() if found else len(text)
        pieces.append(text[position:end])
        joined_starts.append(length)
        original_starts.append(position)
        length += end - position
        position = found.end() if found else position
    joined = "".join(pieces)

    def original(index: int) -> tuple[int, int]:
        piece = bisect.bisect_right(joined_starts, index) - 1
        return piece, original_starts[piece] + index - joined_starts[piece]

    found_texts = []
    for pattern, is_v1 in ((V1, True), (LEGACY_TEXT, False)):
        for match in pattern.finditer(joined):
            first, start = original(match.start())
            last, end = original(match.end() - 1)
            parsed = _parsed(match.group(), is_v1) if first != last else None
            if parsed is not None:
                found_texts.append((start, end + 1, parsed))
    return found_texts


def _texts_in(text: str, *, unwrap: bool = True) -> Iterator[Ciphertext | LegacyCiphertext]:
    continued = _continued(text)
    yield from (parsed for _, _, parsed in continued)
    for pattern, is_v1 in ((V1, True), (LEGACY_TEXT, False)):
        for match in pattern.finditer(text):
            if any(match.start() < end and start < match.end() for start, end, _ in continued):
                continue  # the part of a continued text on one line
            found = _parsed(match.group(), is_v1)
            if found is not None:
                yield found
    if unwrap:
        # Secret `data:` and ConfigMap `binaryData:` hold texts in base64.
        for run in BASE64_RUN.finditer(text):
            try:
                decoded = base64.b64decode(run.group(), validate=True)
            except ValueError:
                continue
            yield from _texts_in(decoded.decode("latin-1"), unwrap=False)


def _walk(path: Path, skipped: list[Skipped]) -> Iterator[Path]:
    def unlisted(error: OSError) -> None:
        skipped.append(Skipped(str(error.filename or path), f"cannot list: {error.strerror}"))

    for root, directories, names in os.walk(path, onerror=unlisted):
        kept = []
        for name in sorted(directories):
            if name in SKIPPED_DIRECTORIES:
                continue
            if os.path.islink(os.path.join(root, name)):
                # Following links could loop or leave the tree; the operator can name the target.
                skipped.append(Skipped(os.path.join(root, name), "link to a folder, not followed"))
                continue
            kept.append(name)
        directories[:] = kept
        for name in sorted(names):
            yield Path(root) / name


def _files(paths: Iterable[Path], skipped: list[Skipped]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from _walk(path, skipped)
        elif path.exists() or path.is_symlink():
            yield path
        else:
            raise InputError(f"{path} does not exist")


def _read(path: Path, skipped: list[Skipped]) -> bytes | None:
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            skipped.append(Skipped(str(path), "not a regular file"))
            return None
        if status.st_size > MAX_FILE_BYTES:
            skipped.append(Skipped(str(path), "larger than 16 MiB"))
            return None
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        skipped.append(Skipped(str(path), f"cannot read: {exc.strerror}"))
        return None
    if len(data) > MAX_FILE_BYTES:
        skipped.append(Skipped(str(path), "larger than 16 MiB"))
        return None
    return data


def _text_of(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    if b"\x00" not in data:
        return data.decode("utf-8", "replace")
    # UTF-16 without a mark, or a binary: read as UTF-16 at both byte alignments (which covers
    # both byte orders for ASCII) and as single bytes (ASCII runs, such as a text embedded in a
    # program). A text shows up in only one of the three readings.
    return "\n".join(
        (data.decode("latin-1"), data.decode("utf-16-le", "replace"),
         data[1:].decode("utf-16-le", "replace"))
    )  # fmt: skip


def _contents(
    place: str, data: bytes, skipped: list[Skipped], depth: int = 0
) -> Iterator[tuple[str, str]]:
    """``(place, text)`` of a file's bytes; archives (Helm ``.tgz`` packages) opened."""
    if data.startswith(_ZIP_MAGIC):
        skipped.append(Skipped(place, "zip archive, not opened"))
        return
    if data.startswith(_COMPRESSED_MAGIC) or data[257:262] == b"ustar":
        if depth >= _MAX_ARCHIVE_DEPTH:
            skipped.append(Skipped(place, "archive nested too deep, not opened"))
            return
        yield from _archive(place, data, skipped, depth)
        return
    yield place, _text_of(data)


def _archive(
    place: str, data: bytes, skipped: list[Skipped], depth: int
) -> Iterator[tuple[str, str]]:
    opened = False
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            opened = True
            budget = _MAX_ARCHIVE_BYTES
            for member in archive:
                inner = f"{place}!{member.name}"
                if not member.isfile():
                    continue
                if member.size > MAX_FILE_BYTES or member.size > budget:
                    skipped.append(Skipped(inner, "larger than 16 MiB (or the archive's budget)"))
                    continue
                budget -= member.size
                extracted = archive.extractfile(member)
                if extracted is not None:
                    yield from _contents(inner, extracted.read(), skipped, depth + 1)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        if not opened:  # not a tar: one compressed file
            yield from _compressed(place, data, skipped, depth)
            return
        skipped.append(Skipped(place, f"damaged archive ({type(exc).__name__})"))


def _compressed(
    place: str, data: bytes, skipped: list[Skipped], depth: int
) -> Iterator[tuple[str, str]]:
    opener = {b"\x1f\x8b": gzip.GzipFile, b"BZh": bz2.BZ2File, b"\xfd7zXZ": lzma.LZMAFile}
    for magic, kind in opener.items():
        if data.startswith(magic):
            try:
                with kind(fileobj=io.BytesIO(data)) as stream:
                    inner = stream.read(MAX_FILE_BYTES + 1)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                skipped.append(Skipped(place, f"damaged compressed file ({type(exc).__name__})"))
                return
            if len(inner) > MAX_FILE_BYTES:
                skipped.append(Skipped(place, "larger than 16 MiB once decompressed"))
                return
            yield from _contents(place, inner, skipped, depth + 1)
            return
    yield place, _text_of(data)


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


def file_sources(paths: Iterable[Path], skipped: list[Skipped]) -> Iterator[tuple[str, str]]:
    """``(place, text)`` of every file under ``paths``; what cannot be read goes to ``skipped``."""
    for path in _files(paths, skipped):
        data = _read(path, skipped)
        if data is not None:
            yield from _contents(str(path), data, skipped)


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
        # binaryData arrives as base64, which the scan unwraps like a Secret's data.
        binary = [
            value if isinstance(value, str) else base64.b64encode(value).decode("ascii")
            for value in (item.binary_data or {}).values()
        ]
        yield place, "\n".join([*(item.data or {}).values(), *binary])


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


def run_scan(args: argparse.Namespace) -> Scan:
    """Scan what ``args`` names, warning on stderr of every skipped place; InputError for
    unusable inputs."""
    if not args.paths and not args.kubeconfig:
        raise InputError("nothing to scan: give files or folders, and/or --kubeconfig")
    skipped: list[Skipped] = []
    sources: list[Iterable[tuple[str, str]]] = [file_sources(args.paths, skipped)]
    if args.kubeconfig:
        sources.append(configmap_sources(args.kubeconfig, args.context))
    uses = scan(pair for source in sources for pair in source)
    for place in skipped:
        print(f"kamus-cli: warning: skipped {place.place}: {place.reason}", file=sys.stderr)
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
    ordered = sorted(uses.values(), key=lambda u: (u.provider, u.key_id, u.namespace,
                                                    u.service_account))  # fmt: skip
    return Scan(ordered, skipped)


def users_of(uses: Iterable[Use], key_id: str) -> list[Use]:
    """The uses of ``key_id`` (a sealed ciphertext uses each of its recipients' keys)."""
    return [use for use in uses if key_id == use.key_id or key_id in use.key_id.split("+")]


def refuse_if_used(
    uses: Iterable[Use], key_id: str, advice: str, skipped: list[Skipped] | None = None
) -> None:
    """Raise KeyInUseError (exit 10) naming where ``key_id`` is still used, or, when places were
    skipped, saying that its absence cannot be told."""
    found = users_of(uses, key_id)
    if found:
        places = sorted({place for use in found for place in use.places})
        shown = ", ".join(places[:5]) + (f" and {len(places) - 5} more" if len(places) > 5 else "")
        raise KeyInUseError(
            f"key {key_id!r} is still used by {sum(use.count for use in found)} ciphertext(s)"
            f" in {shown}{advice}"
        )
    if skipped:
        raise KeyInUseError(
            f"cannot tell that key {key_id!r} is unused: {len(skipped)} place(s) could not be"
            f" scanned (named above){'; check them, then pass --force' if advice else ''}"
        )


def _run_scan(args: argparse.Namespace) -> None:
    result = run_scan(args)
    uses = result.uses
    if args.output_format == "json":
        document = {
            "uses": [use.__dict__ for use in uses],
            "skipped": [place.__dict__ for place in result.skipped],
        }
        print(json.dumps(document, indent=2))
    else:
        print(f"{'PROVIDER':14} {'KEY':20} {'STATE':13} {'NAMESPACE':20} {'SERVICE ACCOUNT':20} "
              f"{'TEXTS':>5}  WHERE")  # fmt: skip
        for use in uses:
            where = ", ".join(use.places[:3]) + (" ..." if len(use.places) > 3 else "")
            print(f"{use.provider:14} {use.key_id[:20]:20} {use.state:13} {use.namespace:20} "
                  f"{use.service_account:20} {use.count:5}  {where}")  # fmt: skip
    if args.uses:
        refuse_if_used(uses, args.uses, "", result.skipped)
