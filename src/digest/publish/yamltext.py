"""Reading and writing YAML as text: the lines of a file, where a node's value ends, and
scalars written plain only where every YAML reader takes them for the same text.

The editors (`publish/editing.py` for items and their events, `publish/issue_editing.py` for a
month's issue) splice new lines between untouched ones with these; nothing here touches the disk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from digest.errors import DigestError


class EditError(DigestError):
    """The catalogue could not be edited as asked; nothing was written."""


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a block mapping, where its lines are."""

    name: str
    first: int  # line (from 0) of the key
    last: int  # last line of its value
    column: int  # where the key starts on its line
    value: yaml.Node


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def split_lines(text: str) -> list[str]:
    """Return `text`'s lines, each with its own line end (the last may have none)."""
    return _LINE.findall(text)


def newline_of(raw: bytes) -> str:
    """Return the file's line end, from its first line: `\r\n` or `\n`."""
    end = raw.find(b"\n")
    return "\r\n" if end > 0 and raw[end - 1 : end] == b"\r" else "\n"


def offset(raw: bytes, line: int, at: int = 0) -> int:
    """Return where line `line` (from 0) starts, counting on from `at` (the start of line 0)."""
    for _ in range(line):
        found = raw.find(b"\n", at)
        if found < 0:
            return len(raw)
        at = found + 1
    return at


def decode(raw: bytes, name: str) -> str:
    """Return the file `name` as text, or say it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EditError(f"{name} is not UTF-8 ({exc}); save it as UTF-8 first") from exc


def last_line(node: yaml.Node, lines: Sequence[str]) -> int:
    """Return the last line (from 0) that holds part of `node`'s value."""
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style:
        children = node.value
        if children:
            last = children[-1]
            return last_line(last[1] if isinstance(last, tuple) else last, lines)
    end = node.end_mark
    line = end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line
    # A block scalar's end comes after its trailing blank lines: those belong to the layout.
    while line > node.start_mark.line and not lines[line].strip():
        line -= 1
    return min(line, len(lines) - 1)


def keys_of(item: yaml.MappingNode, lines: Sequence[str]) -> list[Key]:
    """Return the keys of a block mapping, each with the lines its value takes."""
    found = []
    for key, value in item.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        found.append(
            Key(
                key.value,
                key.start_mark.line,
                last_line(value, lines),
                key.start_mark.column,
                value,
            )
        )
    return found


# What a plain scalar may not start with: YAML indicators and quotes.
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
# Number-like words (YAML 1.1 and 1.2 read some as numbers, sexagesimals or dates).
NUMBERISH = re.compile(r"[-+.]?[0-9][0-9A-Za-z_.:+-]*")
_RESOLVER = yaml.resolver.Resolver()
STR = "tag:yaml.org,2002:str"


def plain_is_safe(text: str, *, flow: bool = False) -> bool:
    """Return whether `text` written plain reads back, in any YAML reader, as exactly `text`."""
    if not text or text != text.strip() or not text.isprintable():
        return False
    if text[0] in _INDICATORS or ": " in text or " #" in text or text.endswith(":"):
        return False
    # Inside braces PyYAML ends a plain value at `?` and at `:` too, whatever follows them.
    if flow and any(c in text for c in ",[]{}?:"):
        return False
    if NUMBERISH.fullmatch(text):
        return False
    # PyYAML's YAML 1.1 rules: yes/no/on/off, null, ~, numbers, timestamps, `<<`, `=`.
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag == STR)


def quoted(text: str, style: str | None = None) -> str:
    """Return `text` as a one-line quoted YAML scalar, in `style` (a quote mark) if it can be."""
    single = text.isprintable() and (style == "'" or ('"' in text and "'" not in text))
    if single and style != '"':
        return "'" + text.replace("'", "''") + "'"
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() or char == " ":
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def join_lines(lines: Sequence[str], newline: str) -> list[str]:
    """Return `lines` (without line ends), each ended with `newline`."""
    return [line + newline for line in lines]


def line_end(line: str) -> str:
    """Return the line end that `line` carries (none for a last line without one)."""
    return line[len(line.rstrip("\r\n")) :]


def trailing_comment(line: str, node: yaml.Node) -> str:
    """Return a `  # comment` that follows a one-line value on its line, to keep it."""
    if node.start_mark.line != node.end_mark.line:
        return ""
    rest = line.rstrip("\r\n")[node.end_mark.column :]
    return rest if re.fullmatch(r"[ \t]+#.*", rest) else ""


def indented(lines: list[str], column: int) -> list[str]:
    """Return `lines` moved right to `column`; empty lines stay empty."""
    return [" " * column + line if line else "" for line in lines]


def mapping_key(node: yaml.Node, name: str) -> tuple[yaml.ScalarNode, yaml.Node] | None:
    """Return the key `name` of mapping `node` and its value, or None."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                return key, value
    return None
