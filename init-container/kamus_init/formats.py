"""Output formats: each turns the plaintexts into ``{file name: content}`` for the output folder.

A format is a function ``(plaintexts, spec) -> {file name: bytes}`` registered in ``FORMATS``; it
writes nothing itself (:mod:`kamus_init.outputs` does, atomically). Items arrive in name order.

``files``, ``json``, ``cfg`` and ``cfg-strict`` write the bytes Kamus's init container wrote (its
EJS templates), including its harmless quirks: like Kamus, whose HTTP client parsed every
plaintext as JSON when it could, a plaintext that is a JSON object or array is written as compact
JSON, and
``cfg-strict`` leaves JSON numbers, booleans and ``null`` unquoted. Where Kamus's quirks corrupt
data they are not copied: strings are escaped in ``json``, and a number keeps its own spelling
(Kamus wrote ``1.50`` as ``1.5``). docs/CLI.md lists every difference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from kamus_client.errors import InputError
from kamus_init.jsonvalues import compact_json, parsed_json, stringify_if_json
from kamus_init.templates import TemplateFile

_MAX_NAME_BYTES = 255
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that mean the same bare in POSIX sh, bash and docker's --env-file: a value made only
# of these is written unquoted, so every reader sees exactly the same bytes.
_ENV_BARE = re.compile(r"[A-Za-z0-9_@%+=:,./-]*")
# Line breaks and other control characters (C0 but the tab, DEL, C1, U+2028, U+2029) and lone
# surrogates: what cannot stay on one line or be written as UTF-8. Spaces such as U+00A0 and
# U+3000 are printable text and go single-quoted.
_ENV_REFUSED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class OutputSpec:
    """What a format needs besides the plaintexts.

    ``raw_cfg_values``: Kamus's cfg, values written as they are, line breaks included.
    """

    __slots__ = ("file_name", "raw_cfg_values", "template")

    def __init__(
        self,
        file_name: str,
        template: TemplateFile | None = None,
        raw_cfg_values: bool = False,
    ) -> None:
        self.file_name = file_name
        self.template = template
        self.raw_cfg_values = raw_cfg_values


Format = Callable[[Mapping[str, str], OutputSpec], dict[str, bytes]]


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain, visible file name; raise InputError otherwise."""
    if (
        not name
        or name.startswith(".")
        or any(ch in name for ch in "/\\\0")
        or len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES
    ):
        raise InputError(f"{name!r} cannot be an output file name (empty, hidden or a path)")
    return name


