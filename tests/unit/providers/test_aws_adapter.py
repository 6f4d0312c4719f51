"""The AWS KMS adapter against moto's real server (backend_aws), plus error mapping.

moto cannot deny a permission or fail on purpose, so the error-mapping tests (and only they) put a
botocore Stubber in front of the adapter's client: the client never reaches the network there.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from backend_aws import REGION, SHARED_KEY, AwsBackend
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from botocore.stub import Stubber  # type: ignore[import-untyped]
from kms_backend import Backend

from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError
from kamus_kms.providers.aws import ALIAS_TAG, CONTEXT_KEY, AwsKms
from kamus_service.providers import remote_kms
from kamus_service.settings import Provider, Settings

HEADER = f"kamus:v1:aws:team-a:app:{SHARED_KEY}:".encode()
OTHER_HEADER = f"kamus:v1:aws:team-b:app:{SHARED_KEY}:".encode()
DATA_KEY = bytes(range(32))
KEY_UUID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:{REGION}:123456789012:key/{KEY_UUID}"
DENIED = (
    "User: arn:aws:sts::123456789012:assumed-role/kamus/pod is not authorized to perform: {} on "
    "resource: arn:aws:kms:eu-west-1:123456789012:key/1234abcd because no identity-based policy "
    "allows the {} action"
)


@pytest.fixture
def moto(backends: dict[str, Backend]) -> AwsBackend:
    """The session's moto KMS, holding the shared key."""
    backend = backends["aws"]
    assert isinstance(backend, AwsBackend)
    return backend


@pytest.fixture
def stubbed() -> Iterator[tuple[AwsKms, Stubber]]:
    """An adapter whose client answers only what the test stubs (it never reaches the network)."""
    kms = AwsKms(region=REGION, endpoint_url="http://127.0.0.1:9", timeout=1.0)
    with Stubber(kms._kms_client()) as stubber:
        yield kms, stubber
        stubber.assert_no_pending_responses()


def _alias() -> str:
    return f"kamus-test-{uuid.uuid4().hex[:12]}"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "key_id"),
    [
        ("kamus-shared", "alias/kamus-shared"),
        ("alias/kamus-shared", "alias/kamus-shared"),
        ("team/kamus_1", "alias/team/kamus_1"),
        (KEY_UUID, KEY_UUID),
        ("mrk-1234abcd12ab34cd56ef1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab"),
    ],
)
def test_key_names_are_aliases_unless_they_are_key_ids(name: str, key_id: str) -> None:
    assert AwsKms(region=REGION).key_id(name) == key_id


