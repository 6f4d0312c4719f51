"""Entry point of ``kamus-cli``: parse the command line, run a command, map errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from kamus_cli import decryption, encrypt, inspection, keyring, keyscan, offlinesealing, seal
from kamus_client.arguments import paragraph
from kamus_client.exitcodes import ExitCode
from kamus_client.program import run_program
from kamus_client.version import VERSION

PROGRAM = "kamus-cli"
EPILOG = """\
exit codes:
  0 success            1 unexpected error (a bug)   2 usage error
  3 input or configuration error                    4 an output file could not be written
  5 the server refused (4xx)                        6 the server is unavailable (5xx, network)
  7 TLS failure                                     8 the answer is not the Kamus API
  10 a key to retire is still in use (keys scan --uses, keyring retire --scan)
Details: docs/CLI.md.
"""


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Return the parser of every command; each command module registers its own sub-parser."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=paragraph(
            "Kamus command line: encrypt secrets for one namespace and service account, seal"
            " Secret manifests into ConfigMaps, inspect, rewrap and (for debugging) decrypt"
            " ciphertexts, and manage a local keyring. `kamus-cli COMMAND --help` for details."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=VERSION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    encrypt.register(commands, environ)
    seal.register(commands, environ)
    inspection.register(commands, environ)
    decryption.register(commands, environ)
    keyring.register(commands, environ)
    offlinesealing.register(commands, environ)
    keyscan.register(commands, environ)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run ``kamus-cli`` and return its exit code (argparse exits 2 itself on usage errors)."""
    parser = build_parser(os.environ if environ is None else environ)
    args = parser.parse_args(argv)

    def call() -> int:
        args.run(args)
        return ExitCode.OK

    return run_program(PROGRAM, call)


if __name__ == "__main__":
    sys.exit(main())
