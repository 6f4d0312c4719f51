from __future__ import annotations

from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import pytest

from kamus_client.environment import NAMES as client_names
from kamus_client.environment import markdown_table as client_table
from kamus_decryptor import create_app as decryptor_app
from kamus_encryptor import create_app as encryptor_app
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError
from kamus_kms.keyring import Keyring
from kamus_kms.scope import Scope
from kamus_kms.sealer import Sealer
from kamus_service.keys import audit_key_from_settings, local_provider
from kamus_service.providers import sealer_from_settings
from kamus_service.settings import (
    SPEC,
    AuditPolicy,
    LogLevel,
    Provider,
    Settings,
    TokenVerification,
    load_settings,
    markdown_table,
)

AUDIT_KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="  # 32 bytes


@pytest.fixture
def keyring_json(keyring: Keyring) -> str:
    """A valid keyring document."""
    return keyring.to_json()


def test_defaults_are_safe(keyring_json: str) -> None:
    settings = load_settings(
        "decryptor", {"KAMUS_KEYRING": keyring_json, "KAMUS_AUDIT_KEY": AUDIT_KEY}
    )
    assert settings.dev_mode is False
    assert settings.token_audiences == ("kamus",)
    assert settings.allow_default_service_account is False
    assert settings.max_plaintext_bytes == 65536
    assert settings.padding_bucket == 32


@pytest.mark.parametrize("service", ["encryptor", "decryptor"])
def test_missing_keys_are_a_startup_error(service: str) -> None:
    with pytest.raises(ConfigurationError, match="KAMUS_KEYRING"):
        load_settings(service, {})  # type: ignore[arg-type]


def test_decryptor_requires_an_audit_key(keyring_json: str) -> None:
    with pytest.raises(ConfigurationError, match="KAMUS_AUDIT_KEY"):
        load_settings("decryptor", {"KAMUS_KEYRING": keyring_json})


def test_every_problem_is_reported_at_once(keyring_json: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            "decryptor",
            {
                "KAMUS_KEYRING": keyring_json,
                "KAMUS_AUDIT_KEY": "short",
                "KAMUS_MAX_PLAINTEXT_BYTES": "-1",
                "KAMUS_DEV_MODE": "maybe",
                "KAMUS_TYPO": "1",
            },
        )
    assert len(caught.value.problems) == 4
    assert not any("short" in problem for problem in caught.value.problems)


def test_secret_values_can_come_from_files(keyring_json: str, tmp_path: Path) -> None:
    (tmp_path / "keyring").write_text(keyring_json)
    (tmp_path / "audit").write_text(AUDIT_KEY + "\n")
    settings = load_settings(
        "decryptor",
        {
            "KAMUS_KEYRING_FILE": str(tmp_path / "keyring"),
            "KAMUS_AUDIT_KEY_FILE": str(tmp_path / "audit"),
        },
    )
    assert settings.keyring == keyring_json.rstrip("\n")  # editors' final newline is dropped
    assert settings.audit_key is not None
    assert len(settings.audit_key) == 32


def test_a_value_and_its_file_together_are_refused(keyring_json: str, tmp_path: Path) -> None:
    (tmp_path / "keyring").write_text(keyring_json)
    with pytest.raises(ConfigurationError, match="not both"):
        load_settings(
            "encryptor",
            {"KAMUS_KEYRING": keyring_json, "KAMUS_KEYRING_FILE": str(tmp_path / "keyring")},
        )


def test_empty_audiences_mean_the_api_server_default(keyring_json: str) -> None:
    settings = load_settings(
        "decryptor",
        {"KAMUS_KEYRING": keyring_json, "KAMUS_AUDIT_KEY": AUDIT_KEY, "KAMUS_TOKEN_AUDIENCES": ""},
    )
    assert settings.token_audiences == ()


def test_dev_mode_needs_no_keys() -> None:
    assert load_settings("decryptor", {"KAMUS_DEV_MODE": "true"}).dev_mode


def test_the_readme_table_is_the_specification() -> None:
    # The table is rendered from the declarations: `python -m kamus_service.settings` prints it.
    readme = (Path(__file__).parents[3] / "README.md").read_text("utf-8")
    assert markdown_table() in readme


def test_the_readme_client_table_is_the_client_specification() -> None:
    # `python -m kamus_client.environment` prints it.
    readme = (Path(__file__).parents[3] / "README.md").read_text("utf-8")
    assert client_table() in readme


@pytest.mark.parametrize("item", [f for f in fields(Settings) if f.metadata], ids=lambda f: f.name)
def test_every_default_reads_back_as_itself(item: Field[Any]) -> None:
    """The default the README shows is the one the service uses when the variable is unset."""
    (variable,) = [v for v in SPEC if v.name == item.name.upper()]
    if variable.default is None:
        assert item.default is None
    else:
        assert variable.parse(variable.default) == item.default


def test_enumerated_settings_are_enums_and_accept_any_case(keyring_json: str) -> None:
    settings = load_settings(
        "decryptor",
        {
            "KAMUS_KEYRING": keyring_json,
            "KAMUS_AUDIT_KEY": AUDIT_KEY,
            "KAMUS_TOKEN_VERIFICATION": "Hybrid",
            "KAMUS_AUDIT_POLICY": "BEST-EFFORT",
            "KAMUS_LOG_LEVEL": "warning",
        },
    )
    assert settings.token_verification is TokenVerification.HYBRID
    assert settings.audit_policy is AuditPolicy.BEST_EFFORT
    assert settings.log_level is LogLevel.WARNING
    assert settings.provider is Provider.LOCAL


