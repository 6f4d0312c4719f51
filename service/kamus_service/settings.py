"""Every KAMUS_* environment variable, in one typed specification.

Settings are parsed once at start-up; every problem is collected and reported together, and the
process refuses to start. Secret values also accept ``<NAME>_FILE`` (a path), so the chart can mount
Kubernetes Secrets as files instead of putting them in the environment.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from kamus_client import environment
from kamus_client.errors import InputError
from kamus_kms.errors import ConfigurationError, InvalidScopeError
from kamus_kms.legacy import dotnet_base64
from kamus_kms.provider import KeyMode
from kamus_kms.scope import Scope

PREFIX = "KAMUS_"
# What each remote provider cannot start without (besides the key mode's own needs).
_PROVIDER_REQUIRES = {
    "gcp": ("gcp_key_ring",),
    "aws": ("aws_region",),
    "pkcs11": ("pkcs11_library", "pkcs11_token_label", "pkcs11_pin"),
    "vault": ("vault_addr", "vault_token"),
    "azure": ("azure_vault_url",),
}
Service = Literal["encryptor", "decryptor"]
BOTH: tuple[Service, ...] = ("encryptor", "decryptor")
DECRYPTOR: tuple[Service, ...] = ("decryptor",)
ENCRYPTOR: tuple[Service, ...] = ("encryptor",)


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be zero or a positive number")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


_CLUSTER = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")


def _cluster_name(text: str) -> str:
    name = text.strip()
    if name and not _CLUSTER.fullmatch(name):
        raise ValueError("must be 1-63 lowercase letters, digits, '-' or '.'")
    return name


def _object_reference(text: str) -> str:
    namespace, _, name = text.strip().partition("/")
    try:
        Scope(namespace, name)  # the same rules: a DNS-1123 label, then a DNS-1123 subdomain
    except InvalidScopeError as exc:
        raise ValueError("must be NAMESPACE/NAME of a Kubernetes object") from exc
    return f"{namespace}/{name}"


def _audiences(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _legacy_key(text: str) -> bytes:
    # Kamus read its key with .NET's base64 decoder, which skips white space anywhere in it.
    try:
        key = dotnet_base64(text)
    except binascii.Error as exc:
        raise ValueError("must be base64") from exc
    if len(key) < 32:
        raise ValueError("must hold at least 32 bytes")
    return key


def _base64_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError("must be base64") from exc
    if len(key) < 32:
        raise ValueError("must hold at least 32 bytes")
    return key


class Provider(StrEnum):
    """Where the keys are (docs/PROVIDERS.md)."""

    LOCAL = "local"
    GCP = "gcp"
    AWS = "aws"
    PKCS11 = "pkcs11"
    VAULT = "vault"
    AZURE = "azure"


class AzureCredential(StrEnum):
    """How the azure provider gets its tokens (azure-identity)."""

    DEFAULT = "default"
    WORKLOAD_IDENTITY = "workload-identity"
    MANAGED_IDENTITY = "managed-identity"
    CLIENT_SECRET = "client-secret"  # noqa: S105 - a mode name


class AzureKeyType(StrEnum):
    """The type of Key Vault key the azure provider wraps with (and creates)."""

    RSA = "RSA"
    RSA_HSM = "RSA-HSM"
    OCT_HSM = "oct-HSM"


class TokenVerification(StrEnum):
    """How the decryptor checks a token."""

    TOKENREVIEW = "tokenreview"
    HYBRID = "hybrid"


class AuditPolicy(StrEnum):
    """What happens to a decrypt whose audit record cannot be written."""

    FAIL_CLOSED = "fail-closed"
    BEST_EFFORT = "best-effort"


class LogLevel(StrEnum):
    """How much the services log."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _enum(kind: type[StrEnum]) -> Callable[[str], StrEnum]:
    def parse(text: str) -> StrEnum:
        wanted = text.strip().lower()
        for member in kind:
            if member.value.lower() == wanted:
                return member
        raise ValueError("must be one of " + ", ".join(member.value for member in kind))

    return parse


