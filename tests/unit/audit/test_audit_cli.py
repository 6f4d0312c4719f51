from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kamus_cli.audit import main
from kamus_client.exitcodes import ExitCode
from kamus_decryptor.auditfile import AuditFile
from kamus_kms.auditchain import chain_key, record_mac, verify

Run = Callable[..., tuple[int, str, str]]


def _event(
    request_id: str,
    outcome: str,
    time: str,
    *,
    pod: str = "app-1",
    scopes: tuple[tuple[str, str], ...] = (("team-a", "app"),),
    reason: str | None = None,
    username: str = "system:serviceaccount:team-a:app",
) -> dict[str, Any]:
    return {
        "time": time,
        "audit": True,
        "action": "decrypt_batch",
        "request_id": request_id,
        "outcome": outcome,
        "reason": reason or ("ok" if outcome == "allowed" else "scope_mismatch"),
        "caller": {"username": username, "uid": "u", "pod": pod, "pod_uid": "p", "node": None,
                   "credential_id": None},
        "items": [
            {"name": f"s{index}", "fingerprint": "ab" * 16, "namespace": namespace,
             "service_account": account, "provider": "local", "key_id": "k1"}
            for index, (namespace, account) in enumerate(scopes)
        ],
        "source_ip": "10.0.3.7",
        "user_agent": "kamus-init-0.1.0",
    }  # fmt: skip


EVENTS = [
    _event("r1", "allowed", "2026-11-27T10:00:00.000+00:00"),
    _event("r2", "denied", "2026-11-27T11:00:00.000+00:00", pod="other-5d8f",
           username="system:serviceaccount:team-a:other"),
    _event("r3", "allowed", "2026-11-27T12:00:00.000+00:00", pod="web-1",
           scopes=(("team-b", "web"), ("team-a", "app")),
           username="system:serviceaccount:team-b:web"),
    _event("r4", "unavailable", "2026-11-28T09:00:00.000+00:00", reason="unavailable"),
    # What a request rejected before any token or body was understood looks like.
    {"audit": True, "action": "decrypt", "request_id": "r5", "outcome": "denied",
     "reason": "unauthorized", "caller": None, "items": []},
]  # fmt: skip


@pytest.fixture
def audit_log(tmp_path: Path, key: bytes) -> Path:
    """An audit file holding EVENTS in order."""
    path = tmp_path / "audit.jsonl"
    log = AuditFile(path, key, fsync=False)
    for event in EVENTS:
        log.append(event)
    return path


@pytest.fixture
def key_text(key: bytes) -> str:
    """The audit key as base64, the way operators hold it."""
    return base64.b64encode(key).decode()


@pytest.fixture
def key_file(tmp_path: Path, key_text: str) -> Path:
    """A file holding the base64 audit key."""
    path = tmp_path / "audit-key"
    path.write_text(key_text + "\n")
    return path


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], key: bytes, key_text: str) -> Run:
    """Run kamus-audit; return (exit code, stdout, stderr) after checking the key never shows."""

    def invoke(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
        code = main(list(argv), {} if environ is None else environ)
        out, err = capsys.readouterr()
        for secret in (key_text, key.hex()):
            assert secret not in out + err
        return code, out, err

    return invoke


def _ids(jsonl: str) -> list[str]:
    return [json.loads(line)["request_id"] for line in jsonl.splitlines()]


def _lines(path: Path) -> Iterator[bytes]:
    yield from path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("source", ["--key-file", "KAMUS_AUDIT_KEY", "KAMUS_AUDIT_KEY_FILE"])
def test_verify_prints_ok_with_the_head_anchor_from_any_key_source(
    run: Run, audit_log: Path, key_file: Path, key_text: str, source: str
) -> None:
    argv = ["verify", str(audit_log)]
    environ = {}
    if source == "--key-file":
        argv += ["--key-file", str(key_file)]
    elif source == "KAMUS_AUDIT_KEY":
        environ[source] = key_text
    else:
        environ[source] = str(key_file)

    code, out, _ = run(*argv, environ=environ)

    last = json.loads(audit_log.read_bytes().splitlines()[-1])
    assert code == ExitCode.OK
    assert out == f"OK: 5 records, head audit.jsonl:5:{last['mac']}\n"


def test_verify_with_the_printed_head_later_detects_deleted_last_records(
    run: Run, audit_log: Path, key_file: Path
) -> None:
    _, out, _ = run("verify", str(audit_log), "--key-file", str(key_file))
    head = out.split("head ")[1].strip()
    audit_log.write_bytes(b"".join(list(_lines(audit_log))[:-2]))

    code, out, _ = run("verify", str(audit_log), "--key-file", str(key_file), "--head", head)

    assert code == ExitCode.TAMPERED
    assert int(code) == 9
    assert out.startswith("TAMPERED: line 4: deleted: seq 4..5 missing at the end")


@pytest.mark.parametrize(
    ("tamper", "line"),
    [
        (lambda lines: [lines[0], lines[1].replace(b'"denied"', b'"allowed"'), *lines[2:]], 2),
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2),
        (lambda lines: [*lines[:2], *lines[3:]], 3),
    ],
    ids=["edited", "reordered", "deleted"],
)
def test_verify_reports_tampering_with_its_line_and_exit_code_9(
    run: Run,
    audit_log: Path,
    key_file: Path,
    tamper: Callable[[list[bytes]], list[bytes]],
    line: int,
) -> None:
    audit_log.write_bytes(b"".join(tamper(list(_lines(audit_log)))))
    code, out, _ = run("verify", str(audit_log), "--key-file", str(key_file))
    assert code == ExitCode.TAMPERED
    assert out.startswith(f"TAMPERED: line {line}: ")


