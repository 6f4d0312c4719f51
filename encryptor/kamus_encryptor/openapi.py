"""The encryptor's OpenAPI 3 document, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from kamus_kms.offline import MAX_RECIPIENTS
from kamus_service.openapi import document, error

_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

OPENAPI: dict[str, Any] = document(
    "Kamus encryptor",
    "Encrypts a secret for one namespace and service account. Anonymous, like Kamus.",
    {
        "/api/v1/sealing-key": {
            "get": {
                "summary": "The cluster's public sealing key, for offline encryption",
                "responses": {
                    "200": {
                        "description": "One line: kamus-sealing-key:v1:<kem>:<cluster>:<key>",
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string", "pattern": "^kamus-sealing-key:v1:"}
                            }
                        },
                    },
                    "404": error("No sealing keys are configured (KAMUS_SEALING_KEYS)"),
                },
            }
        },
        "/api/v1/encrypt": {
            "post": {
                "summary": "Encrypt a secret for a namespace and service account",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/EncryptRequest"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The ciphertext (JSON when Accept is only application/json)",
                        "content": {
                            "text/plain": {"schema": {"type": "string", "pattern": "^kamus:v1:"}},
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EncryptResponse"}
                            },
                        },
                    },
                    "400": error("Malformed body, invalid names or the default service account"),
                    "413": error("Secret or body too large"),
                    "415": error("Body is not JSON"),
                    "503": error("The key provider is unavailable"),
                },
            }
        },
        "/api/v1/seal": {
            "post": {
                "summary": "Encrypt a secret for a scope, openable in this cluster and in the "
                "clusters whose sealing keys are given",
                "description": "What `kamus-cli encrypt --sealing-key ...` makes offline: a "
                "`kamus:v1:sealed:` ciphertext (HPKE) for this cluster's active sealing key and "
                "each key of `sealing-keys` (other clusters', from their GET "
                "/api/v1/sealing-key), for the same namespace and service account.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SealRequest"}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "The ciphertext (JSON when Accept is only application/json)",
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string", "pattern": "^kamus:v1:sealed:"}
                            },
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EncryptResponse"}
                            },
                        },
                    },
                    "400": error(
                        "Malformed body, invalid names or sealing keys, the default service "
                        "account, or no sealing key in this Kamus (KAMUS_SEALING_KEYS)"
                    ),
                    "413": error("Secret or body too large"),
                    "415": error("Body is not JSON"),
                },
            }
        },
    },
    {
        "SealRequest": {
            "type": "object",
            "required": ["data", "namespace", "service-account"],
            "properties": {
                "data": {"$ref": "#/components/schemas/EncryptRequest/properties/data"},
                "namespace": {"$ref": "#/components/schemas/EncryptRequest/properties/namespace"},
                "service-account": {
                    "$ref": "#/components/schemas/EncryptRequest/properties/service-account"
                },
                "sealing-keys": {
                    "type": "array",
                    "maxItems": MAX_RECIPIENTS - 1,  # this cluster's own key is the last one
                    "items": {"type": "string", "pattern": "^kamus-sealing-key:v1:"},
                    "description": "Other clusters' public sealing keys (one line each, as GET "
                    "/api/v1/sealing-key serves them); this cluster's own is always included",
                },
            },
        },
        "EncryptRequest": {
            "type": "object",
            "required": ["data", "namespace", "service-account"],
            "properties": {
                "data": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 16384,
                    "description": "The secret: at most KAMUS_MAX_PLAINTEXT_BYTES bytes of UTF-8 "
                    "(default 65536; 16384 characters always fit)",
                },
                "namespace": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 63,
                    "pattern": _LABEL,
                    "description": "A Kubernetes namespace (DNS-1123 label)",
                },
                "service-account": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 253,
                    "pattern": _SUBDOMAIN,
                    "not": {"enum": ["default"]},
                    "description": "A service account (DNS-1123 subdomain); `default` is refused "
                    "unless the operator allows it",
                },
            },
        },
        "EncryptResponse": {
            "type": "object",
            "required": ["data", "namespace", "service-account"],
            "properties": {
                "data": {"type": "string"},
                "namespace": {"type": "string"},
                "service-account": {"type": "string"},
            },
        },
    },
)
