"""Keeping a Kamus process's memory out of core dumps and away from same-user readers.

Every Kamus program holds plaintexts, tokens or keys in memory: a crash (or a ``kill -SEGV``)
under ``ulimit -c unlimited`` would write them to a core file. ``forbid_core_dumps`` sets
``RLIMIT_CORE`` to 0 (soft and hard) and, on Linux, clears the process's dumpable flag
(``prctl(PR_SET_DUMPABLE, 0)``): the limit alone does not stop a core piped to a handler
(``/proc/sys/kernel/core_pattern`` starting with ``|``), the flag does, and it also keeps other
processes of the same user from reading ``/proc/<pid>/mem`` and ``environ`` or attaching a
debugger. Both pass to forked children (gunicorn's workers); an ``exec`` resets the flag, so each
program calls this at its start.

Here in the client distribution because every component may import it (kamus-init imports only
the client and itself), and kept to the standard library, loaded when called, for kamus-init's
start time.
"""

from __future__ import annotations

import sys

_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def forbid_core_dumps() -> None:
    """Set the core file size limit to 0 and, on Linux, make the process non-dumpable.

    Raises ``OSError`` when the kernel refuses either (it does not for an unprivileged process
    lowering its own limit or flag).
    """
    try:
        import resource  # noqa: PLC0415 - kept off the import path of kamus-init's start
    except ImportError:  # Windows: no core files to forbid
        _log_skipped("no core size limit or dumpable flag on this system")
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not sys.platform.startswith("linux"):
        _log_skipped(f"core size limit set to 0; no dumpable flag on {sys.platform}")
        return
    import ctypes  # noqa: PLC0415 - as above

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_DUMPABLE, 0) failed: errno {errno}")


def _log_skipped(what: str) -> None:
    import logging  # noqa: PLC0415 - only off Linux

    logging.getLogger(__name__).debug("core dumps: %s", what)
