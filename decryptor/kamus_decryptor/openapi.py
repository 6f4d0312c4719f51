"""The decryptor's OpenAPI 3 document, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from kamus_service.openapi import document, error

_DENIALS = {
    "400": error("Malformed body or ciphertext (invalid_ciphertext)"),
    "401": error("Token missing, invalid, expired or for another audience"),
    "403": error("Not a service account, the default service account, or scope_mismatch"),
    "413": error("Body too large"),
    "415": error("Body is not JSON"),
    "429": error("Too many failed attempts from this address or token; see Retry-After"),
    "503": error("Token verification or the key provider is unavailable; see Retry-After"),
}


def _ref(schema: str) -> str:
    return f"#/components/schemas/{schema}"


def _operation(summary: str, request_schema: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"serviceAccountToken": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{request_schema}"}
                    }
                },
            },
            "responses": {"200": ok, **_DENIALS},
        }
    }


OPENAPI: dict[str, Any] = document(
    "Kamus decryptor",
    "Decrypts ciphertexts for the service account proven by the caller's token (TokenReview).",
    {
        "/api/v1/decrypt": _operation(
            "Decrypt one ciphertext bound to the caller's namespace and service account",
            "DecryptRequest",
            {
                "description": "The secret",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        ),
        "/api/v1/decrypt/batch": _operation(
            "Decrypt several ciphertexts at once, all or nothing",
            "BatchRequest",
            {
                "description": "The secrets by name",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/BatchResponse"}}
                },
            },
        ),
        "/api/v1/rewrap": _operation(
            "Re-seal the caller's own ciphertext under the active key; never returns plaintext",
            "DecryptRequest",
            {
                "description": "The new ciphertext, same scope",
                "content": {"text/plain": {"schema": {"type": "string", "pattern": "^kamus:v1:"}}},
            },
        ),
    },
    {
        "DecryptRequest": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "string", "description": "A kamus:v1: ciphertext"}},
        },
        "BatchRequest": {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "string"},
                }
            },
        },
        "BatchResponse": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
    },
)
OPENAPI["components"]["securitySchemes"] = {
    "serviceAccountToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The pod's projected service-account token with the kamus audience",
    }
}
