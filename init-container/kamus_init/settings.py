"""Flags and environment of kamus-init, parsed once into typed settings."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kamus_cli.arguments import file_mode, positive_seconds
from kamus_cli.client import package_version, parse_base_url
from kamus_cli.errors import InputError
from kamus_init.credentials import token_path
from kamus_init.formats import FORMATS, check_file_name

DEFAULT_FILE_NAME = "config.json"  # the name Kamus's own examples pass with -n
DEFAULT_FORMAT = "json"  # Kamus's default
DEFAULT_FILE_MODE = 0o400
DEFAULT_DEADLINE = 60.0


@dataclass(frozen=True)
class Settings:
    """Everything kamus-init needs, validated."""

    encrypted_folders: tuple[Path, ...]
    decrypted_path: Path
    decrypted_file_name: str
    output_format: str
    file_mode: int
    deadline: float
    kamus_url: str
    token_path: Path


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of kamus-init's Kamus-compatible flags."""
    parser = argparse.ArgumentParser(
        prog="kamus-init",
        description=(
            "Decrypt every ciphertext in the encrypted folders with one call to the Kamus"
            " decryptor and write the plaintexts to the decrypted path, all or nothing."
            " Environment: KAMUS_URL (required), TOKEN_FILE_PATH."
        ),
    )
    parser.add_argument("-V", "--version", action="version", version=package_version())
    parser.add_argument(
        "-e",
        "--encrypted-folders",
        action="append",
        required=True,
        metavar="PATHS",
        help="folder(s) holding one ciphertext per file; comma-separated and/or repeated",
    )
    parser.add_argument(
        "-d", "--decrypted-path", type=Path, required=True, help="folder to write into"
    )
    parser.add_argument(
        "-n",
        "--decrypted-file-name",
        default=DEFAULT_FILE_NAME,
        help=f"output file name for single-file formats (default: {DEFAULT_FILE_NAME})",
    )
    parser.add_argument(
        "-f",
        "--output-format",
        type=str.lower,
        choices=sorted(FORMATS),
        default=DEFAULT_FORMAT,
        help=f"output format (default: {DEFAULT_FORMAT})",
    )
    parser.add_argument(
        "--file-mode",
        type=file_mode,
        default=DEFAULT_FILE_MODE,
        help=f"octal mode of the written files (default: {DEFAULT_FILE_MODE:04o})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_DEADLINE,
        help=f"overall deadline in seconds, retries included (default: {DEFAULT_DEADLINE:g})",
    )
    return parser


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Settings:
    """Parse ``argv`` and ``environ``; argparse exits 2 on bad flags, InputError for the rest."""
    args = build_parser().parse_args(argv)
    folders = tuple(
        Path(part.strip())
        for value in args.encrypted_folders
        for part in value.split(",")
        if part.strip()
    )
    problems: list[str] = []
    if not folders:
        problems.append("-e/--encrypted-folders names no folder")
    url = environ.get("KAMUS_URL", "").strip()
    if not url:
        problems.append("KAMUS_URL is not set")
    else:
        try:
            url = parse_base_url(url)
        except InputError as exc:
            problems.append(str(exc))
    try:
        check_file_name(args.decrypted_file_name)
    except InputError as exc:
        problems.append(f"-n/--decrypted-file-name: {exc}")
    if problems:
        raise InputError("; ".join(problems))
    return Settings(
        encrypted_folders=folders,
        decrypted_path=args.decrypted_path,
        decrypted_file_name=args.decrypted_file_name,
        output_format=args.output_format,
        file_mode=args.file_mode,
        deadline=args.timeout,
        kamus_url=url,
        token_path=token_path(environ),
    )
