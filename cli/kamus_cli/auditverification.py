"""``kamus-audit verify`` and ``kamus-audit reconcile``: the audit files against the key and the
witnesses.

``verify`` checks the HMAC chain with the audit key, or, with ``--public-key``, the public chain
and its signed checkpoints against the witnesses the file's owner cannot rewrite: the decryptor's
stdout logs (``--witness``) and the heads it keeps in the Kubernetes API
(``--witness-from-cluster``). ``reconcile`` lists what the witnesses (and a metrics scrape) saw
that the files lack, or the other way round. What each mode proves: docs/AUDIT.md.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from kamus_cli.auditfiles import KEY_ENV, chains, load_key
from kamus_cli.kubeconfig import load as kubeconfig_of
from kamus_client.errors import InputError, ServerUnavailableError
from kamus_client.exitcodes import ExitCode
from kamus_kms.auditchain import escape_unsafe, read_records, verify
from kamus_kms.auditsign import load_public
from kamus_kms.auditverify import ChainReport, CheckpointPolicy, verify_chains
from kamus_kms.auditwitness import CHAIN_START_EVENT, CHECKPOINT_EVENT, Witness
from kamus_kms.errors import ConfigurationError

_HEAD = re.compile(r"(?:([^:\s]+):)?(\d+):([0-9a-fA-F]{64})")
# One sample of the decryptor's attempts counter in a Prometheus text scrape.
_SAMPLE = re.compile(r"^kamus_decrypt_total\{([^}]*)\}\s+(\S+)", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Head = tuple[str | None, int, str]
DEFAULT_POLICY = CheckpointPolicy()


def _head(text: str) -> Head:
    match = _HEAD.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            "must be CHAIN:SEQ:MAC (or SEQ:MAC for one file): a chain file name, a number and 64"
            " hex digits"
        )
    return match[1], int(match[2]), match[3].lower()


def _add_witnesses(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--witness",
        type=Path,
        action="append",
        default=[],
        metavar="LOG",
        help="the decryptor's stdout logs (every record's chain, seq and mac, and the signed"
        " checkpoints); repeatable. Take them after copying the files",
    )
    parser.add_argument(
        "--witness-from-cluster",
        metavar="NAMESPACE/CONFIGMAP",
        help="the heads the decryptor keeps in the Kubernetes API (the chart's"
        " <release>-decryptor-audit-heads ConfigMap), read with --kubeconfig",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig for --witness-from-cluster")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def add_verify_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``verify`` to ``kamus-audit``'s commands."""
    check = commands.add_parser(
        "verify",
        help="check the chains: exit 0 if intact, 9 if tampered",
        description=(
            "Check every record's MAC and its link to the previous record with the audit key"
            f" (base64, 32+ bytes, from --key-file, ${KEY_ENV} or ${KEY_ENV}_FILE); or, with"
            " --public-key, the public chain, its signed checkpoints and the witnesses."
        ),
    )
    check.add_argument(
        "file", type=Path, nargs="+",
        help="audit files, or folders of per-process chains (KAMUS_AUDIT_DIR)",
    )  # fmt: skip
    check.add_argument("--key-file", type=Path, help="file holding the base64 audit key")
    check.add_argument(
        "--head",
        type=_head,
        action="append",
        default=[],
        metavar="CHAIN:SEQ:MAC",
        help="an anchor kept elsewhere (a stdout audit event's chain, seq and mac): the chain"
        " must hold that record; repeatable. SEQ:MAC alone when one file is verified",
    )
    check.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="verify with the checkpoints' public signing key instead of the audit key",
    )
    _add_witnesses(check)
    check.add_argument(
        "--partial",
        action="store_true",
        help="the files given are some of the decryptor's chains: chains the witnesses saw that"
        " are not among them are not reported missing",
    )
    check.add_argument(
        "--checkpoint-records", type=int, default=DEFAULT_POLICY.records, metavar="N",
        help="the decryptor's KAMUS_AUDIT_CHECKPOINT_RECORDS (default %(default)s): more"
        " unsigned records at a chain's end is a failure",
    )  # fmt: skip
    check.add_argument(
        "--checkpoint-seconds", type=float, default=DEFAULT_POLICY.seconds, metavar="S",
        help="the decryptor's KAMUS_AUDIT_CHECKPOINT_SECONDS (default %(default)s)",
    )  # fmt: skip
    check.set_defaults(run=run_verify)


def add_reconcile_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``reconcile`` to ``kamus-audit``'s commands."""
    reconcile = commands.add_parser(
        "reconcile",
        help="what the logs, the cluster or the metrics saw that the files lack (exit 9 if any)",
        description="Compare the audit files with the decryptor's stdout logs, the heads kept in"
        " the cluster and, given scrapes of /metrics, the attempts counted. Needs no key.",
    )
    reconcile.add_argument(
        "paths", type=Path, nargs="+", metavar="PATH", help="audit files or folders of chains"
    )
    _add_witnesses(reconcile)
    reconcile.add_argument(
        "--metrics", type=Path, action="append", default=[], metavar="SCRAPE",
        help="a scrape of a decryptor's /metrics (Prometheus text); repeatable, summed",
    )  # fmt: skip
    reconcile.set_defaults(run=run_reconcile)