def test_an_unknown_enumerated_value_lists_the_choices(keyring_json: str) -> None:
    choices = "must be one of local, gcp, aws, pkcs11, vault, azure"
    with pytest.raises(ConfigurationError, match=choices):
        load_settings("encryptor", {"KAMUS_KEYRING": keyring_json, "KAMUS_PROVIDER": "hsm"})


def test_the_clients_variables_are_no_typos_for_the_services(keyring_json: str) -> None:
    environ = dict.fromkeys(client_names, "x") | {"KAMUS_KEYRING": keyring_json}
    assert load_settings("encryptor", environ).keyring == keyring_json


def test_kubernetes_service_link_variables_are_not_mistaken_for_typos(keyring_json: str) -> None:
    links = {
        "KAMUS_DECRYPTOR_SERVICE_HOST": "10.0.0.1",
        "KAMUS_DECRYPTOR_SERVICE_PORT": "80",
        "KAMUS_DECRYPTOR_SERVICE_PORT_HTTP": "80",
        "KAMUS_DECRYPTOR_PORT": "tcp://10.0.0.1:80",
        "KAMUS_DECRYPTOR_PORT_80_TCP": "tcp://10.0.0.1:80",
        "KAMUS_DECRYPTOR_PORT_80_TCP_PROTO": "tcp",
        "KAMUS_DECRYPTOR_PORT_80_TCP_PORT": "80",
        "KAMUS_DECRYPTOR_PORT_80_TCP_ADDR": "10.0.0.1",
    }
    load_settings("encryptor", {"KAMUS_KEYRING": keyring_json, **links})
    with pytest.raises(ConfigurationError, match="KAMUS_DECRYPTOR_PORTS"):
        load_settings("encryptor", {"KAMUS_KEYRING": keyring_json, "KAMUS_DECRYPTOR_PORTS": "1"})


@pytest.mark.parametrize("service", ["encryptor", "decryptor"])
def test_settings_built_in_code_without_keys_refuse_to_start(service: str) -> None:
    factory = encryptor_app if service == "encryptor" else decryptor_app
    with pytest.raises(ConfigurationError, match="required"):
        factory(Settings(service=service))  # type: ignore[arg-type]


def test_a_binary_secret_file_is_a_configuration_problem_that_quotes_nothing(
    keyring_json: str, tmp_path: Path
) -> None:
    (tmp_path / "audit.key").write_bytes(b"\x97\xfe\x00secret-bytes")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            "decryptor",
            {"KAMUS_KEYRING": keyring_json, "KAMUS_AUDIT_KEY_FILE": str(tmp_path / "audit.key")},
        )
    assert caught.value.problems == [
        f"KAMUS_AUDIT_KEY_FILE: {tmp_path / 'audit.key'} is not UTF-8 text (keys go in base64)"
    ]


def test_dev_mode_refuses_a_planted_key_file(tmp_path: Path) -> None:
    target = tmp_path / "attacker.json"
    Keyring.generate().save(target)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "keyring.json").symlink_to(target)
    settings = Settings(service="encryptor", dev_mode=True, dev_dir=tmp_path / "dev")
    with pytest.raises(ConfigurationError, match="not a private regular file"):
        encryptor_app(settings)


def test_dev_mode_shares_its_own_key_files_between_starts(tmp_path: Path) -> None:
    settings = Settings(service="decryptor", dev_mode=True, dev_dir=tmp_path / "dev")
    first = local_provider(settings).keyring.active.secret
    assert local_provider(settings).keyring.active.secret == first
    assert audit_key_from_settings(settings) == audit_key_from_settings(settings)


def test_dev_mode_shouts_only_when_it_generates_a_key_and_says_the_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(service="decryptor", dev_mode=True, dev_dir=tmp_path / "dev")
    local_provider(settings)
    first = capsys.readouterr()
    local_provider(settings)  # another worker process of the same start
    second = capsys.readouterr()
    assert first.err.count("*** DEVELOPMENT MODE: generated a new keyring") == 1
    assert "***" not in second.err
    logged = [r.getMessage() for r in caplog.records if r.name == "kamus.keys"]
    assert [m.split(" (")[0] for m in logged] == [  # every process still logs it, truthfully
        "DEVELOPMENT MODE: generated a new keyring",
        "DEVELOPMENT MODE: using the keyring",
    ]


def test_the_cluster_name_setting_binds_what_the_services_seal(keyring_json: str) -> None:
    settings = load_settings("encryptor", {"KAMUS_KEYRING": keyring_json,
                                           "KAMUS_CLUSTER_NAME": "prod-eu-1"})  # fmt: skip
    provider = local_provider(settings)
    text = sealer_from_settings(settings, provider).seal(b"x", Scope("team-a", "app"))
    assert sealer_from_settings(settings, provider).open(text).plaintext == b"x"
    with pytest.raises(InvalidCiphertextError):
        Sealer(provider).open(text)
    with pytest.raises(ConfigurationError, match="KAMUS_CLUSTER_NAME"):
        load_settings("encryptor", {"KAMUS_KEYRING": keyring_json, "KAMUS_CLUSTER_NAME": "Prod EU"})
