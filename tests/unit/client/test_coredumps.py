"""forbid_core_dumps, run in a fresh interpreter: it changes the process it runs in."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import ctypes, logging, resource, sys
logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")
sys.platform = {platform!r}
from kamus_client.coredumps import forbid_core_dumps
forbid_core_dumps()
print(resource.getrlimit(resource.RLIMIT_CORE), ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the flag with prctl")
@pytest.mark.parametrize(
    ("platform", "dumpable", "logged"),
    [
        ("linux", 0, ""),
        ("darwin", 1, "kamus_client.coredumps core dumps: core size limit set to 0; no dumpable "
                      "flag on darwin\n"),
    ],
)  # fmt: skip
def test_the_core_limit_is_0_everywhere_and_the_flag_cleared_on_linux(
    platform: str, dumpable: int, logged: str
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", CHECK.format(platform=platform)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert finished.stdout == f"(0, 0) {dumpable}\n"
    assert finished.stderr == logged