def test_verify_with_another_key_reports_tampering(
    run: Run, audit_log: Path, tmp_path: Path
) -> None:
    other = base64.b64encode(b"o" * 32).decode()
    code, out, _ = run("verify", str(audit_log), environ={"KAMUS_AUDIT_KEY": other})
    assert code == ExitCode.TAMPERED
    assert out.startswith("TAMPERED: line 1: edited")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no audit key"),
        ({"KAMUS_AUDIT_KEY": "not base64!"}, "must be base64"),
        ({"KAMUS_AUDIT_KEY": base64.b64encode(b"short").decode()}, "at least 32 bytes"),
        (
            {"KAMUS_AUDIT_KEY_FILE": "/nonexistent/key"},
            "KAMUS_AUDIT_KEY_FILE: cannot read /nonexistent/key",
        ),
    ],
)
def test_verify_without_a_usable_key_is_an_input_error(
    run: Run, audit_log: Path, environ: dict[str, str], message: str
) -> None:
    code, out, err = run("verify", str(audit_log), environ=environ)
    assert code == ExitCode.INPUT
    assert out == ""
    assert message in err


@pytest.mark.parametrize("command", ["verify", "query", "report"])
def test_a_missing_audit_file_is_an_input_error(
    run: Run, tmp_path: Path, key_text: str, command: str
) -> None:
    code, _, err = run(
        command, str(tmp_path / "missing.jsonl"), environ={"KAMUS_AUDIT_KEY": key_text}
    )
    assert code == ExitCode.INPUT
    assert "cannot read" in err


@pytest.mark.parametrize("head", ["12", "x:" + "0" * 64, "3:" + "0" * 63, "3:" + "g" * 64])
def test_a_malformed_head_anchor_is_a_usage_error(
    run: Run, audit_log: Path, key_file: Path, head: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        run("verify", str(audit_log), "--key-file", str(key_file), "--head", head)
    assert caught.value.code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], ["r1", "r2", "r3", "r4", "r5"]),
        (["--outcome", "denied"], ["r2", "r5"]),
        (["--namespace", "team-b"], ["r3"]),
        (["--namespace", "team-a"], ["r1", "r2", "r3", "r4"]),
        (["--service-account", "web"], ["r3"]),
        (["--namespace", "team-b", "--service-account", "app"], []),
        (["--pod", "other-5d8f"], ["r2"]),
        (["--since", "2026-11-27T11:00:00+00:00"], ["r2", "r3", "r4"]),
        (["--until", "2026-11-27T11:00"], ["r1"]),
        (["--since", "2026-11-27T12:00:00Z", "--until", "2026-11-28"], ["r3"]),
        (["--namespace", "team-a", "--outcome", "allowed"], ["r1", "r3"]),
    ],
)
def test_query_selects_the_events_matching_every_filter(
    run: Run, audit_log: Path, filters: list[str], expected: list[str]
) -> None:
    code, out, _ = run("query", str(audit_log), "--format", "jsonl", *filters)
    assert code == ExitCode.OK
    assert _ids(out) == expected


def test_query_table_shows_one_aligned_row_per_event_with_dashes_for_missing_fields(
    run: Run, audit_log: Path
) -> None:
    code, out, _ = run("query", str(audit_log))
    assert code == ExitCode.OK
    header, *rows = out.splitlines()
    assert header.split() == ["time", "outcome", "reason", "action", "caller", "pod", "scope"]
    assert len(rows) == 5
    assert rows[2].split() == [
        "2026-11-27T12:00:00.000+00:00", "allowed", "ok", "decrypt_batch",
        "system:serviceaccount:team-b:web", "web-1", "team-a/app,team-b/web",
    ]  # fmt: skip
    assert rows[4].split() == ["-", "denied", "unauthorized", "decrypt", "-", "-", "-"]
    assert header.index("outcome") == rows[0].index("allowed")


