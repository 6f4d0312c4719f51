"""SoftHSM2 as the PKCS#11 conformance backend: a private token directory per test run.

The outage moves the token directory away. SoftHSM2 then answers C_GetTokenInfo with
CKR_GENERAL_ERROR and finds no objects in every process that uses the token, gunicorn workers
included, and a module initialized afresh cannot load its object store; putting the directory back
ends the outage (the adapter initializes the module again on its next call).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kms_backend import envelope_provider, key_mode_env
from prometheus_client import CollectorRegistry

from kamus_kms.ciphertext import Ciphertext
from kamus_kms.provider import KeyMode, KeyProvider
from kamus_kms.providers.pkcs11 import Pkcs11Kms, wrapped_key_version

LIBRARY_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "kamus-test"
USER_PIN = "kamus-user-4711"
SO_PIN = "kamus-so-0815"
SHARED_KEY = "kamus-shared"
# Reads every attribute an operator would check, in a process of its own (PKCS#11 login is per
# process, so the test runner's session cannot stand in for an operator's).
_INSPECT = """
import json, sys, pkcs11
from pkcs11.constants import Attribute, ObjectClass
library, label, pin, key_label = sys.argv[1:]
names = ("SENSITIVE", "ALWAYS_SENSITIVE", "EXTRACTABLE", "NEVER_EXTRACTABLE", "TOKEN", "PRIVATE",
         "ENCRYPT", "DECRYPT", "WRAP", "UNWRAP", "SIGN", "VERIFY", "DERIVE", "VALUE_LEN")
template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: key_label}
with pkcs11.lib(library).get_token(token_label=label).open(user_pin=pin) as session:
    keys = list(session.get_objects(template))
    found = [{n: key[Attribute[n]] for n in names} | {"ID": key.id.hex()} for key in keys]
print(json.dumps(found))
"""


def library_path() -> str:
    """Where SoftHSM2's PKCS#11 module is installed."""
    for path in LIBRARY_PATHS:
        if Path(path).is_file():
            return path
    raise RuntimeError(f"libsofthsm2.so not found in {', '.join(LIBRARY_PATHS)}")


class Pkcs11Backend:
    """One SoftHSM2 token in the workdir, shared by every provider it makes."""

    name = "pkcs11"
    modes = (KeyMode.SHARED, KeyMode.PER_SERVICE_ACCOUNT)

    def __init__(self, workdir: Path) -> None:
        self.library = library_path()
        self.tokens = workdir / "tokens"
        self.tokens.mkdir()
        self.conf = workdir / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n"
        )
        self.naming_key = os.urandom(32)
        softhsm2_util = shutil.which("softhsm2-util") or "softhsm2-util"
        subprocess.run(
            [softhsm2_util, "--init-token", "--free", "--label", TOKEN_LABEL,
             "--so-pin", SO_PIN, "--pin", USER_PIN],
            env=self.env(), check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        """This process's environment with the private SoftHSM2 configuration."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def kms(self, *, pin: str = USER_PIN, token_label: str = TOKEN_LABEL) -> Pkcs11Kms:
        """An adapter over the token."""
        return Pkcs11Kms(library=self.library, token_label=token_label, pin=pin)

    def provider(self, mode: KeyMode, registry: CollectorRegistry) -> KeyProvider:
        return envelope_provider(self.kms(), mode, registry, SHARED_KEY, self.naming_key)

    def service_env(self, mode: KeyMode) -> dict[str, str]:
        env = {
            "KAMUS_PROVIDER": "pkcs11",
            "KAMUS_PKCS11_LIBRARY": self.library,
            "KAMUS_PKCS11_TOKEN_LABEL": TOKEN_LABEL,
            "KAMUS_PKCS11_PIN": USER_PIN,
            "SOFTHSM2_CONF": str(self.conf),
        }
        env |= key_mode_env(mode, SHARED_KEY, self.naming_key)
        return env

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        away = self.tokens.with_name("tokens-outage")
        self.tokens.rename(away)
        try:
            yield
        finally:
            if self.tokens.exists():
                self.tokens.rmdir()
            away.rename(self.tokens)

    def rotate(self, provider: KeyProvider, key_id: str) -> None:
        self.kms().rotate_key(key_id)

    def version_of(self, provider: KeyProvider, ciphertext: str) -> str:
        return str(wrapped_key_version(Ciphertext.parse(ciphertext).wrapped_key))

    def inspect_keys(self, key_label: str) -> list[dict[str, Any]]:
        """The attributes of every key labelled `key_label`, read by another process."""
        result = subprocess.run(
            [sys.executable, "-c", _INSPECT, self.library, TOKEN_LABEL, USER_PIN, key_label],
            env=self.env(), check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        keys: list[dict[str, Any]] = json.loads(result.stdout)
        return keys


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[Pkcs11Backend]:
    """A fresh SoftHSM2 token holding the shared key; SOFTHSM2_CONF points at it meanwhile."""
    previous = os.environ.get("SOFTHSM2_CONF")
    backend = Pkcs11Backend(workdir)
    # SoftHSM2 reads its configuration when this process first initializes the module.
    os.environ["SOFTHSM2_CONF"] = str(backend.conf)
    try:
        backend.kms().ensure_key(SHARED_KEY)
        yield backend
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
