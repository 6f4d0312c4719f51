"""``kamus-init --watch``: a native sidecar that keeps the decrypted files current.

After the first publication it polls the inputs every ``--watch-interval`` seconds: the
ciphertexts of the encrypted folders (a ConfigMap volume changes by the kubelet's atomic ``..data``
swap) and ``--encrypted-file`` maps. When they differ from the last published ones, it decrypts
them again (the token file is read anew for every attempt: the kubelet refreshes it) and
publishes a new snapshot atomically (kamus_init.snapshots). A failure keeps the last good files
and is logged on one line; the same inputs are tried again after the interval, then after twice,
four times as long, up to ``BACKOFF_MAXIMUM``; changed inputs at the next look. SIGTERM (the pod
stopping) ends it with exit 0.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable

from kamus_client.errors import ClientError
from kamus_client.terminal import escape_unsafe
from kamus_init.settings import Settings
from kamus_init.sources import read_ciphertexts

BACKOFF_MAXIMUM = 300.0  # seconds between tries of the same refused inputs, at most


def watch(
    settings: Settings,
    publish: Callable[[dict[str, str]], int],
    *,
    stop: threading.Event | None = None,
    program: str = "kamus-init",
    between: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Publish now and whenever the ciphertexts change, until ``stop`` is set (or SIGTERM);
    ``between`` runs after each look (the removal of replaced snapshots)."""
    stopping = stop or _stop_on_signals()
    published: dict[str, str] | None = None
    failed: dict[str, str] | None = None  # the inputs of the last failure, backed off
    failures = 0
    retry_at = 0.0
    while True:
        ciphertexts: dict[str, str] | None = None
        reason = ""
        try:
            ciphertexts = _inputs(settings)
            due = ciphertexts != failed or clock() >= retry_at
            if ciphertexts != published and due:
                count = publish(ciphertexts)
                where = f"{settings.decrypted_path} as {settings.output_format}"
                print(f"{program}: published {count} decrypted item(s) to {where}", flush=True)
                published, failed, failures = ciphertexts, None, 0
        except ClientError as exc:
            if published is None and stop is None:
                raise  # no files yet: fail like a plain kamus-init (the kubelet restarts it)
            # Escaped as kamus_client.program prints errors: no control or bidi character.
            reason = escape_unsafe(str(exc))
        except Exception as exc:
            if published is None and stop is None:
                raise
            # A bug must not take the published files down with the sidecar; its message might
            # quote a plaintext, so only its type.
            reason = f"unexpected error ({type(exc).__name__}); this is a bug"
        if reason:
            # The same inputs are tried again after a doubling wait: a refused ciphertext re-sent
            # every interval floods the audit log and looks like probing. Changed inputs go at once.
            failures = failures + 1 if ciphertexts is not None and ciphertexts == failed else 1
            failed = ciphertexts
            wait = min(settings.watch_interval * 2 ** (failures - 1),
                       max(BACKOFF_MAXIMUM, settings.watch_interval))  # fmt: skip
            retry_at = clock() + wait
            print(f"{program}: error: {reason} (the last published files are kept; next try in"
                  f" {wait:.3g} s, or as soon as the ciphertexts change)",
                  file=sys.stderr, flush=True)  # fmt: skip
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