def run_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> ExitCode:
    """``kamus-audit verify``."""
    witnessed = bool(args.witness or args.witness_from_cluster)
    odd: list[Path] = []
    paths = chains(args.file, allow_none=witnessed and args.public_key is not None, odd=odd)
    for entry in odd:
        print(f"{_safe(str(entry))}: TAMPERED: not a regular file (no decryptor writes one there)")
    if args.public_key is not None:
        return max(_verify_public(args, paths), ExitCode.TAMPERED if odd else ExitCode.OK)
    if witnessed:
        raise InputError("--witness and --witness-from-cluster need --public-key")
    heads = _heads(args.head, paths)
    key = load_key(args.key_file, environ)
    tampered = False
    for path in paths:
        name = f"{path}: " if len(paths) > 1 else ""
        head = heads.pop(path.name, None)
        try:
            result = verify(path, key, head=head)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        if not result.ok:
            print(f"{name}TAMPERED: line {result.line}: {result.problem}")
            tampered = True
        else:
            print(f"{name}OK: {result.records} records, head"
                  f" {path.name}:{result.last_seq}:{result.last_mac}")  # fmt: skip
    for chain, (seq, _) in heads.items():
        print(f"{_safe(chain)}: TAMPERED: missing: an anchor names seq {seq} of this chain, which"
              " is not among the files")  # fmt: skip
        tampered = True
    return ExitCode.TAMPERED if tampered or odd else ExitCode.OK


def _heads(given: Sequence[Head], paths: Sequence[Path]) -> dict[str, tuple[int, str]]:
    heads: dict[str, tuple[int, str]] = {}
    for named, seq, mac in given:
        chain = named
        if chain is None:
            if len(paths) != 1:
                raise InputError(
                    "--head SEQ:MAC anchors one chain: name it (--head CHAIN:SEQ:MAC, the chain"
                    " of the stdout audit event) when verifying several"
                )
            chain = paths[0].name
        if chain in heads:
            raise InputError(f"two anchors for the chain {chain}: give the latest")
        heads[chain] = (seq, mac)
    return heads


def _witness(args: argparse.Namespace) -> tuple[Witness, list[str]]:
    """The witnesses given, and problems with them (unreadable entries of the cluster's)."""
    witness = Witness()
    for log in args.witness:
        try:
            with log.open(encoding="utf-8", errors="replace") as stream:
                witness.add_log(stream)
        except OSError as exc:
            raise InputError(f"cannot read the witness log {log}: {exc.strerror}") from exc
    problems = []
    if args.witness_from_cluster:
        heads = cluster_heads(args.witness_from_cluster, args.kubeconfig, args.context)
        problems = [
            f"{_safe(name)}: TAMPERED: the cluster witness's entry is not a checkpoint of it"
            for name in witness.add_heads(heads)
        ]
    return witness, problems


def _verify_public(args: argparse.Namespace, paths: list[Path]) -> ExitCode:
    if args.head:
        raise InputError("--head anchors the HMAC chain: use it without --public-key")
    try:
        public = load_public(args.public_key.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the public key {args.public_key}") from exc
    except ConfigurationError as exc:
        raise InputError(str(exc)) from exc
    witness, problems = _witness(args)
    policy = CheckpointPolicy(args.checkpoint_records, args.checkpoint_seconds)
    # The witnesses name every chain of the decryptor: one they saw that is not among the files
    # given is missing, unless the auditor says the files are a part (--partial).
    complete = not args.partial
    try:
        reports = verify_chains(paths, public, witness, policy, complete=complete)
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    for line in [*problems, *(_described(report) for report in reports)]:
        print(line)
    tampered = bool(problems) or any(not report.ok for report in reports)
    return ExitCode.TAMPERED if tampered else ExitCode.OK


def _described(report: ChainReport) -> str:
    where = str(report.path) if report.path is not None else report.chain
    if not report.ok:
        return "\n".join(f"{_safe(where)}: TAMPERED: {_safe(p)}" for p in report.problems)
    origin = f", origin {report.origin}" if report.origin else ""
    tail = (f"; {report.uncovered} record(s) after the last checkpoint not yet signed"
            if report.uncovered else "")  # fmt: skip
    return _safe(f"{where}: OK: {report.records} records, {report.checkpoints} signed"
                 f" checkpoint(s){origin}{tail}")  # fmt: skip


def _safe(text: str) -> str:
    return escape_unsafe(text)


def cluster_heads(reference: str, kubeconfig: str | None, context: str | None) -> dict[str, str]:
    """The data of the ConfigMap ``NAMESPACE/NAME`` where the decryptor keeps its chains' heads."""
    namespace, _, name = reference.partition("/")
    if not namespace or not name:
        raise InputError("--witness-from-cluster must be NAMESPACE/CONFIGMAP")
    configuration = kubeconfig_of(kubeconfig, context, "reading the cluster witness")
    from kubernetes import client  # noqa: PLC0415 - the kubernetes extra, only here

    with client.ApiClient(configuration) as api:
        try:
            found = client.CoreV1Api(api).read_namespaced_config_map(
                name, namespace, _request_timeout=30
            )
        except Exception as exc:
            raise ServerUnavailableError(
                f"cannot read the ConfigMap {namespace}/{name} ({type(exc).__name__})",
                transient=False,
            ) from exc
    return dict(found.data or {})


def _ranges(numbers: Iterable[int]) -> str:
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in spans)


