"""Entry point of ``kamus-audit``: verify, filter and summarise a decryptor's audit chains.

``verify`` and ``reconcile`` live in kamus_cli.auditverification; ``query`` and ``report`` only
read the files and trust them, so run ``verify`` first. Nothing here ever prints the key.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from kamus_cli.auditfiles import chains as _chains
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
from kamus_cli.auditverification import add_reconcile_parser, add_verify_parser
from kamus_client.errors import InputError, OutputError
from kamus_client.exitcodes import ExitCode
from kamus_client.program import run_program
from kamus_kms.auditchain import escape_unsafe, json_line, read_records
from kamus_kms.auditsign import public_text
from kamus_kms.auditwitness import CHAIN_START_EVENT, CHECKPOINT_EVENT

PROGRAM = "kamus-audit"
TABLE_COLUMNS = ("time", "outcome", "reason", "action", "caller", "pod", "scope")

_PATHS_HELP = "audit files, or folders of them (*.jsonl: one chain per decryptor process)"


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

    add_verify_parser(commands)

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
    add_reconcile_parser(commands)
    return parser


def _add_period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", type=_instant, metavar="ISO", help="events at or after (UTC if no offset)"
    )
    parser.add_argument(
        "--until", type=_instant, metavar="ISO", help="events before (UTC if no offset)"
    )


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
            if record.get("event") not in (CHECKPOINT_EVENT, CHAIN_START_EVENT):
                yield record
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path}: {exc}; run `{PROGRAM} verify {path}`") from exc


def _events(paths: Sequence[Path]) -> Iterator[Record]:
    """The audit events of every chain, merged in time order as they are read.

    A chain is in time order already (records are appended as they happen), so the merge holds
    one record per chain, never a whole chain. A record is placed by the latest time its chain
    has shown so far: one without a readable time, or with a time before an earlier record's (a
    clock stepped back), stays where it is in its chain, right after the record before it, and
    the merge of every other record stays in order (docs/AUDIT.md, "Querying and reporting").
    """
    chains = _chains(paths)
    if len(chains) == 1:
        return _records(chains[0])
    merged = heapq.merge(*(_placed(_records(chain)) for chain in chains), key=itemgetter(0))
    return (record for _, record in merged)


def _placed(records: Iterator[Record]) -> Iterator[tuple[datetime, Record]]:
    """Each record with the latest time of its chain up to it (the earliest time before any)."""
    latest = datetime.min.replace(tzinfo=UTC)
    for record in records:
        when = event_time(record)
        if when is not None and when > latest:
            latest = when
        yield latest, record


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
    # Names come from the records (request-chosen scopes, damaged values): escaped like `query`.
    ranked = [(escape_unsafe(name), count) for name, count in counts.most_common(limit)]
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
        print(f"{PROGRAM}: wrote the report of {summary.events} events to"
              f" {escape_unsafe(str(args.html))}", file=sys.stderr)  # fmt: skip
        return ExitCode.OK
    print(f"Audit report of {escape_unsafe(', '.join(sources))}")
    print(f"Period: {escape_unsafe(summary.first or '-')} .. {escape_unsafe(summary.last or '-')}")
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
