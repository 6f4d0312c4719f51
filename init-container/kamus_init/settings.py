"""Flags and environment of kamus-init, parsed once into typed settings."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from kamus_client import environment
from kamus_client.api import parse_base_url
from kamus_client.arguments import HelpFormatter, file_mode, positive_seconds
from kamus_client.errors import InputError
from kamus_client.version import VERSION
from kamus_init.credentials import token_path
from kamus_init.formats import FORMATS, check_file_name
from kamus_init.templates import TemplateFile, default_output_name

# The json name is the one Kamus's own examples pass with -n; the others follow it.
DEFAULT_FILE_NAMES = {
    "json": "config.json",
    "cfg": "config.cfg",
    "cfg-strict": "config.cfg",
    "env": "config.env",
    "yaml": "config.yaml",
}
DEFAULT_FORMAT = "json"  # Kamus's default
DEFAULT_FILE_MODE = 0o400
DEFAULT_DEADLINE = 60.0
DEFAULT_WATCH_INTERVAL = 5.0


class Settings:
    """Everything kamus-init needs, validated (a plain class: see kamus_client.transport)."""

    __slots__ = (
        "ca_bundle",
        "deadline",
        "decrypted_file_name",
        "decrypted_path",
        "encrypted_files",
        "encrypted_folders",
        "file_mode",
        "kamus_url",
        "output_format",
        "raw_cfg_values",
        "template",
        "token_path",
        "watch",
        "watch_interval",
    )

    def __init__(
        self,
        *,
        encrypted_folders: tuple[Path, ...],
        decrypted_path: Path,
        decrypted_file_name: str,
        output_format: str,
        file_mode: int,
        deadline: float,
        kamus_url: str,
        token_path: Path,
        encrypted_files: tuple[Path, ...] = (),
        template: TemplateFile | None = None,
        ca_bundle: Path | None = None,
        raw_cfg_values: bool = False,
        watch: bool = False,
        watch_interval: float = DEFAULT_WATCH_INTERVAL,
    ) -> None:
        self.encrypted_folders = encrypted_folders
        self.decrypted_path = decrypted_path
        self.decrypted_file_name = decrypted_file_name
        self.output_format = output_format
        self.file_mode = file_mode
        self.deadline = deadline
        self.kamus_url = kamus_url
        self.token_path = token_path
        self.encrypted_files = encrypted_files
        self.template = template
        self.ca_bundle = ca_bundle
        self.raw_cfg_values = raw_cfg_values
        self.watch = watch
        self.watch_interval = watch_interval


def output_format(value: str) -> str:
    """Parse -f: a known format, any case; Kamus's EJS ``custom`` gets a pointer to ``template``."""
    name = value.lower()
    if name == "custom":
        raise argparse.ArgumentTypeError(
            "Kamus's EJS 'custom' format is not supported: translate template.ejs to Jinja2"
            " (docs/CLI.md) and pass -f template --template FILE"
        )
    if name not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"unknown format {value!r}; choose from {', '.join(FORMATS)}"
        )
    return name


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of kamus-init's Kamus-compatible flags."""
    parser = argparse.ArgumentParser(
        prog="kamus-init",
        description=(
            "Decrypt every ciphertext in the encrypted folders (and --encrypted-file maps) with"
            " one call to the Kamus decryptor and write the plaintexts to the decrypted path,"
            " all or nothing. Environment: KAMUS_URL (required), TOKEN_FILE_PATH,"
            f" {environment.CA_BUNDLE}."
        ),
        epilog=(
            "examples:\n"
            "  kamus-init -e /encrypted -d /decrypted -f files\n"
            "  kamus-init -e /encrypted,/shared -d /decrypted -f env -n app.env\n"
            "  kamus-init --encrypted-file /encrypted/secrets.yaml -d /decrypted -f yaml\n"
            "  kamus-init -e /encrypted -d /decrypted -f template --template /tpl/app.conf.j2\n"
            "\nexit codes: 0 ok, 2 usage, 3 input, 4 output, 5 refused, 6 unavailable,\n"
            "  7 TLS, 8 not the Kamus API (docs/CLI.md)"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=VERSION)
    parser.add_argument(
        "-e",
        "--encrypted-folders",
        action="append",
        default=[],
        metavar="PATHS",
        help="folder(s) holding one ciphertext per file; comma-separated and/or repeated",
    )
    parser.add_argument(
        "--encrypted-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a YAML or JSON map {name: ciphertext}, or a ConfigMap manifest; repeatable,"
        " instead of or besides -e",
    )
    parser.add_argument(
        "-d", "--decrypted-path", type=Path, required=True, help="folder to write into"
    )
    parser.add_argument(
        "-n",
        "--decrypted-file-name",
        help="output file name for single-file formats (default: config.json, config.cfg,"
        " config.env, config.yaml; for template, the template's name without .j2)",
    )
    parser.add_argument(
        "-f",
        "--output-format",
        type=output_format,
        default=DEFAULT_FORMAT,
        metavar="FORMAT",
        help=f"{', '.join(FORMATS)} (default: {DEFAULT_FORMAT})",
    )
    parser.add_argument(
        "--template",
        type=Path,
        metavar="FILE",
        help="Jinja2 template for -f template, rendered in a sandbox with `secrets`; a file in"
        " an encrypted folder is not taken as a ciphertext",
    )
    parser.add_argument(
        "--raw-cfg-values",
        action="store_true",
        help="cfg and cfg-strict: write values exactly as Kamus did, even with a line break"
        " (or, in cfg-strict, a double quote) that lets a value add or override keys",
    )
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help=f"PEM file of the CAs that sign the decryptor's certificate"
        f" (default: ${environment.CA_BUNDLE})",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="keep running (a native sidecar): publish again whenever the ciphertexts change,"
        " each time as one atomic snapshot behind ..data; stop on SIGTERM",
    )
    parser.add_argument(
        "--watch-interval",
        type=positive_seconds,
        default=DEFAULT_WATCH_INTERVAL,
        metavar="SECONDS",
        help=f"how often --watch looks for changes (default: {DEFAULT_WATCH_INTERVAL:g})",
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
    if not folders and not args.encrypted_file:
        problems.append("no input: pass -e/--encrypted-folders and/or --encrypted-file")
    url = environment.value(environment.URL, environ) or ""
    if not url:
        problems.append(f"{environment.URL} is not set")
    else:
        try:
            url = parse_base_url(url)
        except InputError as exc:
            problems.append(str(exc))
    template = None
    if args.output_format == "template" and args.template is None:
        problems.append("-f template needs --template FILE")
    elif args.output_format != "template" and args.template is not None:
        problems.append("--template is only used with -f template")
    elif args.template is not None:
        try:
            template = TemplateFile(args.template)
        except InputError as exc:
            problems.append(str(exc))
    file_name = args.decrypted_file_name
    if file_name is None:
        file_name = _default_file_name(args.output_format, args.template)
    if file_name is None:
        problems.append("-n/--decrypted-file-name is needed: the template's name has no .j2")
    else:
        try:
            check_file_name(file_name)
        except InputError as exc:
            problems.append(f"-n/--decrypted-file-name: {exc}")
    ca_bundle = args.ca_bundle or _path_from(environ, environment.CA_BUNDLE)
    if ca_bundle is not None and not ca_bundle.is_file():
        problems.append(f"the CA bundle {ca_bundle} is not a readable file")
    if problems:
        raise InputError("; ".join(problems))
    return Settings(
        encrypted_folders=folders,
        decrypted_path=args.decrypted_path,
        decrypted_file_name=file_name or "",
        output_format=args.output_format,
        file_mode=args.file_mode,
        deadline=args.timeout,
        kamus_url=url,
        token_path=token_path(environ),
        encrypted_files=tuple(args.encrypted_file),
        template=template,
        ca_bundle=ca_bundle,
        raw_cfg_values=args.raw_cfg_values,
        watch=args.watch,
        watch_interval=args.watch_interval,
    )


def _default_file_name(output_format: str, template: Path | None) -> str | None:
    if output_format == "template":
        return default_output_name(template) if template is not None else "config"
    return DEFAULT_FILE_NAMES.get(output_format, DEFAULT_FILE_NAMES[DEFAULT_FORMAT])


def _path_from(environ: Mapping[str, str], name: str) -> Path | None:
    value = environment.value(name, environ)
    return Path(value) if value else None
