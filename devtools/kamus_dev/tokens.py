"""Service-account tokens of the development token authority: RS256 JWTs shaped like Kubernetes'.

Signing and verification only; the HTTP face of the Kubernetes API lives in ``kamus_dev.authority``.
The claims are those of a kube-apiserver (v1.29+):

    {"iss": ISSUER, "aud": [...], "sub": "system:serviceaccount:NS:SA", "exp", "iat", "nbf", "jti",
     "kubernetes.io": {"namespace": NS, "serviceaccount": {"name", "uid"}, "pod": {"name", "uid"}}}
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

_SERVICE_ACCOUNT_USER = "system:serviceaccount:{namespace}:{name}"


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-2048 key, the size kube-apiserver's service-account keys usually have."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_or_create_signing_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    """The RSA key in the PEM file at ``path``, created (mode 0600) when the file does not exist.

    Several processes may race to create the file: each writes a private temporary file and
    hard-links it into place, so exactly one key wins and every process loads that one.
    """
    target = Path(path)
    if not target.exists():
        pem = generate_signing_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".signing-key-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, target)
        finally:
            os.unlink(temporary)
    key = serialization.load_pem_private_key(target.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{target} does not hold an RSA private key")
    return key


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """The ``kid`` Kubernetes gives a key: unpadded base64url of SHA-256 over its DER encoding."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class BoundPod:
    """The pod a token is bound to."""

    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified claims of one service-account token."""

    namespace: str
    service_account: str
    service_account_uid: str
    audiences: tuple[str, ...]
    issued_at: int
    not_before: int
    expires_at: int
    jti: str | None
    pod: BoundPod | None

    @property
    def username(self) -> str:
        """The Kubernetes username, ``system:serviceaccount:NS:SA``."""
        return _SERVICE_ACCOUNT_USER.format(namespace=self.namespace, name=self.service_account)


class TokenSigner:
    """Signs and verifies the RS256 service-account tokens of one issuer and one key."""

    def __init__(self, signing_key: rsa.RSAPrivateKey, issuer: str) -> None:
        self._key = signing_key
        self.issuer = issuer
        self.kid = key_id(signing_key.public_key())

    def jwk(self) -> dict[str, Any]:
        """The public key as the JWK kube-apiserver publishes at ``/openid/v1/jwks``."""
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256", **jwk}

    def sign(
        self,
        *,
        namespace: str,
        service_account: str,
        service_account_uid: str,
        audiences: Sequence[str],
        issued_at: int,
        expires_at: int,
        pod: BoundPod | None = None,
        jti: bool = True,
    ) -> str:
        """A signed token with the claims kube-apiserver puts in a TokenRequest's token.

        ``jti``: a unique token id, as Kubernetes 1.29 and later add; without it (1.28), two
        tokens asked for in the same second with the same claims are the same token.
        """
        kubernetes: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": service_account_uid},
        }
        if pod is not None:
            kubernetes["pod"] = {"name": pod.name, "uid": pod.uid}
        claims = {
            "aud": list(audiences),
            "exp": expires_at,
            "iat": issued_at,
            "iss": self.issuer,
            **({"jti": str(uuid.uuid4())} if jti else {}),
            "kubernetes.io": kubernetes,
            "nbf": issued_at,
            "sub": _SERVICE_ACCOUNT_USER.format(namespace=namespace, name=service_account),
        }
        # Kubernetes' tokens carry no "typ" header.
        return jwt.encode(
            claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": None}
        )

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of a token this signer made, or None for anything else.

        Checks the signature and issuer only; time and audience are the reviewer's business because
        Kubernetes reports them with their own messages.
        """
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            if issuer != self.issuer:
                return None
            payload = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                },
                issuer=self.issuer,
            )
            return _claims(payload)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError, AttributeError):
            return None


def _claims(payload: dict[str, Any]) -> TokenClaims:
    kubernetes = payload["kubernetes.io"]
    service_account = kubernetes["serviceaccount"]
    pod = kubernetes.get("pod")
    audiences = payload["aud"]
    if isinstance(audiences, str):
        audiences = [audiences]
    namespace, name = str(kubernetes["namespace"]), str(service_account["name"])
    if payload.get("sub") != _SERVICE_ACCOUNT_USER.format(namespace=namespace, name=name):
        raise ValueError("subject does not match the kubernetes.io claim")
    return TokenClaims(
        namespace=namespace,
        service_account=name,
        service_account_uid=str(service_account["uid"]),
        audiences=tuple(str(audience) for audience in audiences),
        issued_at=int(payload["iat"]),
        not_before=int(payload["nbf"]),
        expires_at=int(payload["exp"]),
        jti=str(payload["jti"]) if "jti" in payload else None,
        pod=None if pod is None else BoundPod(str(pod["name"]), str(pod["uid"])),
    )
