"""gunicorn's configuration module: what it sets and what it must not import."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from unittest import mock

import pytest


def test_loading_it_does_not_import_prometheus_client() -> None:
    # gunicorn's master loads the configuration before the worker class sets
    # PROMETHEUS_MULTIPROC_DIR; prometheus_client picks per-process values when first imported,
    # and an early import left every worker's /metrics empty.
    code = "import sys, kamus_service.gunicorn_conf; print('prometheus_client' in sys.modules)"
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert finished.stdout.strip() == "False"


def test_the_images_settings() -> None:
    with mock.patch.dict(os.environ, {"KAMUS_REUSE_PORT": "true"}):
        conf = runpy.run_module("kamus_service.gunicorn_conf")
    assert conf["bind"] == ["0.0.0.0:8080"]
    assert (conf["workers"], conf["threads"], conf["timeout"]) == (2, 4, 30)
    assert conf["worker_class"] == "kamus_service.worker.BufferingWorker"
    assert conf["control_socket_disable"] is True
    assert conf["reuse_port"] is True


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("0", False), ("yes", True)])
def test_reuse_port_follows_its_setting(value: str, expected: bool) -> None:
    with mock.patch.dict(os.environ, {"KAMUS_REUSE_PORT": value}):
        assert runpy.run_module("kamus_service.gunicorn_conf")["reuse_port"] is expected


def test_a_bad_value_stops_gunicorn_with_the_configuration_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with (
        mock.patch.dict(os.environ, {"KAMUS_REUSE_PORT": "maybe"}),
        pytest.raises(SystemExit) as exited,
    ):
        runpy.run_module("kamus_service.gunicorn_conf")
    assert exited.value.code == 3
    assert "KAMUS_REUSE_PORT must be true or false" in capsys.readouterr().err
