"""The ``template`` output format: a Jinja2 template rendered in a sandbox.

The equivalent of Kamus's EJS ``custom`` format (docs/CLI.md has the translation table). The
template sees one variable, ``secrets`` (``{name: plaintext}``, read-only), and a few filters.
It runs in Jinja2's ImmutableSandboxedEnvironment: no attribute starting with ``_``, no
mutation of ``secrets``, no file access (``include`` and ``extends`` find nothing). Undefined
names are errors (StrictUndefined) and nothing is HTML-escaped.

Error messages never quote a plaintext: a Jinja2 message that happens to contain one is dropped,
and other exceptions are reported by their type only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from kamus_client.errors import InputError
from kamus_init.jsonvalues import stringify_if_json

TYPE_CHECKING = False  # not typing's: see kamus_client.transport
if TYPE_CHECKING:
    from typing import Any

    from jinja2.sandbox import ImmutableSandboxedEnvironment

# Jinja2 is imported only when a template is used: kamus-init's other formats, run at every pod
# start, do not pay for it (about 90 ms on the reference machine).

TEMPLATE_SUFFIXES = (".j2", ".jinja2", ".jinja")
_MAX_MESSAGE = 200


def _from_json(text: str) -> Any:
    from jinja2.exceptions import TemplateError  # noqa: PLC0415 - see above

    try:
        return json.loads(text)
    except ValueError as exc:
        raise TemplateError("from_json: the value is not JSON") from exc


def _to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _environment(path: Path, source: str) -> ImmutableSandboxedEnvironment:
    import shlex  # noqa: PLC0415 - see above

    import jinja2  # noqa: PLC0415 - see above
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.FunctionLoader(
            lambda name: (source, str(path), lambda: True) if name == str(path) else None
        ),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        # EJS keeps the template's last newline; so do we, for byte-for-byte translations.
        keep_trailing_newline=True,
    )
    environment.filters.update(
        {
            "json": _to_json,
            "from_json": _from_json,
            "stringify_if_json": stringify_if_json,
            "shell_quote": shlex.quote,
        }
    )
    return environment


def default_output_name(path: Path) -> str | None:
    """``app.properties.j2`` → ``app.properties``; None without a template suffix."""
    for suffix in TEMPLATE_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


class TemplateFile:
    """A template read and compiled once, at start-up, so syntax errors come before any call."""

    def __init__(self, path: Path) -> None:
        from jinja2.exceptions import TemplateSyntaxError  # noqa: PLC0415 - see above

        self.path = path
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the template {path} (a UTF-8 text file)") from exc
        self._environment = _environment(path, source)
        try:
            self._template = self._environment.get_template(str(path))
        except TemplateSyntaxError as exc:
            raise InputError(
                f"the template {path} has a syntax error at line {exc.lineno}: {exc.message}"
            ) from exc

    def render(self, plaintexts: Mapping[str, str]) -> str:
        """Render with ``secrets``; raise InputError (nothing is written) on any failure."""
        from jinja2.exceptions import (  # noqa: PLC0415 - see above
            SecurityError,
            TemplateError,
            UndefinedError,
        )

        try:
            return self._template.render(secrets=dict(plaintexts))
        except SecurityError as exc:
            raise InputError(
                f"the template {self.path} was stopped by the sandbox{self._where(exc)}:"
                f" {self._safe_message(exc, plaintexts)}"
            ) from exc
        except UndefinedError as exc:
            raise InputError(
                f"the template {self.path} uses something undefined{self._where(exc)}:"
                f" {self._safe_message(exc, plaintexts)}"
            ) from exc
        except TemplateError as exc:
            raise InputError(
                f"the template {self.path} failed{self._where(exc)}:"
                f" {self._safe_message(exc, plaintexts)}"
            ) from exc
        except Exception as exc:
            # Python's own messages may quote the values involved: show only the type.
            raise InputError(
                f"the template {self.path} failed{self._where(exc)}: {type(exc).__name__}"
            ) from exc

    def _where(self, exc: BaseException) -> str:
        # Jinja2 rewrites tracebacks so template lines appear as frames of the template file.
        line = None
        trace: TracebackType | None = exc.__traceback__
        while trace is not None:
            if trace.tb_frame.f_code.co_filename == str(self.path):
                line = trace.tb_lineno
            trace = trace.tb_next
        return f" at line {line}" if line is not None else ""

    @staticmethod
    def _safe_message(exc: BaseException, plaintexts: Mapping[str, str]) -> str:
        # Only syntax errors are about the template's own text; any other message may quote a
        # value computed from a secret (a part of it, a transformed form), so only its type.
        from jinja2.exceptions import TemplateSyntaxError  # noqa: PLC0415 - see above

        if not isinstance(exc, TemplateSyntaxError):
            return type(exc).__name__
        message = " ".join(str(exc).split())[:_MAX_MESSAGE]
        if not message or any(value and value in str(exc) for value in plaintexts.values()):
            return type(exc).__name__
        return message
