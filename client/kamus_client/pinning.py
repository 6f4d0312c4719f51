"""TLS settings of the clients: the system's CAs, a CA bundle, or a pinned certificate.

``--cert-fingerprint`` pins the server certificate and replaces CA validation (a self-signed Kamus
certificate is the point). SHA-256 is the fingerprint to use. The SHA-1 form (40 hex digits, what
the original Kamus CLI compared: Node's ``getPeerCertificate().fingerprint``) is accepted so Kamus
users' scripts keep working; the command warns that it is weak.

``ssl`` is imported only here and only for https URLs: plain http pays nothing for it.
"""

from __future__ import annotations

from pathlib import Path

from kamus_client.errors import InputError, TLSError

TYPE_CHECKING = False  # not typing's: see kamus_client.transport
if TYPE_CHECKING:
    import ssl

    from kamus_client.transport import PeerCheck

_HEX_DIGITS = "0123456789abcdef"
_SHA256_HEX_DIGITS = 64
_SHA1_HEX_DIGITS = 40


def normalize_fingerprint(text: str) -> str:
    """Return ``text`` as lower-case hex digits; raise InputError unless a SHA-256 or SHA-1."""
    digits = text.strip().replace(":", "").lower()
    if len(digits) not in (_SHA256_HEX_DIGITS, _SHA1_HEX_DIGITS) or not set(digits) <= set(
        _HEX_DIGITS
    ):
        raise InputError(
            "--cert-fingerprint must be the certificate's SHA-256 fingerprint: 64 hex digits,"
            " colons allowed (openssl x509 -noout -fingerprint -sha256 -in cert.pem)"
        )
    return digits


def is_sha1(fingerprint: str) -> bool:
    """Tell whether a normalized fingerprint is the weak SHA-1 form."""
    return len(fingerprint) == _SHA1_HEX_DIGITS


def tls_context(*, ca_bundle: Path | None, pinned: bool) -> ssl.SSLContext:
    """The context for https: the pin alone decides, or CA validation with hostname checks."""
    import ssl  # noqa: PLC0415 - see the module docstring

    if pinned:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    try:
        # The system's CAs (or $SSL_CERT_FILE), or only those of the bundle; TLS 1.2 at least.
        return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"the CA bundle {ca_bundle} holds no usable PEM certificate") from exc


def pin_check(fingerprint: str) -> PeerCheck:
    """A check that the server's certificate has ``fingerprint``, run before anything is sent."""
    expected = normalize_fingerprint(fingerprint)

    def check(sock: ssl.SSLSocket) -> None:
        import hashlib  # noqa: PLC0415 - https only
        import hmac  # noqa: PLC0415

        certificate = sock.getpeercert(binary_form=True)
        if certificate is None:
            raise TLSError("the server presented no certificate to compare with the pin")
        digest = hashlib.sha1 if is_sha1(expected) else hashlib.sha256
        actual = digest(certificate).hexdigest()
        if not hmac.compare_digest(actual, expected):
            raise TLSError(
                "the server's TLS certificate does not match --cert-fingerprint"
                f" (its {'SHA-1' if is_sha1(expected) else 'SHA-256'} fingerprint is {actual})"
            )

    return check
