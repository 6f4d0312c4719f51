"""Certificate pinning for ``--cert-fingerprint``: the pin replaces CA validation.

SHA-256 is the fingerprint to use. The SHA-1 form (40 hex digits, what the original Kamus CLI
compared: Node's ``getPeerCertificate().fingerprint``) is accepted so Kamus users' scripts keep
working; the command warns that it is weak.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from kamus_cli.errors import InputError

_SHA256_HEX_DIGITS = 64
_SHA1_HEX_DIGITS = 40


def normalize_fingerprint(text: str) -> str:
    """Return ``text`` as lower-case hex digits; raise InputError unless a SHA-256 or SHA-1."""
    digits = text.strip().replace(":", "").lower()
    if len(digits) not in (_SHA256_HEX_DIGITS, _SHA1_HEX_DIGITS) or not set(digits) <= set(
        string.hexdigits
    ):
        raise InputError(
            "--cert-fingerprint must be the certificate's SHA-256 fingerprint: 64 hex digits,"
            " colons allowed (openssl x509 -noout -fingerprint -sha256 -in cert.pem)"
        )
    return digits


def is_sha1(fingerprint: str) -> bool:
    """Tell whether a normalized fingerprint is the weak SHA-1 form."""
    return len(fingerprint) == _SHA1_HEX_DIGITS


class FingerprintAdapter(HTTPAdapter):
    """Accepts exactly the server certificate whose SHA-256 (or SHA-1) matches the pin."""

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = normalize_fingerprint(fingerprint)
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs.update(self._pin_kwargs())
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs.update(self._pin_kwargs())
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def send(  # noqa: PLR0917 - the signature is HTTPAdapter.send's
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        # requests turns verify=True into per-request cert_reqs=CERT_REQUIRED, which would bring
        # back CA validation; the pin alone decides (a self-signed Kamus certificate is the point).
        return super().send(request, stream, timeout, False, cert, proxies)

    def _pin_kwargs(self) -> dict[str, Any]:
        return {"assert_fingerprint": self._fingerprint, "cert_reqs": "CERT_NONE"}