def _var(
    default: Any,
    help: str,
    *,
    parse: Callable[[str], Any] | None = None,
    services: tuple[Service, ...] = BOTH,
    secret: bool = False,
    shown: str | None = None,
) -> Any:
    """Declare one setting: a field of :class:`Settings` whose metadata is its variable.

    ``parse`` defaults from the default's type (bool, Path, str, an enum); ``shown`` replaces the
    default in the README table (``— (required)``). ``help`` is Markdown, as the README shows it.
    """
    if parse is None:
        if isinstance(default, bool):
            parse = _boolean
        elif isinstance(default, StrEnum):
            parse = _enum(type(default))
        elif isinstance(default, Path):
            parse = Path
        elif default is None or isinstance(default, str):
            parse = str
        else:
            raise TypeError(f"give the parser of a {type(default).__name__} setting")
    metadata = {"parse": parse, "help": help, "services": services, "secret": secret}
    return field(default=default, metadata={**metadata, "shown": shown})


# One declaration per setting: its name (KAMUS_ + the field name), type, default, parser, help,
# services and secrecy. SPEC, load_settings and the README table all derive from these fields.
@dataclass(frozen=True, slots=True)
class Settings:
    """Parsed settings of one service."""

    service: Service
    dev_mode: bool = _var(
        False,
        "Development mode: missing keys are generated into `KAMUS_DEV_DIR`, loudly. Never in "
        "production.",
    )
    dev_dir: Path = _var(Path(".kamus-dev"), "Where development mode keeps the keys it generated.")
    provider: Provider = _var(
        Provider.LOCAL,
        "Key provider: `local` (the keyring of `KAMUS_KEYRING`), `gcp`, `aws`, `pkcs11`, "
        "`vault` or `azure` ([docs/PROVIDERS.md](docs/PROVIDERS.md)).",
    )
    keyring: str | None = _var(
        None,
        "The local keyring as JSON ([docs/FORMAT.md](docs/FORMAT.md)); required for the local "
        "provider unless in development mode.",
        secret=True,
        shown="— (required)",
    )
    cluster_name: str = _var(
        "",
        "Binds every ciphertext to this cluster: set a name per cluster (the same on its "
        "encryptor and decryptor) and a ciphertext moved to another cluster does not open there, "
        "even with the same keys. Empty: no cluster binding.",
        parse=_cluster_name,
    )
    kms_key_mode: KeyMode = _var(
        KeyMode.SHARED,
        "Remote providers: `shared` uses `KAMUS_KMS_KEY` for every scope; `per-service-account` "
        "uses one KMS key per namespace + service account, created on demand and named by a keyed "
        "hash.",
    )
    kms_key: str | None = _var(
        None, "Remote providers, shared mode: the KMS key's name (see docs/PROVIDERS.md)."
    )
    kms_naming_key: bytes | None = _var(
        None,
        "Remote providers, per-service-account mode: base64 key (32+ bytes) for the keyed hash "
        "that names each service account's KMS key.",
        parse=_base64_key,
        secret=True,
    )
    kms_data_key_cache_seconds: float = _var(
        300.0,
        "How long an unwrapped data key is reused for the same ciphertext; 0 disables.",
        parse=_non_negative_float,
    )
    kms_data_key_cache_size: int = _var(
        10000, "Most unwrapped data keys kept per worker process.", parse=_positive_int
    )
    kms_timeout_seconds: float = _var(
        5.0, "Timeout of one KMS call; beyond it the request gets 503.", parse=_positive_float
    )
    gcp_key_ring: str | None = _var(None, "gcp: the key ring, `projects/P/locations/L/keyRings/R`.")
    gcp_endpoint: str | None = _var(None, "gcp: KMS API endpoint `host:port` (default: Google's).")
    gcp_insecure_endpoint: bool = _var(
        False,
        "gcp: plaintext gRPC to `KAMUS_GCP_ENDPOINT`, without credentials. Local test servers "
        "only.",
    )
    aws_region: str | None = _var(None, "aws: the KMS region.")
    aws_endpoint_url: str | None = _var(None, "aws: KMS endpoint URL (default: AWS's).")
    pkcs11_library: Path | None = _var(
        None, "pkcs11: path of the PKCS#11 module (.so).", parse=Path
    )
    pkcs11_token_label: str | None = _var(None, "pkcs11: label of the token holding the keys.")
    pkcs11_pin: str | None = _var(None, "pkcs11: user PIN of the token.", secret=True)
    vault_addr: str | None = _var(None, "vault: Vault or OpenBao address, e.g. https://vault:8200.")
    vault_token: str | None = _var(
        None, "vault: token allowed to use the transit keys.", secret=True
    )
    vault_transit_mount: str = _var("transit", "vault: mount path of the transit engine.")
    vault_ca_cert: Path | None = _var(
        None, "vault: CA bundle to verify the server (default: system CAs).", parse=Path
    )
    azure_vault_url: str | None = _var(
        None,
        "azure: the vault's URL, `https://NAME.vault.azure.net` (or a Managed HSM's, "
        "`https://NAME.managedhsm.azure.net`).",
    )
    azure_key_type: AzureKeyType = _var(
        AzureKeyType.RSA,
        "azure: `RSA` or `RSA-HSM` (a vault; wrapping with RSA-OAEP-256) or `oct-HSM` (a "
        "Managed HSM; AES key wrap): the type the keys must have and the per-service-account "
        "mode creates.",
    )
    azure_credential: AzureCredential = _var(
        AzureCredential.DEFAULT,
        "azure: `workload-identity` (AKS; the variables its webhook injects), "
        "`managed-identity`, `client-secret` (`KAMUS_AZURE_TENANT_ID`, `KAMUS_AZURE_CLIENT_ID`, "
        "`KAMUS_AZURE_CLIENT_SECRET`) or `default` (azure-identity's chain, those three first).",
    )
    azure_tenant_id: str | None = _var(None, "azure: the Entra ID tenant (client-secret).")
    azure_client_id: str | None = _var(
        None, "azure: the application (client-secret) or user-assigned identity's client id."
    )
    azure_client_secret: str | None = _var(
        None, "azure: the application's client secret (client-secret).", secret=True
    )
    azure_authority_host: str | None = _var(
        None,
        "azure: the token service, when not Microsoft's public cloud "
        "(`https://login.microsoftonline.us`, Azure Stack, a local stand-in).",
    )
    azure_ca_cert: Path | None = _var(
        None,
        "azure: CA bundle to verify the vault and token service (default: system CAs).",
        parse=Path,
    )
    azure_verify_challenge_resource: bool = _var(
        True,
        "azure: check that the vault's authentication challenge names a resource of the "
        "vault's own domain before sending it a token. Turn off only for a vault stand-in on an "
        "IP address.",
    )
    web_page: bool = _var(
        True,
        "Serve the encrypt page to browsers at `/` (namespace, service account, secret → "
        "ciphertext and its ConfigMap; no third-party assets, a strict Content-Security-Policy). "
        "Other clients get Kamus's `welcome` there either way. Off: no page, `welcome` for all.",
        services=ENCRYPTOR,
    )
    sealing_keys: str | None = _var(
        None,
        "The cluster's sealing keys for offline encryption (JSON; `python -m "
        "kamus_service.sealing new` makes them, private halves sealed by the provider; "
        "[docs/FORMAT.md](docs/FORMAT.md)). The encryptor publishes the active public key at "
        "`/api/v1/sealing-key`, the decryptor opens `kamus:v1:sealed:` ciphertexts with every key "
        "not retired. Unset: no offline sealing.",
        secret=True,
    )
    max_plaintext_bytes: int = _var(
        65536,
        "Largest secret accepted for encryption; larger ones get 413.",
        parse=_positive_int,
    )
    max_body_bytes: int = _var(
        1048576,
        "Largest request body accepted (chunked bodies included); larger ones get 413.",
        parse=_positive_int,
    )
    readiness_check_seconds: float = _var(
        5.0,
        "How long a dependency check made for /readyz is reused (per process): probes, however "
        "many, cost one TokenReview or KMS call per interval.",
        parse=_non_negative_float,
    )
    client_timeout_seconds: float = _var(
        5.0,
        "How long a client may take to send a whole request (from connecting, or from the "
        "request's first byte on a kept-alive connection) and to take each write of the answer; "
        "slower connections are closed. Needs the worker class "
        "`kamus_service.worker.BufferingWorker` (the images' default).",
        parse=_positive_float,
    )
    reuse_port: bool = _var(
        True,
        "gunicorn: each worker listens on a socket of its own (SO_REUSEPORT), so connections "
        "spread over the workers ([docs/PERFORMANCE.md](docs/PERFORMANCE.md)).",
    )
    padding_bucket: int = _var(
        32,
        "Plaintexts are padded to a multiple of this many bytes, so short secrets do not reveal "
        "their exact length.",
        parse=_positive_int,
    )
    allow_default_service_account: bool = _var(
        False, "Allow encrypting for and decrypting as a namespace's `default` service account."
    )
    token_audiences: tuple[str, ...] = _var(
        ("kamus",),
        "Comma-separated audiences TokenReview checks. Empty: the API server's default audience "
        "(plain pod tokens; compatible with Kamus, less safe).",
        parse=_audiences,
        services=DECRYPTOR,
    )
    kubeconfig: Path | None = _var(
        None,
        "Kubeconfig used for TokenReview; unset means in-cluster configuration.",
        parse=Path,
        services=DECRYPTOR,
    )
    tokenreview_timeout_seconds: float = _var(
        5.0,
        "Timeout of one TokenReview call; beyond it the request gets 503.",
        parse=_positive_float,
        services=DECRYPTOR,
    )
    tokenreview_cache_seconds: float = _var(
        30.0,
        "How long a successful TokenReview is reused for the same token (never beyond the "
        "token's expiry); 0 disables caching.",
        parse=_non_negative_float,
        services=DECRYPTOR,
    )
    tokenreview_failure_cache_seconds: float = _var(
        5.0,
        "How long a rejected token stays rejected without asking the API server again.",
        parse=_non_negative_float,
        services=DECRYPTOR,
    )
    tokenreview_max_concurrent: int = _var(
        16,
        "Most TokenReview calls in flight at once per worker process; beyond, requests wait up "
        "to the TokenReview timeout, then get 503.",
        parse=_positive_int,
        services=DECRYPTOR,
    )
    token_verification: TokenVerification = _var(
        TokenVerification.TOKENREVIEW,
        "`tokenreview`: every new token is checked by TokenReview. `hybrid`: first checked "
        "offline against the cluster's OIDC keys (signature, issuer, audience, expiry), so "
        "garbage never reaches the API server.",
        services=DECRYPTOR,
    )
    token_issuer: str | None = _var(
        None,
        "Expected `iss` of tokens in hybrid mode; unset: the issuer of the cluster's OIDC "
        "discovery document.",
        services=DECRYPTOR,
    )
    rate_limit_failures_per_minute: int = _var(
        30,
        "Failed attempts (400/401/403) allowed per token (per source address for requests "
        "without one) each minute and worker process; beyond, 429 with Retry-After. 0 disables.",
        parse=_non_negative_int,
        services=DECRYPTOR,
    )
    max_batch_items: int = _var(
        256,
        "Most ciphertexts one batch decrypt may carry.",
        parse=_positive_int,
        services=DECRYPTOR,
    )
    audit_key: bytes | None = _var(
        None,
        "Base64 key (32+ bytes) for the keyed ciphertext fingerprints in audit events and the "
        "audit file's chain; required unless in development mode.",
        parse=_base64_key,
        services=DECRYPTOR,
        secret=True,
        shown="— (required)",
    )
    legacy_key: bytes | None = _var(
        None,
        "Migration from the original Kamus: its AES key (base64, 32 bytes). When set, the "
        "decryptor also opens Kamus `iv:ciphertext` texts for the caller's own scope, counted in "
        "a metric; `rewrap` turns them into v1. Unset once migrated "
        "([docs/MIGRATING.md](docs/MIGRATING.md)).",
        parse=_legacy_key,
        services=DECRYPTOR,
        secret=True,
    )
    legacy_key_derivation: bool = _var(
        False,
        "The original Kamus ran with `useKeyDerivation` (a key per service account derived from "
        "`KAMUS_LEGACY_KEY`).",
        services=DECRYPTOR,
    )
    audit_file: Path | None = _var(
        None,
        "Append-only, hash-chained audit file ([docs/AUDIT.md](docs/AUDIT.md)), written and "
        "flushed before each response; unset: audit events go to stdout only.",
        parse=Path,
        services=DECRYPTOR,
    )
    audit_dir: Path | None = _var(
        None,
        "A folder where each decryptor process appends its own audit chain, "
        "`<pod>-<pid>-<start>.jsonl` (replicas share no file); instead of `KAMUS_AUDIT_FILE`, "
        "which suits one replica.",
        parse=Path,
        services=DECRYPTOR,
    )
    audit_signing_key: str | None = _var(
        None,
        "Ed25519 signing key, sealed by the key provider (`python -m "
        "kamus_service.auditsigning new`) or as base64 of its seed (`kamus-audit signing-key "
        "new`): the audit chain gets signed checkpoints, also printed on stdout, and "
        "`kamus-audit verify --public-key` checks it without the audit key "
        "([docs/AUDIT.md](docs/AUDIT.md)).",
        services=DECRYPTOR,
        secret=True,
    )
    audit_origin: str = _var(
        "kamus-decryptor",
        "The name of this decryptor's audit log, signed into every checkpoint (the chart sets "
        "`<namespace>/<release>-decryptor`): chains of two decryptors cannot be passed off as "
        "each other's.",
        services=DECRYPTOR,
    )
    audit_witness_configmap: str | None = _var(
        None,
        "`NAMESPACE/NAME` of a ConfigMap where each process keeps its chain's latest signed "
        "checkpoint (with `KAMUS_AUDIT_DIR`; the chart creates it, with a Role to patch it "
        "alone): a witness in the Kubernetes API that whoever can rewrite the files cannot "
        "([docs/AUDIT.md](docs/AUDIT.md)).",
        parse=_object_reference,
        services=DECRYPTOR,
    )
    audit_checkpoint_records: int = _var(
        100,
        "A signed checkpoint after this many records (per process).",
        parse=_positive_int,
        services=DECRYPTOR,
    )
    audit_checkpoint_seconds: float = _var(
        60.0,
        "A signed checkpoint at least this often while records are written (per process).",
        parse=_positive_float,
        services=DECRYPTOR,
    )
    audit_policy: AuditPolicy = _var(
        AuditPolicy.FAIL_CLOSED,
        "When the audit file cannot be written: `fail-closed` answers 503 and returns no "
        "plaintext; `best-effort` logs the failure and answers anyway.",
        services=DECRYPTOR,
    )
    audit_fsync: bool = _var(
        True,
        "fsync the audit file after each event (durable across a node crash).",
        services=DECRYPTOR,
    )
    log_level: LogLevel = _var(LogLevel.INFO, "`DEBUG`, `INFO`, `WARNING` or `ERROR`.")


