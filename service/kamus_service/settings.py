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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kamus_kms.errors import ConfigurationError

PREFIX = "KAMUS_"
PROVIDERS = ("local", "gcp", "aws", "pkcs11", "vault")
# What each remote provider cannot start without (besides the key mode's own needs).
_PROVIDER_REQUIRES = {
    "gcp": ("gcp_key_ring",),
    "aws": ("aws_region",),
    "pkcs11": ("pkcs11_library", "pkcs11_token_label", "pkcs11_pin"),
    "vault": ("vault_addr", "vault_token"),
}
Service = Literal["encryptor", "decryptor"]
BOTH: tuple[Service, ...] = ("encryptor", "decryptor")
DECRYPTOR: tuple[Service, ...] = ("decryptor",)


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


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return value

    return parse


_CLUSTER = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")


def _cluster_name(text: str) -> str:
    name = text.strip()
    if name and not _CLUSTER.fullmatch(name):
        raise ValueError("must be 1-63 lowercase letters, digits, '-' or '.'")
    return name


def _audiences(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _base64_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError("must be base64") from exc
    if len(key) < 32:
        raise ValueError("must hold at least 32 bytes")
    return key


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: how to parse it and what it is for."""

    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    services: tuple[Service, ...] = BOTH
    secret: bool = False

    @property
    def env(self) -> str:
        return PREFIX + self.name


SPEC: tuple[Variable, ...] = (
    Variable("DEV_MODE", _boolean, "false",
             "Development mode: missing keys are generated into KAMUS_DEV_DIR, loudly. "
             "Never in production."),
    Variable("DEV_DIR", Path, ".kamus-dev",
             "Where development mode keeps the keys it generated."),
    Variable("PROVIDER", _choice(*PROVIDERS), "local",
             "Key provider: `local` (the keyring of KAMUS_KEYRING), `gcp`, `aws`, `pkcs11` or "
             "`vault` (docs/PROVIDERS.md)."),
    Variable("KEYRING", str, None,
             "The local keyring as JSON (see docs/FORMAT.md); required for the local provider "
             "unless in development mode.", secret=True),
    Variable("CLUSTER_NAME", _cluster_name, "",
             "Binds every ciphertext to this cluster: set a name per cluster (the same on its "
             "encryptor and decryptor) and a ciphertext moved to another cluster does not open "
             "there, even with the same keys. Empty: no cluster binding."),
    Variable("KMS_KEY_MODE", _choice("shared", "per-service-account"), "shared",
             "Remote providers: `shared` uses KAMUS_KMS_KEY for every scope; "
             "`per-service-account` uses one KMS key per namespace + service account, created "
             "on demand and named by a keyed hash."),
    Variable("KMS_KEY", str, None,
             "Remote providers, shared mode: the KMS key's name (see docs/PROVIDERS.md)."),
    Variable("KMS_NAMING_KEY", _base64_key, None,
             "Remote providers, per-service-account mode: base64 key (32+ bytes) for the keyed "
             "hash that names each service account's KMS key.", secret=True),
    Variable("KMS_DATA_KEY_CACHE_SECONDS", _non_negative_float, "300",
             "How long an unwrapped data key is reused for the same ciphertext; 0 disables."),
    Variable("KMS_DATA_KEY_CACHE_SIZE", _positive_int, "10000",
             "Most unwrapped data keys kept per worker process."),
    Variable("KMS_TIMEOUT_SECONDS", _positive_float, "5",
             "Timeout of one KMS call; beyond it the request gets 503."),
    Variable("GCP_KEY_RING", str, None,
             "gcp: the key ring, `projects/P/locations/L/keyRings/R`."),
    Variable("GCP_ENDPOINT", str, None,
             "gcp: KMS API endpoint `host:port` (default: Google's)."),
    Variable("GCP_INSECURE_ENDPOINT", _boolean, "false",
             "gcp: plaintext gRPC to KAMUS_GCP_ENDPOINT, without credentials. Local test servers "
             "only."),
    Variable("AWS_REGION", str, None, "aws: the KMS region."),
    Variable("AWS_ENDPOINT_URL", str, None, "aws: KMS endpoint URL (default: AWS's)."),
    Variable("PKCS11_LIBRARY", Path, None, "pkcs11: path of the PKCS#11 module (.so)."),
    Variable("PKCS11_TOKEN_LABEL", str, None, "pkcs11: label of the token holding the keys."),
    Variable("PKCS11_PIN", str, None, "pkcs11: user PIN of the token.", secret=True),
    Variable("VAULT_ADDR", str, None, "vault: Vault or OpenBao address, e.g. https://vault:8200."),
    Variable("VAULT_TOKEN", str, None, "vault: token allowed to use the transit keys.",
             secret=True),
    Variable("VAULT_TRANSIT_MOUNT", str, "transit", "vault: mount path of the transit engine."),
    Variable("VAULT_CA_CERT", Path, None, "vault: CA bundle to verify the server (default: "
             "system CAs)."),
    Variable("MAX_PLAINTEXT_BYTES", _positive_int, "65536",
             "Largest secret accepted for encryption; larger ones get 413."),
    Variable("MAX_BODY_BYTES", _positive_int, "1048576",
             "Largest request body accepted (chunked bodies included); larger ones get 413."),
    Variable("READINESS_CHECK_SECONDS", _non_negative_float, "5",
             "How long a dependency check made for /readyz is reused (per process): probes, "
             "however many, cost one TokenReview or KMS call per interval."),
    Variable("CLIENT_TIMEOUT_SECONDS", _positive_float, "5",
             "How long a client may take to send a whole request (from connecting, or from the "
             "request's first byte on a kept-alive connection) and to take each write of the "
             "answer; slower connections are closed. Needs the worker class "
             "`kamus_service.worker.BufferingWorker` (the images' default)."),
    Variable("REUSE_PORT", _boolean, "true",
             "gunicorn: each worker listens on a socket of its own (SO_REUSEPORT), so "
             "connections spread over the workers (docs/PERFORMANCE.md)."),
    Variable("PADDING_BUCKET", _positive_int, "32",
             "Plaintexts are padded to a multiple of this many bytes so short secrets do not "
             "reveal their exact length."),
    Variable("ALLOW_DEFAULT_SERVICE_ACCOUNT", _boolean, "false",
             "Allow encrypting for and decrypting as a namespace's `default` service account."),
    Variable("TOKEN_AUDIENCES", _audiences, "kamus",
             "Comma-separated audiences TokenReview checks. Empty: the API server's default "
             "audience (plain pod tokens; compatible with Kamus, less safe).",
             services=DECRYPTOR),
    Variable("KUBECONFIG", Path, None,
             "Kubeconfig used for TokenReview; unset means in-cluster configuration.",
             services=DECRYPTOR),
    Variable("TOKENREVIEW_TIMEOUT_SECONDS", _positive_float, "5",
             "Timeout of one TokenReview call; beyond it the request gets 503.",
             services=DECRYPTOR),
    Variable("TOKENREVIEW_CACHE_SECONDS", _non_negative_float, "30",
             "How long a successful TokenReview is reused for the same token (never beyond the "
             "token's expiry); 0 disables caching.", services=DECRYPTOR),
    Variable("TOKENREVIEW_FAILURE_CACHE_SECONDS", _non_negative_float, "5",
             "How long a rejected token stays rejected without asking the API server again.",
             services=DECRYPTOR),
    Variable("TOKENREVIEW_MAX_CONCURRENT", _positive_int, "16",
             "Most TokenReview calls in flight at once per worker process; beyond, requests "
             "wait up to the TokenReview timeout, then get 503.", services=DECRYPTOR),
    Variable("TOKEN_VERIFICATION", _choice("tokenreview", "hybrid"), "tokenreview",
             "`tokenreview`: every new token is checked by TokenReview. `hybrid`: first checked "
             "offline against the cluster's OIDC keys (signature, issuer, audience, expiry), "
             "so garbage never reaches the API server.", services=DECRYPTOR),
    Variable("TOKEN_ISSUER", str, None,
             "Expected `iss` of tokens in hybrid mode; unset: the issuer of the cluster's OIDC "
             "discovery document.", services=DECRYPTOR),
    Variable("RATE_LIMIT_FAILURES_PER_MINUTE", _non_negative_int, "30",
             "Failed attempts (400/401/403) allowed per token (per source address for requests "
             "without one) each minute and worker process; beyond, 429 with Retry-After. 0 "
             "disables.", services=DECRYPTOR),
    Variable("LEGACY_KEY", _base64_key, None,
             "Migration from the original Kamus: its AES key (base64, 32 bytes). When set, the "
             "decryptor also opens Kamus `iv:ciphertext` texts for the caller's own scope, "
             "counted in a metric; `rewrap` turns them into v1. Unset once migrated.",
             services=DECRYPTOR, secret=True),
    Variable("LEGACY_KEY_DERIVATION", _boolean, "false",
             "The original Kamus ran with `useKeyDerivation` (a key per service account derived "
             "from KAMUS_LEGACY_KEY).", services=DECRYPTOR),
    Variable("AUDIT_FILE", Path, None,
             "Append-only, hash-chained audit file (docs/AUDIT.md), written and flushed before "
             "each response; unset: audit events go to stdout only.", services=DECRYPTOR),
    Variable("AUDIT_POLICY", _choice("fail-closed", "best-effort"), "fail-closed",
             "When the audit file cannot be written: `fail-closed` answers 503 and returns no "
             "plaintext; `best-effort` logs the failure and answers anyway.", services=DECRYPTOR),
    Variable("AUDIT_FSYNC", _boolean, "true",
             "fsync the audit file after each event (durable across a node crash).",
             services=DECRYPTOR),
    Variable("MAX_BATCH_ITEMS", _positive_int, "256",
             "Most ciphertexts one batch decrypt may carry.", services=DECRYPTOR),
    Variable("AUDIT_KEY", _base64_key, None,
             "Base64 key (32+ bytes) for the keyed ciphertext fingerprints in audit events; "
             "required unless in development mode.", services=DECRYPTOR, secret=True),
    Variable("LOG_LEVEL", _log_level, "INFO", "DEBUG, INFO, WARNING or ERROR."),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Settings:
    """Parsed settings of one service."""

    service: Service
    dev_mode: bool = False
    dev_dir: Path = Path(".kamus-dev")
    provider: str = "local"
    keyring: str | None = None
    cluster_name: str = ""
    kms_key_mode: str = "shared"
    kms_key: str | None = None
    kms_naming_key: bytes | None = None
    kms_data_key_cache_seconds: float = 300.0
    kms_data_key_cache_size: int = 10000
    kms_timeout_seconds: float = 5.0
    gcp_key_ring: str | None = None
    gcp_endpoint: str | None = None
    gcp_insecure_endpoint: bool = False
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    pkcs11_library: Path | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: str | None = None
    vault_addr: str | None = None
    vault_token: str | None = None
    vault_transit_mount: str = "transit"
    vault_ca_cert: Path | None = None
    max_plaintext_bytes: int = 65536
    max_body_bytes: int = 1048576
    client_timeout_seconds: float = 5.0
    reuse_port: bool = True
    readiness_check_seconds: float = 5.0
    padding_bucket: int = 32
    allow_default_service_account: bool = False
    token_audiences: tuple[str, ...] = ("kamus",)
    kubeconfig: Path | None = None
    tokenreview_timeout_seconds: float = 5.0
    tokenreview_cache_seconds: float = 30.0
    tokenreview_failure_cache_seconds: float = 5.0
    tokenreview_max_concurrent: int = 16
    token_verification: str = "tokenreview"  # noqa: S105 (a mode name, not a secret)
    token_issuer: str | None = None
    rate_limit_failures_per_minute: int = 30
    legacy_key: bytes | None = None
    legacy_key_derivation: bool = False
    audit_file: Path | None = None
    audit_policy: str = "fail-closed"
    audit_fsync: bool = True
    max_batch_items: int = 256
    audit_key: bytes | None = None
    log_level: str = "INFO"


def _raw_value(variable: Variable, environ: Mapping[str, str], problems: list[str]) -> str | None:
    direct = environ.get(variable.env)
    path = environ.get(variable.env + "_FILE") if variable.secret else None
    if direct is not None and path is not None:
        problems.append(f"set {variable.env} or {variable.env}_FILE, not both")
        return None
    if path is not None:
        try:
            # Files made with `echo` or an editor end in a newline that is never part of a
            # token, PIN or key.
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(f"{variable.env}_FILE: cannot read {path}: {exc.strerror}")
            return None
        except UnicodeDecodeError:
            # Never the decoder's message: it quotes a byte of the secret.
            problems.append(f"{variable.env}_FILE: {path} is not UTF-8 text (keys go in base64)")
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
        and name not in _CLIENT_VARIABLES
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
    if problems:
        raise ConfigurationError(problems)
    return Settings(service=service, **values)


# Read by kamus-cli and kamus-init, not by the services; listed so a typo is still caught.
_CLIENT_VARIABLES = frozenset({"KAMUS_URL"})
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
