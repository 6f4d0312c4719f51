from __future__ import annotations

import sys

import pytest
from flask import Flask

from kamus_kms import errors
from kamus_kms.errors import ConfigurationError, KamusError
from kamus_service import errors as service_errors
from kamus_service.errors import register_error_handlers, status_for


def _all_subclasses(cls: type[KamusError]) -> list[type[KamusError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


# Raised only at start-up, where the process exits instead of answering.
_STARTUP_ONLY = {ConfigurationError}
# The services raise the errors of the core tree and the request errors of the HTTP layer; the
# clients' own errors (kamus_client.errors) map to exit codes instead, and are tested there.
TREE_MODULES = (errors, service_errors)
SERVICE_ERRORS = [
    c
    for c in _all_subclasses(KamusError)
    if c.__module__ in {module.__name__ for module in TREE_MODULES}
]
REQUEST_ERRORS = [c for c in SERVICE_ERRORS if c not in _STARTUP_ONLY]


def _instance(cls: type[KamusError]) -> KamusError:
    return cls("a message") if cls is not errors.InvalidCiphertextError else cls()


@pytest.mark.parametrize("cls", REQUEST_ERRORS, ids=lambda c: c.__name__)
def test_every_request_error_maps_to_a_4xx_or_503(cls: type[KamusError]) -> None:
    status = status_for(_instance(cls))
    assert 400 <= status < 500 or status == 503


@pytest.mark.parametrize("cls", REQUEST_ERRORS, ids=lambda c: c.__name__)
def test_every_error_becomes_the_json_shape_with_its_code(cls: type[KamusError]) -> None:
    app = Flask("probe")
    register_error_handlers(app)

    @app.get("/raise")
    def raise_it() -> str:
        raise _instance(cls)

    response = app.test_client().get("/raise")
    assert response.status_code == status_for(_instance(cls))
    body = response.get_json()
    assert body["error"] == cls.code
    if issubclass(cls, errors.UnavailableError):
        # Operators' detail stays in the log; callers get a fixed sentence.
        assert "a message" not in body["message"]
        assert "retry later" in body["message"]
    else:
        assert body["message"] == str(_instance(cls))
    if response.status_code in (429, 503):
        assert int(response.headers["Retry-After"]) > 0


def test_the_tree_holds_the_http_layer_s_errors_and_the_audit_error() -> None:
    names = {c.__name__ for c in SERVICE_ERRORS}
    assert {"AuthenticationError", "RateLimitedError", "AuditWriteError"} <= names


def test_every_error_class_is_documented_in_its_module_tree() -> None:
    undocumented = [
        c.__name__
        for c in SERVICE_ERRORS
        if f" {c.__name__} " not in (sys.modules[c.__module__].__doc__ or "")
    ]
    assert undocumented == []


def test_an_unexpected_exception_is_a_500_without_details() -> None:
    app = Flask("probe")
    register_error_handlers(app)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("internal detail that must not leak")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal_error"
    assert "internal detail" not in response.get_data(as_text=True)