def _text(default: Any) -> str | None:
    """A default as the environment would spell it (what the parser turns back into it)."""
    if default is None:
        return None
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default)
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable, derived from a field of :class:`Settings`."""

    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    services: tuple[Service, ...] = BOTH
    secret: bool = False
    shown: str | None = None

    @property
    def env(self) -> str:
        return PREFIX + self.name


SPEC: tuple[Variable, ...] = tuple(
    Variable(
        name=item.name.upper(),
        parse=item.metadata["parse"],
        default=_text(item.default),
        help=item.metadata["help"],
        services=item.metadata["services"],
        secret=item.metadata["secret"],
        shown=item.metadata["shown"],
    )
    for item in fields(Settings)
    if item.metadata
)


def markdown_table() -> str:
    """The README's table of service settings, rendered from SPEC."""
    rows = ["| variable | used by | default | meaning |", "|---|---|---|---|"]
    for variable in SPEC:
        names = f"`{variable.env}`" + (f" / `{variable.env}_FILE`" if variable.secret else "")
        if variable.shown is not None:
            default = variable.shown
        elif variable.default is None:
            default = "—"
        elif variable.default == "":
            default = "(empty)"
        else:
            default = f"`{variable.default}`"
        rows.append(f"| {names} | {', '.join(variable.services)} | {default} | {variable.help} |")
    return "\n".join(rows) + "\n"