def _file_records(path: Path) -> Iterator[dict[str, object]]:
    try:
        yield from read_records(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path}: {exc}; run `kamus-audit verify {path}`") from exc


def _scraped(scrapes: Sequence[Path]) -> Counter[tuple[str, str]]:
    counted: Counter[tuple[str, str]] = Counter()
    for scrape in scrapes:
        try:
            text = scrape.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"cannot read the metrics scrape {scrape}: {exc.strerror}") from exc
        for labels, value in _SAMPLE.findall(text):
            named = dict(_LABEL.findall(labels))
            counted[named.get("action", "?"), named.get("reason", "?")] += _count(value, scrape)
    return counted


def _count(value: str, scrape: Path) -> int:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (0 <= number < 2**63) or number != int(number):
        raise InputError(f"{scrape}: a kamus_decrypt_total sample is not a count: {_safe(value)}")
    return int(number)


def run_reconcile(args: argparse.Namespace, environ: Mapping[str, str]) -> ExitCode:
    """``kamus-audit reconcile``."""
    if not (args.witness or args.witness_from_cluster or args.metrics):
        raise InputError("nothing to compare with: give --witness, --witness-from-cluster or"
                         " --metrics")  # fmt: skip
    odd: list[Path] = []
    paths = chains(args.paths, odd=odd)
    witness, problems = _witness(args)
    findings = [*problems, *(f"{_safe(str(entry))}: not a regular file (no decryptor writes one"
                              " there)" for entry in odd)]  # fmt: skip
    counted: Counter[tuple[str, str]] = Counter()
    notes = []
    names = {path.name for path in paths}
    for path in paths:
        seen = witness.seen.get(path.name, {})
        in_files: set[int] = set()
        differ: list[int] = []
        for record in _file_records(path):
            seq, mac = record.get("seq"), record.get("mac")
            if isinstance(seq, int):
                in_files.add(seq)
                if witness.vouches(path.name, seq, mac, record.get("hash")) is False:
                    differ.append(seq)
            if record.get("event") not in (CHECKPOINT_EVENT, CHAIN_START_EVENT):
                counted[str(record.get("action")), str(record.get("reason"))] += 1
        where = _safe(str(path))
        missing = set(seen) - in_files
        if missing:
            findings.append(f"{where}: in the logs, not in the file: seq {_ranges(missing)}")
        if differ:
            findings.append(f"{where}: different in the file and the logs: seq {_ranges(differ)}")
        replays = witness.replays(path.name)
        if replays:
            findings.append(f"{where}: written twice with different MACs (the logs): seq"
                            f" {_ranges(replays)}")  # fmt: skip
        unlogged = in_files - set(seen)
        if path.name in witness.logged and unlogged:
            notes.append(f"{where}: in the file, not in the logs: seq {_ranges(unlogged)}"
                         " (the logs given may end earlier, or these were forged)")  # fmt: skip
    for chain in sorted(witness.chains - names):
        findings.append(f"{_safe(chain)}: no such file, yet the witnesses saw seq"
                        f" {_ranges(witness.seen[chain])}")  # fmt: skip
    if args.metrics:
        scraped = _scraped(args.metrics)
        for action, reason in sorted(set(scraped) | set(counted)):
            files, metrics = counted[action, reason], scraped[action, reason]
            line = (f"metrics: {_safe(action)} {_safe(reason)}: {metrics} counted, {files} in"
                    " the files")  # fmt: skip
            if metrics > files:
                findings.append(f"{line} ({metrics - files} attempts without a record)")
            elif metrics < files:
                notes.append(f"{line} (the scrape may predate the files or miss a process)")
    for line in [*findings, *notes]:
        print(line)
    if not findings:
        print(f"OK: every record the witnesses saw is in the {len(paths)} file(s)")
    return ExitCode.TAMPERED if findings else ExitCode.OK
