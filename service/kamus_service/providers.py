"""Building the configured key provider, and the sealer over it, from settings.

Remote adapters live in optional extras (`kamus-kms[gcp]`, `kamus-kms[aws]`, `kamus-kms[pkcs11]`,
`kamus-kms[vault]`, `kamus-kms[azure]`) and are imported only when selected.
"""

from __future__ import annotations

import importlib
from typing import Any

from prometheus_client import CollectorRegistry

from kamus_kms.envelope import EnvelopeProvider, KmsMetrics, RemoteKms
from kamus_kms.errors import ConfigurationError
from kamus_kms.provider import KeyMode, KeyProvider
from kamus_kms.sealer import Sealer
from kamus_service.keys import local_provider
from kamus_service.settings import Settings


def _adapter(module: str, cls: str, extra: str, **options: Any) -> RemoteKms:
    try:
        adapter: type[RemoteKms] = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {extra} provider needs its extra: pip install 'kamus-kms[{extra}]' ({exc.name} "
            "is missing)"
        ) from exc
    return adapter(**options)


def _required(value: Any, variable: str) -> Any:
    if value is None or value == "":
        raise ConfigurationError(f"{variable} is required for this provider")
    return value


def remote_kms(settings: Settings) -> RemoteKms:
    """The KMS adapter of a remote provider."""
    timeout = settings.kms_timeout_seconds
    match settings.provider:
        case "gcp":
            return _adapter(
                "kamus_kms.providers.gcp", "GcpKms", "gcp",
                key_ring=_required(settings.gcp_key_ring, "KAMUS_GCP_KEY_RING"),
                endpoint=settings.gcp_endpoint, insecure=settings.gcp_insecure_endpoint,
                timeout=timeout,
            )  # fmt: skip
        case "aws":
            return _adapter(
                "kamus_kms.providers.aws", "AwsKms", "aws",
                region=_required(settings.aws_region, "KAMUS_AWS_REGION"),
                endpoint_url=settings.aws_endpoint_url, timeout=timeout,
            )  # fmt: skip
        case "pkcs11":
            return _adapter(
                "kamus_kms.providers.pkcs11", "Pkcs11Kms", "pkcs11",
                library=str(_required(settings.pkcs11_library, "KAMUS_PKCS11_LIBRARY")),
                token_label=_required(settings.pkcs11_token_label, "KAMUS_PKCS11_TOKEN_LABEL"),
                pin=_required(settings.pkcs11_pin, "KAMUS_PKCS11_PIN"),
            )  # fmt: skip
        case "vault":
            return _adapter(
                "kamus_kms.providers.vault", "VaultTransitKms", "vault",
                addr=_required(settings.vault_addr, "KAMUS_VAULT_ADDR"),
                token=_required(settings.vault_token, "KAMUS_VAULT_TOKEN"),
                mount=settings.vault_transit_mount,
                ca_cert=str(settings.vault_ca_cert) if settings.vault_ca_cert else None,
                timeout=timeout,
            )  # fmt: skip
        case "azure":
            return _azure(settings, timeout)
    raise ConfigurationError(f"unknown provider {settings.provider!r}")


def _azure(settings: Settings, timeout: float) -> RemoteKms:
    try:
        module = importlib.import_module("kamus_kms.providers.azure")
    except ImportError as exc:
        raise ConfigurationError(
            f"the azure provider needs its extra: pip install 'kamus-kms[azure]' ({exc.name} "
            "is missing)"
        ) from exc
    ca_cert = str(settings.azure_ca_cert) if settings.azure_ca_cert else None
    credential = module.build_credential(
        settings.azure_credential.value,
        tenant_id=settings.azure_tenant_id,
        client_id=settings.azure_client_id,
        client_secret=settings.azure_client_secret,
        authority_host=settings.azure_authority_host,
        ca_cert=ca_cert,
    )
    kms: RemoteKms = module.AzureKeyVaultKms(
        vault_url=_required(settings.azure_vault_url, "KAMUS_AZURE_VAULT_URL"),
        credential=credential,
        key_type=settings.azure_key_type.value,
        timeout=timeout,
        ca_cert=ca_cert,
        verify_challenge_resource=settings.azure_verify_challenge_resource,
    )
    return kms


def provider_from_settings(settings: Settings, registry: CollectorRegistry) -> KeyProvider:
    """The configured provider; ConfigurationError when it cannot be built."""
    if settings.provider == "local":
        return local_provider(settings)
    return EnvelopeProvider(
        remote_kms(settings),
        mode=KeyMode(settings.kms_key_mode),
        shared_key=settings.kms_key,
        naming_key=settings.kms_naming_key,
        cache_seconds=settings.kms_data_key_cache_seconds,
        cache_size=settings.kms_data_key_cache_size,
        metrics=KmsMetrics(registry),
    )


def sealer_from_settings(settings: Settings, provider: KeyProvider) -> Sealer:
    """A sealer with the configured size limit and padding."""
    return Sealer(
        provider,
        max_plaintext=settings.max_plaintext_bytes,
        padding_bucket=settings.padding_bucket,
        cluster=settings.cluster_name,
    )