@pytest.mark.parametrize("name", [KEY_ARN, f"arn:aws:kms:{REGION}:123456789012:alias/kamus-shared"])
def test_arn_key_names_are_refused_before_any_call_with_a_hint_to_use_an_alias(name: str) -> None:
    kms = AwsKms(region=REGION, endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    calls: list[Callable[[], object]] = [
        lambda: kms.wrap(name, DATA_KEY, HEADER),
        lambda: kms.unwrap(name, b"wrapped", HEADER),
        lambda: kms.ensure_key(name),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError, match="create an alias") as raised:
            call()
        assert "ARN" in str(raised.value)


@pytest.mark.parametrize("name", ["a.b", "a@b", "alias/aws/s3", "x" * 251, "alias/"])
def test_names_that_cannot_be_aliases_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="alias name"):
        AwsKms(region=REGION).key_id(name)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"region": "Europe"}, "KAMUS_AWS_REGION"),
        ({"region": REGION, "endpoint_url": "ftp://kms"}, "KAMUS_AWS_ENDPOINT_URL"),
        ({"region": REGION, "timeout": 0.0}, "timeout"),
    ],
)
def test_bad_settings_are_refused_when_the_adapter_is_built(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AwsKms(**options)


def test_the_encryption_context_carries_the_header_and_kms_enforces_it(moto: AwsBackend) -> None:
    kms = moto.kms()
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    opened = moto.admin.decrypt(
        KeyId=f"alias/{SHARED_KEY}", CiphertextBlob=wrapped,
        EncryptionContext={CONTEXT_KEY: HEADER.decode()},
    )  # fmt: skip
    assert opened["Plaintext"] == DATA_KEY
    # moto authenticates the context (AES-GCM associated data), as KMS does: no other header,
    # and no missing context, opens it.
    for context in ({CONTEXT_KEY: OTHER_HEADER.decode()}, {}):
        with pytest.raises(ClientError, match="InvalidCiphertextException"):
            moto.admin.decrypt(CiphertextBlob=wrapped, EncryptionContext=context)
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap(SHARED_KEY, wrapped, OTHER_HEADER)
    assert kms.unwrap(SHARED_KEY, wrapped, HEADER) == DATA_KEY


def test_a_wrapped_key_made_by_another_kms_key_is_refused(moto: AwsBackend) -> None:
    kms = moto.kms()
    other = _alias()
    kms.ensure_key(other)
    wrapped = kms.wrap(SHARED_KEY, DATA_KEY, HEADER)
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap(other, wrapped, HEADER)


def test_ensure_key_creates_one_tagged_symmetric_key_behind_the_alias(moto: AwsBackend) -> None:
    name = _alias()
    kms = moto.kms()
    kms.ensure_key(name)
    kms.ensure_key(name)
    metadata = moto.admin.describe_key(KeyId=f"alias/{name}")["KeyMetadata"]
    assert metadata["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert metadata["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert "Kamus per-service-account key" in metadata["Description"]
    tags = moto.admin.list_resource_tags(KeyId=metadata["KeyId"])["Tags"]
    assert {"TagKey": "kamus:managed", "TagValue": "true"} in tags
    assert {"TagKey": ALIAS_TAG, "TagValue": f"alias/{name}"} in tags
    assert len(_keys_tagged(moto, f"alias/{name}")) == 1


class _RacingClient:
    """A client that lets its DescribeKey answer only when the other replica has had its own."""

    def __init__(self, client: Any, barrier: threading.Barrier) -> None:
        self._client = client
        self._barrier = barrier

    def describe_key(self, **options: Any) -> Any:
        try:
            return self._client.describe_key(**options)
        finally:
            self._barrier.wait(timeout=10)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_replicas_racing_to_create_a_key_end_with_one_alias_and_agree(
    moto: AwsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _alias()
    barrier = threading.Barrier(2)
    replicas = [moto.kms(timeout=5.0) for _ in range(2)]
    for replica in replicas:
        racing = _RacingClient(replica._kms_client(), barrier)
        monkeypatch.setattr(replica, "_kms_client", lambda racing=racing: racing)
    # Both see "no such alias" before either creates one: both create a key, one alias wins.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda replica: replica.ensure_key(name), replicas))
    aliases = moto.admin.list_aliases()["Aliases"]
    assert [a["AliasName"] for a in aliases].count(f"alias/{name}") == 1
    states = sorted(key["KeyState"] for key in _keys_tagged(moto, f"alias/{name}"))
    assert states == ["Enabled", "PendingDeletion"]
    first, second = replicas
    assert second.unwrap(name, first.wrap(name, DATA_KEY, HEADER), HEADER) == DATA_KEY
    assert first.unwrap(name, second.wrap(name, DATA_KEY, HEADER), HEADER) == DATA_KEY


def _keys_tagged(moto: AwsBackend, alias: str) -> list[dict[str, Any]]:
    found = []
    for key in moto.admin.list_keys(Limit=1000)["Keys"]:
        tags = moto.admin.list_resource_tags(KeyId=key["KeyId"])["Tags"]
        if {"TagKey": ALIAS_TAG, "TagValue": alias} in tags:
            found.append(moto.admin.describe_key(KeyId=key["KeyId"])["KeyMetadata"])
    return found


def test_after_a_manual_rotation_only_a_tagged_previous_key_opens_old_wrapped_keys(
    moto: AwsBackend,
) -> None:
    name = _alias()
    old_key = moto.admin.create_key()["KeyMetadata"]["KeyId"]
    moto.admin.create_alias(AliasName=f"alias/{name}", TargetKeyId=old_key)
    kms = moto.kms()
    old = kms.wrap(name, DATA_KEY, HEADER)
    new_key = moto.admin.create_key()["KeyMetadata"]["KeyId"]
    moto.admin.update_alias(AliasName=f"alias/{name}", TargetKeyId=new_key)
    with pytest.raises(InvalidCiphertextError):
        moto.kms().unwrap(name, old, HEADER)
    moto.admin.tag_resource(
        KeyId=old_key, Tags=[{"TagKey": ALIAS_TAG, "TagValue": f"alias/{name}"}]
    )
    assert moto.kms().unwrap(name, old, HEADER) == DATA_KEY
    assert moto.kms().unwrap(name, kms.wrap(name, DATA_KEY, HEADER), HEADER) == DATA_KEY
    # The tag names one alias: it does not let that key's wrapped keys open under another name.
    with pytest.raises(InvalidCiphertextError):
        moto.kms().unwrap(SHARED_KEY, old, HEADER)


def test_rotation_on_demand_keeps_the_key_id_and_old_wrapped_keys_open(moto: AwsBackend) -> None:
    # AWS's own rotation, the one we recommend. moto only records it (its key material does not
    # change), so this proves the API flow and that Kamus needs nothing for it, not the crypto.
    name = _alias()
    kms = moto.kms()
    kms.ensure_key(name)
    old = kms.wrap(name, DATA_KEY, HEADER)
    key = moto.admin.describe_key(KeyId=f"alias/{name}")["KeyMetadata"]["KeyId"]
    moto.admin.rotate_key_on_demand(KeyId=key)
    new = kms.wrap(name, DATA_KEY, HEADER)
    fresh = moto.kms()
    assert fresh.unwrap(name, old, HEADER) == fresh.unwrap(name, new, HEADER) == DATA_KEY
    assert len(moto.admin.list_key_rotations(KeyId=key)["Rotations"]) == 1


def _answers(stubber: Stubber, *answers: tuple[str, str | dict[str, Any]]) -> None:
    """Stub `answers`: (method, error code) or (method, response)."""
    for method, answer in answers:
        if isinstance(answer, dict):
            stubber.add_response(method, answer)
        else:
            permission = f"kms:{method.title().replace('_', '')}"
            message = DENIED.format(permission, permission) if answer == "AccessDenied" else ""
            code = "AccessDeniedException" if answer == "AccessDenied" else answer
            stubber.add_client_error(method, service_error_code=code, service_message=message)


CREATED = {"KeyMetadata": {"KeyId": KEY_UUID}}


@pytest.mark.parametrize(
    ("operation", "answers", "permission"),
    [
        ("wrap", [("encrypt", "AccessDenied")], "kms:Encrypt"),
        ("unwrap", [("decrypt", "AccessDenied")], "kms:Decrypt"),
        ("ensure_key", [("describe_key", "AccessDenied")], "kms:DescribeKey"),
        ("ensure_key",
         [("describe_key", "NotFoundException"), ("create_key", "AccessDenied")],
         "kms:CreateKey (and kms:TagResource"),
        ("ensure_key",
         [("describe_key", "NotFoundException"), ("create_key", CREATED),
          ("create_alias", "AccessDenied")],
         "kms:CreateAlias"),
        ("ensure_key",
         [("describe_key", "NotFoundException"), ("create_key", CREATED),
          ("create_alias", "AlreadyExistsException"), ("schedule_key_deletion", "AccessDenied")],
         "kms:ScheduleKeyDeletion"),
    ],
)  # fmt: skip
def test_access_denied_is_unavailable_and_names_the_missing_permission(
    stubbed: tuple[AwsKms, Stubber],
    operation: str,
    answers: list[tuple[str, str | dict[str, Any]]],
    permission: str,
) -> None:
    kms, stubber = stubbed
    _answers(stubber, *answers)
    calls: dict[str, Callable[[], object]] = {
        "wrap": lambda: kms.wrap(SHARED_KEY, DATA_KEY, HEADER),
        "unwrap": lambda: kms.unwrap(SHARED_KEY, b"wrapped", HEADER),
        "ensure_key": lambda: kms.ensure_key("kamus-0123456789abcdef"),
    }
    with pytest.raises(UnavailableError) as raised:
        calls[operation]()
    assert f"denied {permission}" in str(raised.value)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ThrottlingException", "retry"),
        ("KMSInternalException", "retry"),
        ("DependencyTimeoutException", "retry"),
        ("KeyUnavailableException", "retry"),
        ("NotFoundException", "does not exist"),
        ("DisabledException", "is disabled"),
        ("KMSInvalidStateException", "pending deletion"),
        ("UnrecognizedClientException", "credentials"),
        ("SomethingNewException", "SomethingNewException"),
    ],
)
def test_kms_errors_on_wrap_are_unavailable(
    stubbed: tuple[AwsKms, Stubber], code: str, message: str
) -> None:
    kms, stubber = stubbed
    _answers(stubber, ("encrypt", code))
    with pytest.raises(UnavailableError, match=message):
        kms.wrap(SHARED_KEY, DATA_KEY, HEADER)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("InvalidCiphertextException", InvalidCiphertextError),
        ("IncorrectKeyException", InvalidCiphertextError),
        ("InvalidKeyUsageException", InvalidCiphertextError),
        ("NotFoundException", InvalidCiphertextError),
        ("ValidationException", InvalidCiphertextError),
        ("ThrottlingException", UnavailableError),
        ("KMSInternalException", UnavailableError),
        ("DisabledException", UnavailableError),
        ("KMSInvalidStateException", UnavailableError),
        ("SomethingNewException", UnavailableError),
    ],
)
def test_kms_errors_on_unwrap_are_refusals_or_unavailable(
    stubbed: tuple[AwsKms, Stubber], code: str, error: type[Exception]
) -> None:
    kms, stubber = stubbed
    _answers(stubber, ("decrypt", code))
    # A key id, not an alias: no second Decrypt looks for a previous key of an alias.
    with pytest.raises(error):
        kms.unwrap(KEY_UUID, b"wrapped", HEADER)


