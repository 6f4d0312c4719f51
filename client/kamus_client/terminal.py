"""Text from elsewhere (a server's answer, a proxy's) made safe to print on a terminal.

The characters escaped are the ones the audit file and ``kamus-audit`` escape, a fixed set:
controls (C0 with NUL and ESC, DEL, C1 with its one-byte CSI), the format characters that hide or
reorder text (bidirectional overrides, zero-width characters, ...), line and paragraph
separators, surrogates and private use. Each becomes ``\\uXXXX`` (a pair of them above U+FFFF, as
in JSON), so the message still shows what came, and escaping twice changes nothing.

The set is written here again rather than imported from ``kamus_kms.auditchain``: kamus-init
installs kamus-client alone, without kamus-kms and its cryptography (tests/unit/packaging), and
the core does not depend on the client. tests/unit/client/test_terminal.py checks that the two
agree on every code point.
"""

from __future__ import annotations

import functools
import re  # already loaded by argparse and json: free at kamus-init's start

# A fixed set, not Unicode categories: what is escaped must not change with Python's Unicode
# version (the audit file's canonical form depends on it; see kamus_kms.auditchain).
_UNSAFE = (
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\ue000-\uf8ff"
    "\U000e0000-\U000e007f\U000f0000-\U0010ffff]"
)


@functools.cache
def _unsafe() -> re.Pattern[str]:
    # Compiled on first use, on an error's path: compiling costs milliseconds, a noticeable part
    # of kamus-init's start (docs/PERFORMANCE.md, "Pod start").
    return re.compile(_UNSAFE)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def escape_unsafe(text: str) -> str:
    """``text`` with control, format, separator and private characters as ``\\uXXXX``."""
    # Every character escaped is one isprintable() refuses (a test checks it), so text it accepts,
    # such as the "OK" of every answer, needs neither the pattern nor its compilation.
    if text.isprintable():
        return text
    return _unsafe().sub(_escaped, text)
