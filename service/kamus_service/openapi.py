"""The parts of the OpenAPI 3 documents both services share."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "Stable machine-readable code."},
        "message": {"type": "string", "description": "What went wrong, for humans."},
    },
}


def error(description: str) -> dict[str, Any]:
    """A JSON error response."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_READINESS: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "dependencies": {
            "type": "object",
            "description": "With `?verbose`: each check's last result, by name",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "ready": {"type": "boolean"},
                    "error": {"type": "string", "nullable": True},
                    "reason": {"type": "string", "nullable": True},
                    "enforced": {"type": "boolean"},
                    "since": {"type": "string"},
                },
            },
        },
    },
}

_COMMON_PATHS: dict[str, Any] = {
    "/": {
        "get": {
            "summary": "Kamus's welcome",
            "responses": {
                "200": {
                    "description": "The text `welcome`",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/api/v1/isAlive": {
        "get": {
            "summary": "Liveness, Kamus-compatible",
            "responses": {"200": _json({"type": "boolean"}, "Always true")},
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "responses": {"200": _json({"type": "object"}, "The process serves requests")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: shared dependencies reported, the pod's own conditions enforced",
            "responses": {
                "200": _json(_READINESS, "Ready (a shared dependency may be down: see `verbose`)"),
                "503": _json(_READINESS, "Not ready: the decryptor cannot write its audit file"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
        }
    },
}


def document(
    title: str, description: str, paths: dict[str, Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    """A complete OpenAPI 3.0 document with the shared routes and the Error schema."""
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1", "description": description},
        "paths": {**paths, **_COMMON_PATHS},
        "components": {"schemas": {"Error": ERROR_SCHEMA, **schemas}},
    }
