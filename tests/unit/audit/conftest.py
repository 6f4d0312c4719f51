"""Fixtures of the audit file tests: a key and a writer of small chained logs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kamus_decryptor.auditfile import AuditFile

MakeLog = Callable[[int], Path]
SampleEvent = Callable[[int], dict[str, Any]]


def _sample_event(number: int) -> dict[str, Any]:
    """An audit event like AuditEvent.as_fields() plus time, distinct per number."""
    return {
        "time": f"2026-11-27T10:{number // 60 % 60:02d}:{number % 60:02d}.000+00:00",
        "audit": True,
        "action": "decrypt_batch",
        "request_id": f"req-{number}",
        "outcome": "allowed" if number % 3 else "denied",
        "reason": "ok" if number % 3 else "scope_mismatch",
        "caller": {
            "username": "system:serviceaccount:team-a:app",
            "uid": "u-1",
            "pod": f"app-{number % 4}",
            "pod_uid": "p-1",
            "node": None,
            "credential_id": "JTI=abc",
        },
        "items": [
            {
                "name": "password",
                "fingerprint": f"{number:032x}",
                "namespace": "team-a",
                "service_account": "app",
                "provider": "local",
                "key_id": "k1",
            }
        ],
        "source_ip": "10.0.3.7",
        "user_agent": "kamus-init-0.1.0",
    }


@pytest.fixture
def sample_event() -> SampleEvent:
    """Build an audit event shaped like AuditEvent.as_fields() plus time, distinct per number."""
    return _sample_event


@pytest.fixture
def key() -> bytes:
    """A fresh random audit key."""
    return os.urandom(32)


@pytest.fixture
def make_log(tmp_path: Path, key: bytes) -> MakeLog:
    """Write a chained log of N sample events (no fsync) and return its path."""

    def make(count: int) -> Path:
        path = tmp_path / "audit.jsonl"
        log = AuditFile(path, key, fsync=False)
        for number in range(1, count + 1):
            log.append(_sample_event(number))
        return path

    return make
