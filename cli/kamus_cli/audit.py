"""Entry point of ``kamus-audit``: verify, filter and summarise a decryptor audit file.

``verify`` needs the audit key (the decryptor's ``KAMUS_AUDIT_KEY``); ``query`` and ``report`` only
read the file and trust it, so run ``verify`` first. Nothing here ever prints the key.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kamus_cli.auditreport import render_html
from kamus_cli.auditsummary import (
    OUTCOMES,
    Record,
    caller,
    event_time,
    items,
    scope,
    summarise,
)
from kamus_client import environment
from kamus_client.errors import InputError, OutputError
from kamus_client.exitcodes import ExitCode
from kamus_client.program import run_program
from kamus_kms.auditchain import escape_unsafe, json_line, read_records, verify
from kamus_kms.auditsign import (
    CHECKPOINT_EVENT,
    load_public,
    public_text,
    verify_public,
    witnessed_checkpoints,
)
from kamus_kms.errors import ConfigurationError

PROGRAM = "kamus-audit"
KEY_ENV = environment.AUDIT_KEY
TABLE_COLUMNS = ("time", "outcome", "reason", "action", "caller", "pod", "scope")
_HEAD = re.compile(r"(\d+):([0-9a-fA-F]{64})")

_PATHS_HELP = "audit files, or folders of them (*.jsonl: one chain per decryptor process)"


def _head(text: str) -> tuple[int, str]:
    match = _HEAD.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError("must be SEQ:MAC, a number and 64 hex digits")
    return int(match[1]), match[2].lower()


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("must be an ISO 8601 time, e.g. 2026-11-27T10:00") from exc
    # A time without offset is taken as UTC, the zone of every audit record.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``verify``, ``query`` and ``report``."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Verify, filter and summarise a Kamus decryptor audit file."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "verify",
        help="check the hash chain: exit 0 if intact, 9 if tampered",
        description=(
            "Check every record's MAC and its link to the previous record. The key is base64"
            f" (32+ bytes) from --key-file, ${KEY_ENV} or ${KEY_ENV}_FILE."
        ),
    )
    check.add_argument(
        "file",
        type=Path,
        nargs="+",
        help="audit files, or folders of per-process chains (KAMUS_AUDIT_DIR)",
    )
    check.add_argument("--key-file", type=Path, help="file holding the base64 audit key")
    check.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="verify with the checkpoints' public signing key instead of the audit key",
    )
    check.add_argument(
        "--witness",
        type=Path,
        action="append",
        default=[],
        metavar="LOG",
        help="with --public-key: the decryptor's stdout log (checkpoints it printed), to detect"
        " records removed from the end; repeatable",
    )
    check.add_argument(
        "--head",
        type=_head,
        metavar="SEQ:MAC",
        help="an anchor kept elsewhere (e.g. the last seq and mac on stdout); detects records"
        " deleted from the end",
    )
    check.set_defaults(run=_verify)

    signing = commands.add_parser(
        "signing-key",
        help="make an Ed25519 key for signed checkpoints",
        description="Make the decryptor's checkpoint signing key (KAMUS_AUDIT_SIGNING_KEY).",
    )
    signing_actions = signing.add_subparsers(dest="action", required=True, metavar="ACTION")
    new_key = signing_actions.add_parser("new", help="write a new private key, print the public")
    new_key.add_argument("file", type=Path, help="where the private key goes (mode 0600)")
    new_key.set_defaults(run=_new_signing_key)

    query = commands.add_parser(
        "query", help="list the events that match filters", description="List matching events."
    )
    query.add_argument("paths", type=Path, nargs="+", metavar="PATH", help=_PATHS_HELP)
    query.add_argument("--namespace", help="an item of the event is bound to this namespace")
    query.add_argument(
        "--service-account", help="an item of the event is bound to this service account"
    )
    query.add_argument("--pod", help="the caller's pod")
    query.add_argument("--outcome", choices=OUTCOMES)
    _add_period(query)
    query.add_argument("--format", choices=("table", "jsonl"), default="table")
    query.set_defaults(run=_query)

    report = commands.add_parser(
        "report",
        help="summarise: decrypts per scope, denials by reason, top callers (text or --html)",
        description="Summarise the events of a period, as text or as one self-contained HTML "
        "file with charts.",
    )
    report.add_argument("paths", type=Path, nargs="+", metavar="PATH", help=_PATHS_HELP)
    _add_period(report)
    report.add_argument(
        "--top", type=positive_count, default=10, help="callers to list (default 10)"
    )
    report.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the report as one HTML file (charts and tables, nothing loaded from "
        "anywhere) instead of printing it",
    )
    report.set_defaults(run=_report)
    return parser


def _add_period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", type=_instant, metavar="ISO", help="events at or after (UTC if no offset)"
    )
    parser.add_argument(
        "--until", type=_instant, metavar="ISO", help="events before (UTC if no offset)"
    )


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise InputError(f"the audit key from {source} must be base64") from exc
    if len(key) < 32:
        raise InputError(f"the audit key from {source} must hold at least 32 bytes")
    return key


def _read_key_file(path: Path, source: str) -> bytes:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the audit key file {path} ({source})") from exc
    return _decode_key(text, source)


def load_key(key_file: Path | None, environ: Mapping[str, str]) -> bytes:
    """The audit key: --key-file, else $KAMUS_AUDIT_KEY, else $KAMUS_AUDIT_KEY_FILE."""
    if key_file is not None:
        return _read_key_file(key_file, "--key-file")
    text = environment.value(KEY_ENV, environ)
    if text is not None:
        source = KEY_ENV + "_FILE" if KEY_ENV + "_FILE" in environ else KEY_ENV
        return _decode_key(text, source)
    raise InputError(f"no audit key: pass --key-file or set {KEY_ENV} or {KEY_ENV}_FILE")


def _chains(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.jsonl")))
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"cannot read {path}: No such file or directory")
    if not found:
        raise InputError("no audit chain found (folders are searched for *.jsonl)")
    return found


def _verify(args: argparse.Namespace, environ: Mapping[str, str]) -> ExitCode:
    chains = _chains(args.file)
    if args.public_key is not None:
        return _verify_public(args, chains)
    key = load_key(args.key_file, environ)
    tampered = False
    for path in chains:
        name = f"{path}: " if len(chains) > 1 else ""
        try:
            result = verify(path, key, head=args.head)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        if not result.ok:
            print(f"{name}TAMPERED: line {result.line}: {result.problem}")
            tampered = True
        else:
            print(f"{name}OK: {result.records} records, head {result.last_seq}:{result.last_mac}")
    return ExitCode.TAMPERED if tampered else ExitCode.OK


def _verify_public(args: argparse.Namespace, chains: list[Path]) -> ExitCode:
    try:
        public = load_public(args.public_key.read_text(encoding="ascii"))
        witnessed = [
            checkpoint
            for log in args.witness
            for checkpoint in witnessed_checkpoints(log.read_text("utf-8", "replace").splitlines())
        ]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the public key or a witness log: {exc}") from exc
    except ConfigurationError as exc:
        raise InputError(str(exc)) from exc
    tampered = False
    for path in chains:
        try:
            result = verify_public(path, public, witnessed)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        if not result.ok:
            tampered = True
            for problem in result.problems:
                print(f"{path}: TAMPERED: {problem}")
            continue
        tail = (f"; {result.uncovered} record(s) after the last checkpoint not yet signed"
                if result.uncovered else "")  # fmt: skip
        print(f"{path}: OK: {result.records} records, {result.checkpoints} signed"
              f" checkpoint(s){tail}")  # fmt: skip
    return ExitCode.TAMPERED if tampered else ExitCode.OK


def _new_signing_key(args: argparse.Namespace, environ: Mapping[str, str]) -> ExitCode:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    private = Ed25519PrivateKey.generate()
    seed = base64.b64encode(private.private_bytes_raw()).decode("ascii")
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as stream:
            stream.write(seed + "\n")
    except FileExistsError as exc:
        raise OutputError(f"{args.file} exists; refusing to replace a signing key") from exc
    except OSError as exc:
        raise OutputError(f"cannot write {args.file}: {exc.strerror}") from exc
    print(public_text(private.public_key()))
    print(f"{PROGRAM}: wrote the private key to {args.file}; the line above is the public key"
          " (keep it where auditors can read it)", file=sys.stderr)  # fmt: skip
    return ExitCode.OK


def _records(path: Path) -> Iterator[Record]:
    """The audit events of one file, without its signed checkpoints."""
    try:
        for record in read_records(path):
            if record.get("event") != CHECKPOINT_EVENT:
                yield record
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path}: {exc}; run `{PROGRAM} verify {path}`") from exc


def _events(paths: Sequence[Path]) -> Iterable[Record]:
    """The audit events of every chain, in time order (events without a time last); one chain is
    read as it streams, as it is already in order."""
    chains = _chains(paths)
    if len(chains) == 1:
        return _records(chains[0])
    merged = [record for chain in chains for record in _records(chain)]
    latest = datetime.max.replace(tzinfo=UTC)
    return sorted(merged, key=lambda record: event_time(record) or latest)


def _in_period(args: argparse.Namespace) -> Callable[[Record], bool]:
    def match(record: Record) -> bool:
        if args.since is None and args.until is None:
            return True
        when = event_time(record)
        if when is None:
            return False
        return (args.since is None or when >= args.since) and (
            args.until is None or when < args.until
        )

    return match


def _matches(args: argparse.Namespace) -> Callable[[Record], bool]:
    in_period = _in_period(args)

    def item_matches(item: dict[str, Any]) -> bool:
        return (args.namespace is None or item.get("namespace") == args.namespace) and (
            args.service_account is None or item.get("service_account") == args.service_account
        )

    def match(record: Record) -> bool:
        if args.outcome is not None and record.get("outcome") != args.outcome:
            return False
        if args.pod is not None and caller(record).get("pod") != args.pod:
            return False
        if (args.namespace or args.service_account) and not any(
            item_matches(item) for item in items(record)
        ):
            return False
        return in_period(record)

    return match


def _scopes(record: Record) -> list[str]:
    return sorted({scope(item) for item in items(record) if item.get("namespace")})


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else escape_unsafe(str(value))


def _row(record: Record) -> tuple[str, ...]:
    who = caller(record)
    return (
        _cell(record.get("time")),
        _cell(record.get("outcome")),
        _cell(record.get("reason")),
        _cell(record.get("action")),
        _cell(who.get("username")),
        _cell(who.get("pod")),
        _cell(",".join(_scopes(record))),
    )


def _print_table(rows: Iterable[tuple[str, ...]]) -> None:
    table = [TABLE_COLUMNS, *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(TABLE_COLUMNS))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _query(args: argparse.Namespace, environ: Mapping[str, str]) -> ExitCode:
    selected = filter(_matches(args), _events(args.paths))
    if args.format == "jsonl":
        for record in selected:
            print(json_line(record))
    else:
        _print_table(_row(record) for record in selected)
    return ExitCode.OK


def _print_counts(title: str, counts: Counter[str], limit: int | None = None) -> None:
    print(f"\n{title}:")
    if not counts:
        print("  (none)")
        return
    ranked = counts.most_common(limit)
    width = max(len(name) for name, _ in ranked)
    for name, count in ranked:
        print(f"  {name.ljust(width)}  {count}")


def _report(args: argparse.Namespace, environ: Mapping[str, str]) -> ExitCode:
    summary = summarise(filter(_in_period(args), _events(args.paths)))
    sources = [str(path) for path in args.paths]
    if args.html is not None:
        page = render_html(summary, sources, datetime.now(UTC), args.top)
        try:
            args.html.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {args.html}: {exc.strerror}") from exc
        print(f"{PROGRAM}: wrote the report of {summary.events} events to {args.html}",
              file=sys.stderr)  # fmt: skip
        return ExitCode.OK
    print(f"Audit report of {', '.join(sources)}")
    print(f"Period: {summary.first or '-'} .. {summary.last or '-'}")
    counts = ", ".join(f"{summary.outcomes[name]} {name}" for name in OUTCOMES)
    print(f"Events: {summary.events} ({counts})")
    _print_counts("Ciphertexts decrypted per scope (namespace/service account)", summary.decrypted)
    _print_counts("Denials by reason", summary.denials)
    _print_counts(f"Top {args.top} callers (events)", summary.callers, args.top)
    _print_counts("Ciphertexts opened per key", summary.keys)
    return ExitCode.OK


def positive_count(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run ``kamus-audit`` and return its exit code (argparse exits 2 itself on usage errors)."""
    args = build_parser().parse_args(argv)
    return run_program(
        PROGRAM, lambda: int(args.run(args, os.environ if environ is None else environ))
    )


if __name__ == "__main__":
    sys.exit(main())
