"""AWS KMS: data keys wrapped by symmetric KMS keys, named by alias, bound to the header.

A key name ``n`` in a ciphertext header stands for the alias ``alias/n`` (``alias/n`` itself is
accepted too, as is a bare key id such as ``1234abcd-12ab-34cd-56ef-1234567890ab``). Key ARNs
contain ':' and cannot appear in a header: use an alias.

Every Encrypt and Decrypt carries the encryption context ``{"kamus:header": <header text>}``. KMS
authenticates it, so a wrapped data key opens only under the header it was made for (and
CloudTrail shows which scope each call served). Decrypt always names the key (``KeyId``), so KMS
itself refuses a wrapped key made by any other key.

Rotation: AWS's own rotation (automatic, or ``rotate-key-on-demand``) keeps the key id, and
nothing changes for Kamus. A manual rotation re-points the alias to a new key; Decrypt naming the
alias then fails for wrapped keys made by the previous key, so Kamus asks once more without
``KeyId`` and keeps the answer only when the key that made the wrapped key lives in the same
account and region as the alias's key *and* carries the tag ``kamus:alias=<alias>``.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3  # type: ignore[import-untyped]
from botocore import exceptions as botocore_exceptions  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from kamus_kms.envelope import RemoteKms
from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError

CONTEXT_KEY = "kamus:header"
ALIAS_TAG = "kamus:alias"
MANAGED_TAG = "kamus:managed"
ALIAS_PREFIX = "alias/"
# What a region name looks like (us-east-1, eu-central-2, us-gov-west-1, eusc-de-east-1...).
REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-[0-9]{1,2}")
# Key ids: a UUID, or a multi-Region key id.
KEY_ID = re.compile(
    r"(?:mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
# Alias names allow A-Z a-z 0-9 / _ -, up to 256 characters with the `alias/` prefix.
ALIAS_NAME = re.compile(r"[A-Za-z0-9/_-]{1,250}")
# The tail of an ARN that names a KMS key: `arn:<partition>:kms:<region>:<account>:key/<id>`.
_KEY_ARN_TAIL = re.compile(r":key/[A-Za-z0-9-]+\Z")

ENCRYPT_PERMISSION = "kms:Encrypt"
DECRYPT_PERMISSION = "kms:Decrypt"
DESCRIBE_PERMISSION = "kms:DescribeKey"
CREATE_KEY_PERMISSION = "kms:CreateKey (and kms:TagResource, for the tags it creates the key with)"
CREATE_ALIAS_PERMISSION = "kms:CreateAlias"
DELETE_PERMISSION = "kms:ScheduleKeyDeletion"
TAGS_PERMISSION = "kms:ListResourceTags"
LIST_ALIASES_PERMISSION = "kms:ListAliases"

_T = TypeVar("_T")
_TRANSIENT = frozenset({
    "ThrottlingException", "KMSInternalException", "DependencyTimeoutException",
    "KeyUnavailableException", "LimitExceededException", "ServiceUnavailableException",
    "InternalFailure", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
})  # fmt: skip
_BAD_CREDENTIALS = frozenset({
    "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
    "ExpiredToken", "IncompleteSignature", "MissingAuthenticationToken", "InvalidClientTokenId",
    "SignatureDoesNotMatch",
})  # fmt: skip
# Decrypt answers meaning "this wrapped key is not one KMS will open with this key".
_REFUSED = frozenset({
    "InvalidCiphertextException", "InvalidKeyUsageException", "NotFoundException",
    "ValidationException",
})  # fmt: skip
_CREDENTIAL_OPERATIONS = frozenset(
    {"AssumeRoleWithWebIdentity", "AssumeRole", "GetRoleCredentials"}
)
_ALIAS_PROPAGATION_ATTEMPTS = 3
# In `expected`: let the SDK's own refusal of a request's parameters through.
_MALFORMED = "ParamValidationError"


class AwsKms(RemoteKms):
    """Symmetric AWS KMS keys of one region, named by alias."""

    name = "aws"

    def __init__(
        self, *, region: str, endpoint_url: str | None = None, timeout: float = 5.0
    ) -> None:
        if not REGION.fullmatch(region):
            raise ConfigurationError(f"KAMUS_AWS_REGION {region!r} is not an AWS region name")
        if endpoint_url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint_url):
            raise ConfigurationError("KAMUS_AWS_ENDPOINT_URL must be an http:// or https:// URL")
        if timeout <= 0:
            raise ConfigurationError("the AWS KMS timeout must be positive")
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            user_agent_extra="kamus",
        )
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._client: Any = None
        self._arn_prefixes: dict[str, str] = {}
        self._previous_keys: set[tuple[str, str]] = set()

    def check_key_name(self, key_name: str) -> None:
        self.key_id(key_name)

    def key_id(self, key_name: str) -> str:
        """The KMS KeyId of header key name `key_name`; ConfigurationError when it has none."""
        if ":" in key_name:
            raise ConfigurationError(
                f"{key_name!r} looks like an ARN, which cannot be a Kamus key name (':' is the "
                "ciphertext header's separator): create an alias for the key (aws kms "
                "create-alias --alias-name alias/kamus-shared --target-key-id <key id>) and "
                "use its name, e.g. KAMUS_KMS_KEY=kamus-shared"
            )
        if KEY_ID.fullmatch(key_name):
            return key_name
        alias = key_name if key_name.startswith(ALIAS_PREFIX) else ALIAS_PREFIX + key_name
        name = alias.removeprefix(ALIAS_PREFIX)
        if not ALIAS_NAME.fullmatch(name) or name.startswith("aws/"):
            raise ConfigurationError(
                f"{key_name!r} is not a usable AWS KMS alias name (1-250 of A-Z a-z 0-9 / _ -, "
                "not under the AWS-reserved alias/aws/) nor a key id"
            )
        return alias

    def wrap(self, key_name: str, data_key: bytes, associated_data: bytes) -> bytes:
        key_id = self.key_id(key_name)
        context = _context(associated_data)
        response = self._call(
            ENCRYPT_PERMISSION, f"key {key_id}",
            lambda kms: kms.encrypt(KeyId=key_id, Plaintext=data_key, EncryptionContext=context),
        )  # fmt: skip
        return bytes(response["CiphertextBlob"])

    def unwrap(self, key_name: str, wrapped: bytes, associated_data: bytes) -> bytes:
        key_id = self.key_id(key_name)
        context = _context(associated_data)
        answer = self._decrypt(wrapped, context, key_id)
        if answer is None and key_id.startswith(ALIAS_PREFIX):
            # Made by another key than the alias's: only a previous key of the alias may open it.
            answer = self._decrypt(wrapped, context, None)
            if answer is not None and not self._was_behind(key_id, answer[1]):
                answer = None
        if answer is None:
            raise InvalidCiphertextError
        return answer[0]

    def ensure_key(self, key_name: str) -> None:
        key_id = self.key_id(key_name)
        try:
            self._call(
                DESCRIBE_PERMISSION, f"key {key_id}",
                lambda kms: kms.describe_key(KeyId=key_id), expected={"NotFoundException"},
            )  # fmt: skip
        except botocore_exceptions.ClientError as exc:
            if not key_id.startswith(ALIAS_PREFIX):
                raise UnavailableError(
                    f"AWS KMS has no key {key_id} in region {self.region}; only alias names "
                    "can be created on demand"
                ) from exc
        else:
            return
        tags = [
            {"TagKey": MANAGED_TAG, "TagValue": "true"},
            {"TagKey": ALIAS_TAG, "TagValue": key_id},
        ]
        created = self._call(
            CREATE_KEY_PERMISSION, f"a key for {key_id}",
            lambda kms: kms.create_key(
                Description=f"Kamus per-service-account key ({key_id}), created on first use",
                KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT", Tags=tags,
            ),
        )  # fmt: skip
        new_key = str(created["KeyMetadata"]["KeyId"])
        if self._create_alias(key_id, new_key):
            return
        # Another replica created the alias first: both use its key, and this one is an orphan
        # nobody ever encrypted with.
        self._call(
            DELETE_PERMISSION, f"key {new_key} (an unused duplicate for {key_id}, delete it)",
            lambda kms: kms.schedule_key_deletion(KeyId=new_key, PendingWindowInDays=7),
        )  # fmt: skip

    def check_ready(self) -> None:
        try:
            self._call(
                LIST_ALIASES_PERMISSION, "the aliases of the region",
                lambda kms: kms.list_aliases(Limit=1), expected={"AccessDeniedException"},
            )  # fmt: skip
        except botocore_exceptions.ClientError:
            # kms:ListAliases is not needed to serve requests: being denied it proves that KMS
            # is reachable and accepts our credentials, which is all readiness asks.
            return

    def _create_alias(self, alias: str, key: str) -> bool:
        """Point the new alias at `key`; False when another replica's alias exists already."""
        attempt = 0
        while True:
            try:
                self._call(
                    CREATE_ALIAS_PERMISSION, f"alias {alias}",
                    lambda kms: kms.create_alias(AliasName=alias, TargetKeyId=key),
                    expected={"AlreadyExistsException", "NotFoundException"},
                )  # fmt: skip
            except botocore_exceptions.ClientError as exc:
                if _code(exc) == "AlreadyExistsException":
                    return False
                attempt += 1
                if attempt == _ALIAS_PROPAGATION_ATTEMPTS:
                    raise UnavailableError(
                        f"AWS KMS does not yet know the new key {key} for {alias}; retry"
                    ) from exc
                # A key just created may take a moment to be visible to CreateAlias.
                time.sleep(0.2 * attempt)
            else:
                return True

    def _decrypt(
        self, blob: bytes, context: dict[str, str], key_id: str | None
    ) -> tuple[bytes, str] | None:
        """Plaintext and key ARN; None when KMS says another key made `blob`."""
        options: dict[str, Any] = {"CiphertextBlob": blob, "EncryptionContext": context}
        target = "the key that made a wrapped data key"
        if key_id is not None:
            options["KeyId"] = key_id
            target = f"key {key_id}"
        try:
            response = self._call(
                DECRYPT_PERMISSION, target,
                lambda kms: kms.decrypt(**options),
                expected={"AccessDeniedException", "IncorrectKeyException", _MALFORMED, *_REFUSED},
            )  # fmt: skip
        except botocore_exceptions.ParamValidationError as exc:
            raise InvalidCiphertextError from exc
        except botocore_exceptions.ClientError as exc:
            code = _code(exc)
            if code in _REFUSED:
                raise InvalidCiphertextError from exc
            if code == "AccessDeniedException" and _is_permission_denial(exc):
                raise self._unavailable(exc, DECRYPT_PERMISSION, target) from exc
            # IncorrectKeyException, or KMS's "the ciphertext refers to a key that does not
            # exist or you cannot access".
            return None
        return bytes(response["Plaintext"]), str(response["KeyId"])

    def _was_behind(self, alias: str, key_arn: str) -> bool:
        """Whether `key_arn` is a previous key of `alias`: same account and region, tagged."""
        prefix = self._arn_prefixes.get(alias)
        if prefix is None:
            metadata = self._call(
                DESCRIBE_PERMISSION, f"key {alias}", lambda kms: kms.describe_key(KeyId=alias)
            )["KeyMetadata"]
            prefix = _KEY_ARN_TAIL.sub(":key/", str(metadata["Arn"]))
            with self._lock:
                self._arn_prefixes[alias] = prefix
        if not key_arn.startswith(prefix):
            return False
        if (alias, key_arn) in self._previous_keys:
            return True
        tags: list[dict[str, str]] = []
        paging: dict[str, str] = {}
        while True:
            page = self._call(
                TAGS_PERMISSION, f"key {key_arn}",
                functools.partial(_list_tags, key_arn=key_arn, paging=paging),
            )  # fmt: skip
            tags.extend(page["Tags"])
            if not page.get("Truncated"):
                break
            paging = {"Marker": page["NextMarker"]}
        if {"TagKey": ALIAS_TAG, "TagValue": alias} not in tags:
            return False
        with self._lock:
            self._previous_keys.add((alias, key_arn))
        return True

    def _kms_client(self) -> Any:
        # gunicorn forks workers after the app is built: each process makes its own client.
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                session = boto3.session.Session()
                self._client = session.client(
                    "kms",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=self._config,
                )
                self._pid = os.getpid()
            return self._client

    def _call(
        self,
        permission: str,
        target: str,
        call: Callable[[Any], _T],
        *,
        expected: set[str] | frozenset[str] = frozenset(),
    ) -> _T:
        """`call` on this process's client, every SDK error but `expected` codes made ours."""
        try:
            return call(self._kms_client())
        except botocore_exceptions.ClientError as exc:
            if _code(exc) in expected:
                raise
            raise self._unavailable(exc, permission, target) from exc
        except botocore_exceptions.ParamValidationError:
            if _MALFORMED in expected:
                raise
            raise UnavailableError(f"AWS KMS request for {target} was malformed") from None
        except (
            botocore_exceptions.NoCredentialsError,
            botocore_exceptions.PartialCredentialsError,
        ) as exc:
            raise UnavailableError(
                "no AWS credentials found: use IRSA or EKS Pod Identity for the service's "
                "Kubernetes service account, an instance profile, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            ) from exc
        except (
            botocore_exceptions.CredentialRetrievalError,
            botocore_exceptions.TokenRetrievalError,
        ) as exc:
            raise UnavailableError("could not obtain AWS credentials; retry") from exc
        except (
            botocore_exceptions.ConnectTimeoutError,
            botocore_exceptions.ReadTimeoutError,
        ) as exc:
            raise UnavailableError(
                f"AWS KMS did not answer within {self.timeout:g} s for {target}; retry"
            ) from exc
        except (botocore_exceptions.ConnectionError, botocore_exceptions.HTTPClientError) as exc:
            where = self.endpoint_url or f"the {self.region} endpoint"
            raise UnavailableError(f"AWS KMS is unreachable at {where}") from exc
        except botocore_exceptions.BotoCoreError as exc:
            raise UnavailableError(
                f"AWS KMS call for {target} failed ({type(exc).__name__})"
            ) from exc

    def _unavailable(
        self, exc: botocore_exceptions.ClientError, permission: str, target: str
    ) -> UnavailableError:
        code = _code(exc)
        if getattr(exc, "operation_name", None) in _CREDENTIAL_OPERATIONS:
            return UnavailableError(
                f"AWS STS refused the service's credentials ({exc.operation_name}: {code}): check "
                "the IAM role's trust policy for the Kubernetes service account"
            )
        if code in {"AccessDeniedException", "AccessDenied"}:
            return UnavailableError(
                f"AWS KMS denied {permission} on {target}: allow it to the service's IAM role "
                "(in its IAM policy and in the key policy)"
            )
        if code in _BAD_CREDENTIALS:
            return UnavailableError(f"AWS rejected the service's credentials ({code})")
        if code == "NotFoundException":
            return UnavailableError(
                f"AWS KMS has no {target} in region {self.region}: the key or alias does not exist"
            )
        if code == "DisabledException":
            return UnavailableError(f"AWS KMS {target} is disabled: enable it")
        if code == "KMSInvalidStateException":
            return UnavailableError(
                f"AWS KMS {target} cannot be used in its current state (pending deletion?)"
            )
        if code in _TRANSIENT:
            return UnavailableError(f"AWS KMS did not answer for {target} ({code}); retry")
        return UnavailableError(f"AWS KMS refused the request for {target} ({code})")


def _context(associated_data: bytes) -> dict[str, str]:
    # The header is ASCII by construction (the ciphertext parser refuses anything else), and an
    # encryption context is a map of strings: the header text goes in as it is.
    try:
        return {CONTEXT_KEY: associated_data.decode("ascii")}
    except UnicodeDecodeError:
        raise InvalidCiphertextError from None


def _list_tags(kms: Any, *, key_arn: str, paging: dict[str, str]) -> Any:
    return kms.list_resource_tags(KeyId=key_arn, **paging)


def _code(exc: botocore_exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _is_permission_denial(exc: botocore_exceptions.ClientError) -> bool:
    # IAM and key policy denials read "... is not authorized to perform: kms:Decrypt ...";
    # KMS's other AccessDeniedException on Decrypt ("The ciphertext refers to a customer master
    # key that does not exist, ... or you are not allowed to access") is about the wrapped key.
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return "not authorized to perform" in message
