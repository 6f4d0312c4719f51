"""The Azure Key Vault adapter, through the real SDK, against the HTTPS stand-in on 127.0.0.1."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from canned_server import Certificate, self_signed_certificate
from fake_azure_keyvault import FakeKeyVault, VaultServer, serve
from prometheus_client import CollectorRegistry

from kamus_kms.errors import ConfigurationError, InvalidCiphertextError, UnavailableError
from kamus_kms.providers.azure import AzureKeyVaultKms, build_credential
from kamus_service.providers import provider_from_settings
from kamus_service.settings import load_settings

HEADER = b"kamus:v1:azure:team-a:app:kamus-shared:"
DATA_KEY = bytes(range(32))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed_certificate(tmp_path_factory.mktemp("azure-tls"))


@pytest.fixture
def server(certificate: Certificate) -> Iterator[VaultServer]:
    with serve(FakeKeyVault(), certificate) as running:
        yield running


@pytest.fixture
def vault(server: VaultServer) -> FakeKeyVault:
    return server.vault


def adapter(
    vault: FakeKeyVault, certificate: Certificate, *, secret: str | None = None,
    key_type: str = "RSA", verify: bool = False,
) -> AzureKeyVaultKms:  # fmt: skip
    credential = build_credential(
        "client-secret", tenant_id=vault.tenant, client_id=vault.client_id,
        client_secret=secret or vault.client_secret, authority_host=vault.url,
        ca_cert=str(certificate.cert_path),
    )  # fmt: skip
    return AzureKeyVaultKms(
        vault_url=vault.url, credential=credential, key_type=key_type, timeout=2,
        ca_cert=str(certificate.cert_path), verify_challenge_resource=verify,
    )  # fmt: skip


@pytest.mark.parametrize("kty", ["RSA", "RSA-HSM", "oct-HSM"])
def test_a_data_key_round_trips_with_the_key_type_s_wrap_algorithm(
    vault: FakeKeyVault, certificate: Certificate, kty: str
) -> None:
    vault.create("kamus-shared", kty)
    kms = adapter(vault, certificate, key_type=kty)
    wrapped = kms.wrap("kamus-shared", DATA_KEY, HEADER)

    version, _, _ = wrapped.partition(b":")
    assert version.decode() == vault.latest("kamus-shared").version
    assert DATA_KEY not in wrapped
    assert kms.unwrap("kamus-shared", wrapped, HEADER) == DATA_KEY
    # Every operation is the vault's: the SDK's local path would use a random AES key for an
    # oct-HSM key (it gets no key material), and a wrap by the vault is in its audit log.
    assert vault.count("wrapKey") == 1
    assert vault.count("unwrapKey") == 1


def test_a_wrapped_key_moved_under_another_header_does_not_open(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    # Key Vault's wrap takes no associated data: the header's digest is wrapped with the key.
    vault.create("kamus-shared")
    kms = adapter(vault, certificate)
    wrapped = kms.wrap("kamus-shared", DATA_KEY, HEADER)

    with pytest.raises(InvalidCiphertextError):
        kms.unwrap("kamus-shared", wrapped, HEADER.replace(b"team-a", b"team-b"))


@pytest.mark.parametrize(
    "wrapped",
    [b"", b"no-colon", b":nothing-before", b"version:", b"not hex!:abcd", b"0" * 32 + b":garbage"],
)
def test_malformed_or_foreign_wrapped_keys_are_invalid_ciphertexts(
    vault: FakeKeyVault, certificate: Certificate, wrapped: bytes
) -> None:
    vault.create("kamus-shared")
    with pytest.raises(InvalidCiphertextError):
        adapter(vault, certificate).unwrap("kamus-shared", wrapped, HEADER)


def test_the_sdk_answers_the_bearer_challenge_and_reuses_its_token(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    vault.create("kamus-shared")
    kms = adapter(vault, certificate)
    for _ in range(5):
        kms.unwrap("kamus-shared", kms.wrap("kamus-shared", DATA_KEY, HEADER), HEADER)

    assert vault.challenges == 1
    assert vault.token_requests == 1


def test_a_wrong_client_secret_is_unavailable_and_names_the_credential(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    vault.create("kamus-shared")
    wrong = secrets.token_urlsafe(16)
    kms = adapter(vault, certificate, secret=wrong)
    with pytest.raises(
        UnavailableError,
        match=r"no token for the credential.*AADSTS7000215.*KAMUS_AZURE_CREDENTIAL",
    ):
        kms.wrap("kamus-shared", DATA_KEY, HEADER)
    with pytest.raises(UnavailableError) as caught:
        kms.wrap("kamus-shared", DATA_KEY, HEADER)
    assert wrong not in str(caught.value)
    assert vault.client_secret not in str(caught.value)


def test_a_missing_shared_key_says_to_create_it(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    with pytest.raises(UnavailableError, match=r"'kamus-shared' does not exist.*create it"):
        adapter(vault, certificate).wrap("kamus-shared", DATA_KEY, HEADER)


def test_per_service_account_keys_are_created_once_with_only_wrap_operations(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    kms = adapter(vault, certificate)
    kms.ensure_key("kamus-0123abcd")
    kms.ensure_key("kamus-0123abcd")

    assert vault.count("create") == 1
    key = vault.latest("kamus-0123abcd")
    assert (key.kty, key.key_ops) == ("RSA", ["wrapKey", "unwrapKey"])


def test_a_decrypt_only_version_still_unwraps_and_new_keys_use_the_new_version(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    old = vault.create("kamus-shared")
    kms = adapter(vault, certificate)
    before = kms.wrap("kamus-shared", DATA_KEY, HEADER)
    new = vault.create("kamus-shared")  # az keyvault key rotate
    old.key_ops = ["unwrapKey"]

    after = kms.wrap("kamus-shared", DATA_KEY, HEADER)

    assert after.startswith(new.version.encode() + b":")
    assert kms.unwrap("kamus-shared", before, HEADER) == DATA_KEY
    assert kms.unwrap("kamus-shared", after, HEADER) == DATA_KEY


def test_a_key_that_may_not_wrap_is_unavailable_with_the_permission_to_grant(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    vault.create("kamus-shared", "oct-HSM", key_ops=["unwrapKey"])
    kms = adapter(vault, certificate, key_type="oct-HSM")
    with pytest.raises(UnavailableError, match="keys/wrapKey"):
        kms.wrap("kamus-shared", DATA_KEY, HEADER)


def test_a_key_of_another_type_than_configured_is_refused_clearly(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    vault.create("kamus-shared", "oct-HSM")
    with pytest.raises(UnavailableError, match="of type oct-HSM, not RSA"):
        adapter(vault, certificate).wrap("kamus-shared", DATA_KEY, HEADER)


def test_an_outage_is_unavailable_and_service_resumes(
    server: VaultServer, certificate: Certificate
) -> None:
    vault = server.vault
    vault.create("kamus-shared")
    kms = adapter(vault, certificate)
    wrapped = kms.wrap("kamus-shared", DATA_KEY, HEADER)
    server.stop()
    try:
        # A new process must reach the token service first, a running one the vault.
        with pytest.raises(UnavailableError, match="Connection refused"):
            adapter(vault, certificate).unwrap("kamus-shared", wrapped, HEADER)
        with pytest.raises(UnavailableError, match="cannot reach"):
            kms.wrap("kamus-shared", DATA_KEY, HEADER)
    finally:
        server.start()
    assert kms.unwrap("kamus-shared", wrapped, HEADER) == DATA_KEY


def test_resource_verification_refuses_a_challenge_outside_the_vault_s_domain(
    vault: FakeKeyVault, certificate: Certificate
) -> None:
    # The stand-in's challenge names https://vault.azure.net; its address is 127.0.0.1.
    vault.create("kamus-shared")
    kms = adapter(vault, certificate, verify=True)
    with pytest.raises(UnavailableError, match="does not match the requested domain"):
        kms.wrap("kamus-shared", DATA_KEY, HEADER)
    assert vault.token_requests == 0  # no token was sent to a server of another domain


def test_settings_build_the_provider_and_check_what_it_needs(
    vault: FakeKeyVault, certificate: Certificate, tmp_path: Path
) -> None:
    vault.create("kamus-shared")
    (tmp_path / "secret").write_text(vault.client_secret + "\n")
    environ = {
        "KAMUS_PROVIDER": "azure", "KAMUS_KMS_KEY": "kamus-shared",
        "KAMUS_AZURE_VAULT_URL": vault.url, "KAMUS_AZURE_CREDENTIAL": "client-secret",
        "KAMUS_AZURE_TENANT_ID": vault.tenant, "KAMUS_AZURE_CLIENT_ID": vault.client_id,
        "KAMUS_AZURE_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        "KAMUS_AZURE_AUTHORITY_HOST": vault.url,
        "KAMUS_AZURE_CA_CERT": str(certificate.cert_path),
        "KAMUS_AZURE_VERIFY_CHALLENGE_RESOURCE": "false",
    }  # fmt: skip
    provider = provider_from_settings(load_settings("encryptor", environ), CollectorRegistry())
    provider.check_ready()

    with pytest.raises(ConfigurationError, match="KAMUS_AZURE_VAULT_URL is required"):
        load_settings("encryptor", {k: v for k, v in environ.items() if "VAULT_URL" not in k})
    plain = {**environ, "KAMUS_AZURE_VAULT_URL": vault.url.replace("https", "http")}
    with pytest.raises(ConfigurationError, match="must be an https:// URL"):
        provider_from_settings(load_settings("encryptor", plain), CollectorRegistry())
    no_secret = {k: v for k, v in environ.items() if "SECRET_FILE" not in k}
    with pytest.raises(ConfigurationError, match="needs KAMUS_AZURE_TENANT_ID"):
        provider_from_settings(load_settings("encryptor", no_secret), CollectorRegistry())