def test_a_wrapped_key_of_a_key_we_cannot_see_is_refused_not_unavailable(
    stubbed: tuple[AwsKms, Stubber],
) -> None:
    kms, stubber = stubbed
    for _ in range(2):
        stubber.add_client_error(
            "decrypt", service_error_code="AccessDeniedException",
            service_message="The ciphertext refers to a customer master key that does not "
            "exist, does not exist in this region, or you are not allowed to access.",
        )  # fmt: skip
    with pytest.raises(InvalidCiphertextError):
        kms.unwrap(SHARED_KEY, b"wrapped", HEADER)


def test_readiness_needs_no_extra_permission(stubbed: tuple[AwsKms, Stubber]) -> None:
    kms, stubber = stubbed
    _answers(stubber, ("list_aliases", "AccessDenied"), ("list_aliases", "ThrottlingException"))
    kms.check_ready()
    with pytest.raises(UnavailableError, match="retry"):
        kms.check_ready()


def test_an_unreachable_kms_is_unavailable(moto: AwsBackend) -> None:
    moto.kms().check_ready()
    kms = AwsKms(region=REGION, endpoint_url=f"http://127.0.0.1:{_closed_port()}", timeout=1.0)
    for call in (kms.check_ready, lambda: kms.wrap(SHARED_KEY, DATA_KEY, HEADER)):
        with pytest.raises(UnavailableError, match="unreachable"):
            call()


def test_missing_credentials_are_unavailable_and_say_where_credentials_come_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(name, raising=False)  # fmt: skip
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    kms = AwsKms(region=REGION, endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(UnavailableError, match="no AWS credentials found: use IRSA"):
        kms.wrap(SHARED_KEY, DATA_KEY, HEADER)


def test_each_process_makes_its_own_client(monkeypatch: pytest.MonkeyPatch) -> None:
    kms = AwsKms(region=REGION)
    parent = kms._kms_client()
    assert kms._kms_client() is parent
    # What a forked gunicorn worker looks like to the adapter.
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert kms._kms_client() is not parent


def test_without_boto3_the_module_raises_import_error_and_settings_name_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "kamus_kms.providers.aws")
    with pytest.raises(ImportError):
        importlib.import_module("kamus_kms.providers.aws")
    settings = Settings(service="encryptor", provider=Provider.AWS, aws_region=REGION)
    with pytest.raises(ConfigurationError, match=r"pip install 'kamus-kms\[aws\]'"):
        remote_kms(settings)
