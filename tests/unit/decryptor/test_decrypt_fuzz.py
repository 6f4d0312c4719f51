"""Fuzzing the ciphertext parser and the decrypt endpoint: only documented errors, ever."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reviewer_double import StaticReviewer

from kamus_decryptor import create_app
from kamus_kms.ciphertext import Ciphertext
from kamus_kms.errors import InvalidCiphertextError
from kamus_kms.keyring import Keyring
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.settings import Settings

TOKEN_A = {"Authorization": "Bearer token-team_a-app"}
DOCUMENTED = {(400, "invalid_ciphertext"), (400, "invalid_request"), (403, "scope_mismatch"),
              (413, "payload_too_large"), (415, "unsupported_media_type")}  # fmt: skip
_REGEX = r"kamus:v1:[a-z:.\-0-9]{0,80}[A-Za-z0-9_-]{0,200}"
_FUZZ = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@pytest.fixture
def fuzz_client(keyring: Keyring, reviewer: StaticReviewer) -> FlaskClient:
    """A decryptor without the failure rate limit: fuzzing fails on purpose, thousands of times."""
    settings = Settings(service="decryptor", keyring=keyring.to_json(), audit_key=b"k" * 32,
                        rate_limit_failures_per_minute=0)  # fmt: skip
    return create_app(settings, reviewer=reviewer).test_client()


@st.composite
def _mutations(draw: st.DrawFn, text: str) -> str:
    chars = list(text)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
        position = draw(st.integers(min_value=0, max_value=max(len(chars) - 1, 0)))
        alphabet = st.sampled_from("abcxyzABC019-_:=/+. \n\u00e9\x00")
        if kind == "replace" and chars:
            chars[position] = draw(alphabet)
        elif kind == "insert":
            chars.insert(position, draw(alphabet))
        elif kind == "delete" and chars:
            del chars[position]
        elif kind == "swap" and len(chars) > 1:
            other = draw(st.integers(min_value=0, max_value=len(chars) - 1))
            chars[position], chars[other] = chars[other], chars[position]
    return "".join(chars)


@_FUZZ
@given(
    text=st.text(max_size=300) | st.from_regex(r"kamus:v1:[a-z:.\-0-9]{0,80}[A-Za-z0-9_-]{0,200}")
)
def test_the_parser_raises_only_the_opaque_error(text: str) -> None:
    try:
        parsed = Ciphertext.parse(text)
    except InvalidCiphertextError:
        return
    assert parsed.encode() == text.strip(" \t\r\n")


@_FUZZ
@given(data=st.data())
def test_mutated_ciphertexts_get_only_documented_answers(
    fuzz_client: FlaskClient, sealer: Sealer, team_a_app: Scope, data: st.DataObject
) -> None:
    original = sealer.seal(b"fuzzed-secret", team_a_app)
    mutated = data.draw(_mutations(original))
    response = fuzz_client.post("/api/v1/decrypt", json={"data": mutated}, headers=TOKEN_A)
    if response.status_code == 200:
        # Only whitespace around an untouched ciphertext may still open.
        assert mutated.strip(" \t\r\n") == original
        assert response.get_data() == b"fuzzed-secret"
    else:
        assert (response.status_code, response.get_json()["error"]) in DOCUMENTED
        assert b"fuzzed-secret" not in response.get_data()


@pytest.mark.parametrize("route", ["/api/v1/decrypt", "/api/v1/rewrap", "/api/v1/decrypt/batch"])
@_FUZZ
@given(body=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["data", "items", "x", ""]) | st.text(max_size=5), children,
                      max_size=4),
    max_leaves=10,
))  # fmt: skip
def test_arbitrary_json_bodies_never_cause_a_500(
    fuzz_client: FlaskClient, route: str, body: object
) -> None:
    response = fuzz_client.post(route, json=body, headers=TOKEN_A)
    assert response.status_code < 500
    assert (response.status_code, response.get_json()["error"]) in DOCUMENTED
