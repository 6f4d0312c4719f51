"""Every environment variable the client programs read, in one specification.

kamus-init, kamus-cli and kamus-audit read their variables through :func:`value`, which applies
the rule the services apply to theirs: a secret variable may instead be given as ``<NAME>_FILE``
(a path; a trailing line break is not part of the value), never both. The services take these
names as known, so a pod spec that sets them for a Kamus container is not refused as a typo, and
the README's client table is rendered from :data:`VARIABLES`.

Standard variables that are not Kamus's own (``KUBECONFIG``, ``HTTPS_PROXY``, ``NO_PROXY``,
``SSL_CERT_FILE``) are honoured as everywhere else and are not listed here.
"""

from __future__ import annotations

from collections.abc import Mapping

from kamus_client.errors import InputError

URL = "KAMUS_URL"
DECRYPTOR_URL = "KAMUS_DECRYPTOR_URL"
CA_BUNDLE = "KAMUS_CA_BUNDLE"
TOKEN_FILE = "TOKEN_FILE_PATH"  # noqa: S105 - a variable name
AUDIT_KEY = "KAMUS_AUDIT_KEY"


class Variable:
    """One client variable: its name, who reads it, what it means, whether it is secret."""

    __slots__ = ("help", "name", "programs", "secret")

    def __init__(self, name: str, programs: str, help: str, *, secret: bool = False) -> None:
        self.name = name
        self.programs = programs
        self.help = help
        self.secret = secret


VARIABLES = (
    Variable(
        URL,
        "kamus-init, kamus-cli encrypt and seal",
        "Base URL of the decryptor (kamus-init; required) or of the encryptor (kamus-cli; "
        "`-u/--kamus-url` wins).",
    ),
    Variable(
        DECRYPTOR_URL,
        "kamus-cli decrypt and rewrap",
        "Base URL of the decryptor (`-u/--kamus-url` wins).",
    ),
    Variable(
        CA_BUNDLE,
        "kamus-init, kamus-cli",
        "PEM file of the CAs that sign the service's certificate, trusted instead of the "
        "system's (`--ca-bundle` wins).",
    ),
    Variable(
        TOKEN_FILE,
        "kamus-init",
        "File holding the service-account token sent to the decryptor, read again for every "
        "attempt (default: `/var/run/secrets/kamus/token`, the projected token with the `kamus` "
        "audience). Kamus's name, kept for compatibility.",
    ),
    Variable(
        AUDIT_KEY,
        "kamus-audit",
        "The decryptor's audit key (base64), which verifies the audit file's chain "
        "(`--key-file` wins).",
        secret=True,
    ),
)
# Every name a client reads, ``_FILE`` forms included.
NAMES = frozenset(
    [variable.name for variable in VARIABLES]
    + [f"{variable.name}_FILE" for variable in VARIABLES if variable.secret]
)


def value(name: str, environ: Mapping[str, str]) -> str | None:
    """The variable's value without surrounding white space, or None when unset or empty.

    For a secret variable, ``<name>_FILE`` names a file holding the value (UTF-8; a trailing
    line break is dropped); setting both is an InputError, as in the services.
    """
    (variable,) = [known for known in VARIABLES if known.name == name]
    direct = environ.get(name)
    path = environ.get(f"{name}_FILE") if variable.secret else None
    if direct is not None and path is not None:
        raise InputError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        return read_value_file(f"{name}_FILE", path)
    text = (direct or "").strip()
    return text or None


def read_value_file(source: str, path: str) -> str:
    """The value held in the file ``path`` named by ``source``; InputError if unreadable."""
    try:
        # Files made with `echo` or an editor end in a newline that is never part of a value.
        with open(path, encoding="utf-8") as stream:
            return stream.read().rstrip("\r\n")
    except OSError as exc:
        raise InputError(f"{source}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        # Never the decoder's message: it quotes a byte of the secret.
        raise InputError(f"{source}: {path} is not UTF-8 text (keys go in base64)") from None


def markdown_table() -> str:
    """The README's table of client variables, rendered from VARIABLES."""
    rows = ["| variable | used by | meaning |", "|---|---|---|"]
    for variable in VARIABLES:
        names = f"`{variable.name}`" + (f" / `{variable.name}_FILE`" if variable.secret else "")
        rows.append(f"| {names} | {variable.programs} | {variable.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")  # the README's table: python -m kamus_client.environment
