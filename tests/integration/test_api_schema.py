"""Schemathesis against both services' /openapi.json, over real gunicorn: no 5xx, responses
match the documented schema, status codes and content types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from gunicorn_process import Service
from hypothesis import HealthCheck, given, settings

TokenFactory = Callable[..., str]
_SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip


@pytest.fixture(scope="session")
def encryptor_schema(encryptor: Service) -> Any:
    """The encryptor's published OpenAPI document."""
    return schemathesis.openapi.from_url(f"{encryptor.url}/openapi.json")


@pytest.fixture(scope="session")
def decryptor_schema(decryptor: Service) -> Any:
    """The decryptor's published OpenAPI document."""
    return schemathesis.openapi.from_url(f"{decryptor.url}/openapi.json")


@pytest.fixture(scope="session")
def pod_token(token: TokenFactory) -> str:
    """A valid token, so generated requests also get past authentication."""
    return token("team-a", "app")


def _check(operation: Any, headers: dict[str, str], excluded: list[Any]) -> None:
    """Run generated requests against one operation and validate every answer."""

    @given(case=operation.as_strategy())
    @_SETTINGS
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    check()


def _exercise(
    schema: Any,
    headers: dict[str, str],
    excluded: list[Any] | None = None,
    excluded_for: dict[str, list[Any]] | None = None,
) -> list[str]:
    """Run generated requests against every operation; return the operations exercised."""
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        _check(operation, headers, (excluded or []) + (excluded_for or {}).get(operation.path, []))
        exercised.append(f"{operation.method.upper()} {operation.path}")
    return exercised


def test_the_encryptor_conforms_to_its_schema(encryptor_schema: Any) -> None:
    # This encryptor has no sealing key, and a string shaped like a sealing key is rarely one:
    # /api/v1/seal answers 400, which is right, so schema-valid data is not expected to pass.
    exercised = _exercise(
        encryptor_schema,
        {},
        excluded_for={"/api/v1/seal": [schemathesis.checks.positive_data_acceptance]},
    )
    assert {"POST /api/v1/encrypt", "POST /api/v1/seal"} <= set(exercised)


def test_the_decryptor_conforms_to_its_schema(decryptor_schema: Any, pod_token: str) -> None:
    # A schema-valid string is rarely a ciphertext this Kamus can open: 400 invalid_ciphertext is
    # the right answer, so "schema-valid data must be accepted" does not apply here.
    exercised = _exercise(
        decryptor_schema,
        {"Authorization": f"Bearer {pod_token}"},
        excluded=[schemathesis.checks.positive_data_acceptance],
    )
    assert {"POST /api/v1/decrypt", "POST /api/v1/decrypt/batch", "POST /api/v1/rewrap"} <= set(
        exercised
    )