def render_files(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """One file per item, named by the item: the plaintext, a JSON object or array compacted."""
    return {
        check_file_name(name): stringify_if_json(value, name).encode("utf-8")
        for name, value in plaintexts.items()
    }


def render_json(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """Kamus's json.ejs layout: ``{ `` line, one ``    "name":value,`` line per item, ``}``.

    As the last Kamus releases (1.3.0 to 1.4.3) write it: a comma right after each value but the
    last (releases up to 1.2.0 wrote `` ,``).
    """
    lines = []
    for index, (name, plaintext) in enumerate(plaintexts.items()):
        ok, value = parsed_json(plaintext, name)
        # Kamus embedded objects and arrays as JSON; everything else as a string (Kamus did not
        # escape it, so a quote broke the file: we do).
        text = (
            compact_json(value, name)
            if ok and isinstance(value, dict | list)
            else compact_json(plaintext)
        )
        separator = "," if index < len(plaintexts) - 1 else ""
        lines.append(f"    {compact_json(name)}:{text}{separator}\n")
    return _single(spec, "{ \n" + "".join(lines) + "}")


# Characters that end a line for some reader of a cfg file (Python's splitlines() among them).
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
# The characters of a ConfigMap key: a cfg name of others may start a line, a comment or a section,
# or (with "=") set another key. Names from --encrypted-file are not ConfigMap keys until checked.
_CFG_NAME = re.compile(r"[-._A-Za-z0-9]+")


def _check_names(plaintexts: Mapping[str, str], pattern: re.Pattern[str], what: str) -> None:
    """InputError naming every item name ``pattern`` refuses (``what``: the names it allows)."""
    invalid = [name for name in plaintexts if not pattern.fullmatch(name)]
    if invalid:
        listed = ", ".join(repr(name) for name in invalid)
        raise InputError(f"{listed} cannot be {what}; rename the keys or use another format")


def _check_cfg_names(plaintexts: Mapping[str, str]) -> None:
    _check_names(plaintexts, _CFG_NAME, "cfg names (letters, digits, '-', '_' and '.', as in a "
                 "ConfigMap key; --raw-cfg-values does not change that)")  # fmt: skip


def _cfg_line(name: str, value: str, spec: OutputSpec, *, quoted: bool = False) -> str:
    """``name=value``, refusing a value that would add or override keys (unless raw).

    Anyone may encrypt for a scope, so a value is not trusted: a line break in it starts a line of
    the attacker's choosing, and in cfg-strict a ``"`` ends the quoted string early.
    """
    if not spec.raw_cfg_values:
        if any(ch in _LINE_BREAKS for ch in value):
            raise InputError(
                f"the value of {name!r} holds a line break, which would add lines to the cfg"
                " file; use -f files, json or yaml for it, or --raw-cfg-values to write it as"
                " Kamus did"
            )
        # A trailing backslash would escape the closing quote for readers that honour escapes.
        if quoted and ('"' in value or value.endswith("\\")):
            raise InputError(
                f"the value of {name!r} holds a double quote or ends in a backslash, which would"
                " end its quoted string early in cfg-strict; use -f files, json or yaml for it,"
                " or --raw-cfg-values to write it as Kamus did"
            )
    return f'{name}="{value}"\n' if quoted else f"{name}={value}\n"


def render_cfg(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """Kamus's cfg.ejs: ``name=value`` lines, JSON objects and arrays compacted to one line."""
    _check_cfg_names(plaintexts)
    lines = (
        _cfg_line(name, stringify_if_json(value, name), spec) for name, value in plaintexts.items()
    )
    return _single(spec, "".join(lines))


def render_cfg_strict(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """Kamus's cfg-strict.ejs: like cfg, but strings in double quotes (not escaped, as Kamus)."""
    _check_cfg_names(plaintexts)
    lines = []
    for name, plaintext in plaintexts.items():
        ok, value = parsed_json(plaintext, name)
        if not ok:
            lines.append(_cfg_line(name, plaintext, spec, quoted=True))
        elif isinstance(value, str):
            # Kamus's client had already unquoted a JSON string plaintext before quoting it again.
            lines.append(_cfg_line(name, value, spec, quoted=True))
        elif isinstance(value, dict | list):
            lines.append(_cfg_line(name, compact_json(value, name), spec))
        else:
            lines.append(_cfg_line(name, plaintext.strip(), spec))
    return _single(spec, "".join(lines))


def env_value(value: str) -> str:
    """Quote ``value`` for a POSIX shell; bare when it needs no quoting (docs/CLI.md, ``env``)."""
    if _ENV_BARE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def render_env(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """``NAME=value`` lines a shell can source and docker's --env-file can read, one per item."""
    _check_names(plaintexts, ENV_NAME, "environment variable names (letters, digits and _, "
                 "not starting with a digit)")  # fmt: skip
    for name, value in plaintexts.items():
        if _ENV_REFUSED.search(value):
            # A line break would let the rest of the value read as more variables in docker's
            # --env-file; other control characters do not survive a shell either.
            raise InputError(
                f"the value of {name} holds a line break or control character, which an env file"
                " cannot carry on one line; use -f files, json or yaml for it"
            )
    lines = (f"{name}={env_value(value)}\n" for name, value in plaintexts.items())
    return _single(spec, "".join(lines))


_YAML_ESCAPED = frozenset("\x85\u2028\u2029")


def render_yaml(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """One YAML mapping ``{name: plaintext}``, every value a string (yaml.safe_dump)."""
    import yaml  # noqa: PLC0415 - only this format pays for it (about 35 ms)

    class Dumper(yaml.SafeDumper):
        """SafeDumper writing a string with a Unicode line break double-quoted (escaped)."""

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Unquoted or single-quoted, PyYAML writes U+0085 as a raw line break, which a reader
        # folds into a space: "a\x85EVIL=1" would read back "a EVIL=1".
        style = '"' if any(ch in _YAML_ESCAPED for ch in value) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    text = yaml.dump(
        dict(plaintexts),
        Dumper=Dumper,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        width=2**30,
    )
    return _single(spec, text)


def render_template(plaintexts: Mapping[str, str], spec: OutputSpec) -> dict[str, bytes]:
    """The sandboxed Jinja2 template of ``--template`` rendered with ``secrets``."""
    if spec.template is None:
        raise InputError("-f template needs --template FILE")
    return _single(spec, spec.template.render(plaintexts))


def _single(spec: OutputSpec, text: str) -> dict[str, bytes]:
    return {check_file_name(spec.file_name): text.encode("utf-8")}


FORMATS: Mapping[str, Format] = {
    "files": render_files,
    "json": render_json,
    "cfg": render_cfg,
    "cfg-strict": render_cfg_strict,
    "env": render_env,
    "yaml": render_yaml,
    "template": render_template,
}