def test_report_summarises_decrypts_per_scope_denials_and_callers(
    run: Run, audit_log: Path
) -> None:
    code, out, _ = run("report", str(audit_log))
    assert code == ExitCode.OK
    assert "Events: 5 (2 allowed, 2 denied, 1 unavailable, 0 error)" in out
    decrypted = out.split("per scope")[1].split("Denials")[0]
    assert decrypted.split() == [
        "(namespace/service", "account):", "team-a/app", "2", "team-b/web", "1"
    ]  # fmt: skip
    denials = out.split("Denials by reason:")[1].split("Top")[0]
    assert sorted(denials.split()) == sorted(["scope_mismatch", "1", "unauthorized", "1"])
    callers = out.split("callers (events):")[1]
    assert callers.split()[:2] == ["system:serviceaccount:team-a:app", "2"]
    assert "(no authenticated caller)" in callers


def test_report_counts_only_the_period_asked_for(run: Run, audit_log: Path) -> None:
    code, out, _ = run("report", str(audit_log), "--since", "2026-11-28")
    assert code == ExitCode.OK
    assert "Events: 1 (0 allowed, 0 denied, 1 unavailable, 0 error)" in out
    assert "Period: 2026-11-28T09:00:00.000+00:00 .. 2026-11-28T09:00:00.000+00:00" in out


@pytest.mark.parametrize("command", ["query", "report"])
def test_a_file_with_a_broken_line_is_refused_with_a_hint_to_verify(
    run: Run, audit_log: Path, command: str
) -> None:
    with audit_log.open("ab") as stream:
        stream.write(b'{"seq": 6, "pr')
    code, _, err = run(command, str(audit_log))
    assert code == ExitCode.INPUT
    assert "line 6" in err
    assert "kamus-audit verify" in err


# U+2028/U+2029 end a line for JavaScript and splitlines(); U+0085 (NEL) too; U+009B is the C1
# control sequence introducer, and U+202E reverses the text after it on screen.
UNSAFE = "\u2028\u2029\x85\x9b\u202e\x7f\U000e0041"


def test_unsafe_characters_are_escaped_on_disk_and_in_query_output_and_still_verify(
    run: Run, tmp_path: Path, key: bytes
) -> None:
    path = tmp_path / "audit.jsonl"
    event = {**EVENTS[0], "user_agent": f"curl{UNSAFE}", "request_id": "r-unsafe"}
    record = AuditFile(path, key, fsync=False).append(event).record
    raw = path.read_text("utf-8")

    assert not set(UNSAFE) & set(raw)
    assert raw.count("\n") == 1
    assert len(raw.splitlines()) == 1
    assert json.loads(raw) == record  # the same record, so the same MAC
    assert record["user_agent"] == f"curl{UNSAFE}"
    assert run("verify", str(path), "--key-file", _key_file(tmp_path, key))[0] == ExitCode.OK
    for output_format in ("jsonl", "table"):
        code, out, _ = run("query", str(path), "--format", output_format)
        assert code == ExitCode.OK
        assert not set(UNSAFE) & set(out)
    code, out, _ = run("query", str(path), "--format", "jsonl")
    assert json.loads(out)["user_agent"] == f"curl{UNSAFE}"


def test_a_line_written_before_escaping_still_verifies(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    AuditFile(path, key, fsync=False).append({**EVENTS[0], "user_agent": f"curl{UNSAFE}"})
    record = json.loads(path.read_text("utf-8"))
    # As versions before escaping wrote it: no public hash yet (it came later), raw characters.
    del record["hash"]
    record["mac"] = record_mac(chain_key(key), record)
    legacy = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.write_text(legacy + "\n", "utf-8")

    assert set(UNSAFE) <= set(path.read_text("utf-8"))
    assert verify(path, key).ok
    # A record of the public chain was always written escaped: raw, it is rewritten.
    AuditFile(path.with_name("new.jsonl"), key, fsync=False).append(
        EVENTS[0] | {"user_agent": UNSAFE}
    )
    current = json.loads(path.with_name("new.jsonl").read_text("utf-8"))
    raw = json.dumps(current, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    path.with_name("new.jsonl").write_text(raw + "\n", "utf-8")
    assert verify(path.with_name("new.jsonl"), key).problem == (
        "edited: the record was rewritten (same content, new bytes)"
    )


def _key_file(tmp_path: Path, key: bytes) -> str:
    path = tmp_path / "key"
    path.write_text(base64.b64encode(key).decode())
    return str(path)
