"""The version of Kamus's client programs, sent in every User-Agent.

A constant rather than ``importlib.metadata``: that import alone costs kamus-init more than its
whole HTTP exchange, and kamus-init's start is paid at every pod start. ``tests/unit/client``
checks that every distribution of the repository declares this same version.
"""

from __future__ import annotations

VERSION = "0.1.0"


def user_agent(program: str) -> str:
    """Return the User-Agent of ``program`` (``kamus-cli`` or ``kamus-init``), as Kamus sends it."""
    return f"{program}-{VERSION}"
