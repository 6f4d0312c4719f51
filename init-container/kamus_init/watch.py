"""``kamus-init --watch``: a native sidecar that keeps the decrypted files current.

After the first publication it polls the inputs every ``--watch-interval`` seconds: the
ciphertexts of the encrypted folders (a ConfigMap volume changes by the kubelet's atomic ``..data``
swap) and ``--encrypted-file`` maps. When they differ from the last published ones, it decrypts
them again (the token file is read anew for every attempt: the kubelet refreshes it) and
publishes a new snapshot atomically (kamus_init.snapshots). A failure keeps the last good files,
is logged on one line and retried at the next interval. SIGTERM (the pod stopping) ends it with
exit 0.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

from kamus_client.errors import ClientError
from kamus_client.terminal import escape_unsafe
from kamus_init.settings import Settings
from kamus_init.sources import read_ciphertexts


def watch(
    settings: Settings,
    publish: Callable[[dict[str, str]], int],
    *,
    stop: threading.Event | None = None,
    program: str = "kamus-init",
    between: Callable[[], None] | None = None,
) -> int:
    """Publish now and whenever the ciphertexts change, until ``stop`` is set (or SIGTERM);
    ``between`` runs after each look (the removal of replaced snapshots)."""
    stopping = stop or _stop_on_signals()
    published: dict[str, str] | None = None
    while True:
        try:
            ciphertexts = _inputs(settings)
            if ciphertexts != published:
                count = publish(ciphertexts)
                where = f"{settings.decrypted_path} as {settings.output_format}"
                print(f"{program}: published {count} decrypted item(s) to {where}", flush=True)
                published = ciphertexts
        except ClientError as exc:
            if published is None and stop is None:
                raise  # no files yet: fail like a plain kamus-init (the kubelet restarts it)
            # The last published files stay in place; the next interval tries again. Escaped as
            # kamus_client.program prints errors: no control or bidi character on the terminal.
            print(f"{program}: error: {escape_unsafe(str(exc))} (the last published files are"
                  " kept)", file=sys.stderr, flush=True)  # fmt: skip
        if between is not None:
            between()
        if stopping.wait(settings.watch_interval):
            print(f"{program}: stopping", flush=True)
            return 0


def _inputs(settings: Settings) -> dict[str, str]:
    return read_ciphertexts(
        settings.encrypted_folders,
        encrypted_files=settings.encrypted_files,
        skip=(settings.template.path,) if settings.template is not None else (),
    )


def _stop_on_signals() -> threading.Event:
    event = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return event
