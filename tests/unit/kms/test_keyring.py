from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from kamus_kms.errors import ConfigurationError
from kamus_kms.keyring import Keyring, KeyState


def _document(*keys: dict[str, Any]) -> str:
    return json.dumps({"version": 1, "keys": list(keys)})


_SECRET = "A" * 43 + "="  # base64 of 32 zero bytes


def test_json_round_trip_keeps_every_version(keyring: Keyring) -> None:
    rotated = keyring.rotate().rotate()
    again = Keyring.from_json(rotated.to_json())
    assert [(v.id, v.state, v.secret) for v in again.versions] == [
        (v.id, v.state, v.secret) for v in rotated.versions
    ]
    assert again.active.id == "k3"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[]", '"keys" list'),
        (_document(), "holds no keys"),
        (_document({"id": "k1", "state": "decrypt-only", "secret": _SECRET}), "exactly one key"),
        (
            _document(
                {"id": "k1", "state": "active", "secret": _SECRET},
                {"id": "k2", "state": "active", "secret": _SECRET},
            ),
            "exactly one key",
        ),
        (
            _document(
                {"id": "k1", "state": "active", "secret": _SECRET},
                {"id": "k1", "state": "retired", "secret": _SECRET},
            ),
            "unique",
        ),
        (_document({"id": "k1", "state": "active", "secret": "AAAA"}), "exactly 32 bytes"),
        (_document({"id": "k1", "state": "active", "secret": "%%%"}), "not valid base64"),
        (_document({"id": "k1", "state": "on", "secret": _SECRET}), "state must be"),
        (_document({"id": "K 1", "state": "active", "secret": _SECRET}), "key id"),
        (json.dumps({"version": 9, "keys": []}), "unsupported keyring version"),
    ],
)
def test_invalid_keyrings_are_refused_with_a_reason(text: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Keyring.from_json(text)


def test_configuration_errors_never_quote_key_material() -> None:
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LWlzLXRvby1sb25n"
    with pytest.raises(ConfigurationError) as caught:
        Keyring.from_json(_document({"id": "k1", "state": "active", "secret": secret}))
    assert secret not in str(caught.value)


def test_retire_refuses_the_active_key_and_unknown_ids(keyring: Keyring) -> None:
    with pytest.raises(ConfigurationError, match="active"):
        keyring.retire("k1")
    with pytest.raises(ConfigurationError, match="no key"):
        keyring.retire("nope")
    assert keyring.rotate().retire("k1").get("k1").state is KeyState.RETIRED  # type: ignore[union-attr]


def test_save_writes_a_private_file(keyring: Keyring, tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    keyring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.load(path).active.secret == keyring.active.secret


def test_repr_never_shows_secrets(keyring: Keyring) -> None:
    assert keyring.active.secret.hex() not in repr(keyring)
    assert repr(keyring.active.secret) not in repr(keyring)


def test_save_never_writes_through_a_planted_symlink(keyring: Keyring, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    for planted in (tmp_path / ".keyring.json.tmp", tmp_path / ".keyring.json.tmp-1"):
        planted.symlink_to(target)
    path = tmp_path / "keyring.json"
    keyring.save(path)
    assert target.read_text() == "untouched"
    assert not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_exclusive_save_never_replaces_a_keyring(keyring: Keyring, tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    assert keyring.save(path, exclusive=True)
    assert not Keyring.generate().save(path, exclusive=True)
    assert Keyring.load(path).active.secret == keyring.active.secret
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]


def test_an_empty_key_is_a_problem_not_a_silently_dropped_key() -> None:
    document = _document(
        {"id": "k2", "state": "active", "secret": _SECRET},
        {"id": "k1", "state": "decrypt-only", "secret": ""},
    )
    with pytest.raises(ConfigurationError, match="empty"):
        Keyring.from_json(document)