def _raw_value(variable: Variable, environ: Mapping[str, str], problems: list[str]) -> str | None:
    direct = environ.get(variable.env)
    path = environ.get(variable.env + "_FILE") if variable.secret else None
    if direct is not None and path is not None:
        problems.append(f"set {variable.env} or {variable.env}_FILE, not both")
        return None
    if path is not None:
        # The clients' rule for <NAME>_FILE, shared so that both sides read files alike.
        try:
            return environment.read_value_file(f"{variable.env}_FILE", path)
        except InputError as exc:
            problems.append(str(exc))
            return None
    return direct if direct is not None else variable.default


def setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One variable of SPEC (``name`` without the prefix), parsed; its default when unset.

    For code outside the app (the gunicorn worker) that needs a setting the app has already
    validated at start-up.
    """
    (variable,) = [v for v in SPEC if v.name == name]
    problems: list[str] = []
    raw = _raw_value(variable, os.environ if environ is None else environ, problems)
    if problems or raw is None:
        raise ConfigurationError(problems or [f"{variable.env} is required"])
    try:
        return variable.parse(raw)
    except ValueError as exc:
        raise ConfigurationError([f"{variable.env} {exc}"]) from exc


def load_settings(service: Service, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment for `service`; ConfigurationError lists every problem at once."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, Any] = {}
    invalid: set[str] = set()
    for variable in SPEC:
        if service not in variable.services:
            continue
        reported = len(problems)
        raw = _raw_value(variable, env, problems)
        if raw is None:
            if len(problems) > reported:  # unreadable: already reported, not "missing" as well
                invalid.add(variable.name.lower())
            continue
        try:
            values[variable.name.lower()] = variable.parse(raw)
        except ValueError as exc:
            # The message names the variable but never echoes a secret's value.
            shown = "" if variable.secret else f" (got {raw!r})"
            problems.append(f"{variable.env} {exc}{shown}")
            invalid.add(variable.name.lower())
    known = {v.env for v in SPEC} | {v.env + "_FILE" for v in SPEC if v.secret}
    problems.extend(
        f"{name} is not a Kamus setting"
        for name in sorted(env)
        if name.startswith(PREFIX)
        and name not in known
        and name not in environment.NAMES
        and not _SERVICE_LINK.fullmatch(name)
    )
    required = ["audit_key"] if service == "decryptor" else []
    provider = values.get("provider", "local")
    if provider == "local":
        required.append("keyring")
    else:
        problems.extend(
            f"KAMUS_{name.upper()} is required for the {provider} provider"
            for name in _PROVIDER_REQUIRES[provider]
            if name not in values and name not in invalid
        )
        if values.get("kms_key_mode", "shared") == "shared":
            if "kms_key" not in values:
                problems.append("KAMUS_KMS_KEY is required in the shared key mode")
        elif "kms_naming_key" not in values and "kms_naming_key" not in invalid:
            problems.append("KAMUS_KMS_NAMING_KEY or KAMUS_KMS_NAMING_KEY_FILE is required in the "
                            "per-service-account key mode")  # fmt: skip
    if not values.get("dev_mode", False):
        problems.extend(
            f"KAMUS_{name.upper()} or KAMUS_{name.upper()}_FILE is required (no default keys)"
            for name in required
            if name not in values and name not in invalid
        )
    if values.get("audit_file") is not None and values.get("audit_dir") is not None:
        problems.append("set KAMUS_AUDIT_FILE or KAMUS_AUDIT_DIR, not both")
    if values.get("audit_signing_key") and not (
        values.get("audit_file") or values.get("audit_dir")
    ):
        problems.append("KAMUS_AUDIT_SIGNING_KEY needs KAMUS_AUDIT_DIR or KAMUS_AUDIT_FILE")
    if values.get("audit_witness_configmap") and not (
        values.get("audit_signing_key") and values.get("audit_dir")
    ):
        # Replicas writing KAMUS_AUDIT_FILE all name their chain alike: their heads would
        # overwrite each other's in the ConfigMap.
        problems.append("KAMUS_AUDIT_WITNESS_CONFIGMAP needs KAMUS_AUDIT_SIGNING_KEY (it keeps "
                        "signed checkpoints) and KAMUS_AUDIT_DIR (chains named per "
                        "process)")  # fmt: skip
    if problems:
        raise ConfigurationError(problems)
    return Settings(service=service, **values)


# Kubernetes injects these for every Service of the namespace (a Service named kamus-decryptor
# gives KAMUS_DECRYPTOR_SERVICE_HOST, KAMUS_DECRYPTOR_PORT_80_TCP, ...): not typos.
_SERVICE_LINK = re.compile(
    r"KAMUS_[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)


@contextmanager
def exit_on_configuration_error(program: str) -> Iterator[None]:
    """Turn a ConfigurationError into a readable list on stderr and exit code 3.

    Exit code 3 is gunicorn's "worker failed to boot": the master stops instead of restarting
    workers that can never start.
    """
    try:
        yield
    except ConfigurationError as exc:
        lines = "\n".join(f"  - {problem}" for problem in exc.problems)
        print(f"{program}: cannot start, configuration problems:\n{lines}", file=sys.stderr)
        raise SystemExit(3) from exc


if __name__ == "__main__":
    print(markdown_table(), end="")  # the README's table: python -m kamus_service.settings
