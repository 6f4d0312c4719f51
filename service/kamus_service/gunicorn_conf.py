"""gunicorn's configuration of both Kamus services: the one place it is written.

Everything that runs a Kamus service under gunicorn loads this module: the images' command
(``gunicorn -c python:kamus_service.gunicorn_conf kamus_decryptor:create_app()``), hence the chart,
and kamus-dev, the test harness and the benchmarks, which only override what they must on the
command line (a loopback address, the worker counts they measure). gunicorn applies this module
first, then ``$GUNICORN_CMD_ARGS`` (where the chart puts ``*.gunicorn`` sizes and TLS files), then
the command line.
"""

from __future__ import annotations

# Only settings here: gunicorn's master loads this module before the worker class prepares the
# metrics folder, and prometheus_client chooses per-process or shared values when first imported
# (tests/unit/service/test_gunicorn_conf.py).
from kamus_client.coredumps import forbid_core_dumps
from kamus_service.settings import exit_on_configuration_error, setting

bind = ["0.0.0.0:8080"]
workers = 2
threads = 4
# Receives each request whole in the event loop before a thread handles it, so idle and slow
# clients cannot hold threads (kamus_service.worker; docs/DEPLOY.md, "Scale").
worker_class = "kamus_service.worker.BufferingWorker"
timeout = 30
graceful_timeout = 20
# No administration socket in a container, and none shared by services run side by side.
control_socket_disable = True
# A listening socket per worker, so the kernel spreads connections over the workers
# (docs/PERFORMANCE.md). A setting rather than a flag: gunicorn has no flag to turn it off, and
# kamus-dev must fail on a taken port rather than share it.
with exit_on_configuration_error("gunicorn"):
    reuse_port = bool(setting("REUSE_PORT"))


def on_starting(server: object) -> None:
    """No core dump of the master, hence of the workers it forks: they hold keys and plaintexts."""
    forbid_core_dumps()
