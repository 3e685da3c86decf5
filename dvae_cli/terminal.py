"""Strings from files made safe for a terminal: control characters shown as escapes.

A file name, a fingerprint, a line of a codes file or a checkpoint's metadata can hold any
character, and a terminal obeys some of them (ESC starts a control sequence that can move the
cursor, retitle the window or hide text; a newline forges a second line of output). `escape`
shows each such character the way Python writes it in a string literal: `\\x1b`, `\\n`, `\\t`,
`\\u202e`; a byte of a file name that is not UTF-8 (a lone surrogate in Python) as `\\xNN`.
Everything else, non-ASCII letters included, is left as it is. `shown` also caps a string from a
file at MAX_SHOWN characters (then "..."), so that a 10 MB name in a checkpoint's metadata is one
short line wherever it is echoed: a terminal, an error line, a figure's title.

Owns: what is safe to print. Must not: print (the CLI does) or decide what is printed.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the bidirectional overrides and isolates (which reorder what follows them),
# and the lone surrogates that stand for undecodable bytes of file names (os.fsdecode's surrogateescape)
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
MAX_SHOWN = 200  # characters of one string from a file that are shown, then "..."
MAX_LINE = 2000  # characters of a whole message line (an error) that are shown, then "..."


def _shown(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if char in NAMED:
        return NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: object) -> str:
    """`text` (str() of it) with every control character shown as an escape: one printable line."""
    return UNSAFE.sub(_shown, str(text))


def shown(text: object, limit: int = MAX_SHOWN) -> str:
    """A string from a file as it may be shown: escaped (`escape`) and capped at `limit` characters
    of the original, then "..."."""
    text = str(text)
    return escape(text[:limit]) + ("..." if len(text) > limit else "")


def shown_lines(text: object, limit: int = MAX_SHOWN) -> str:
    """`shown` line by line: a figure's title keeps its line breaks, each line escaped and capped."""
    return "\n".join(shown(line, limit) for line in str(text).split("\n"))


def show_bytes(data: bytes, limit: int = 80) -> str:
    """Bytes read from a file as printable text (UTF-8, other bytes as `\\xNN`), at most `limit` characters."""
    text = data[:limit * 4].decode("utf-8", "backslashreplace")
    shown = escape(text[:limit])
    return shown + ("..." if len(text) > limit or len(data) > limit * 4 else "")
