"""Write one item back into `items.yaml`, leaving every other byte of the file as it was.

The file is edited as text, not re-dumped: the item's lines are found from the YAML parser's
marks, only the lines of the fields that change are rendered anew (or the new item's lines,
appended after the last item), and the result is spliced between untouched lines. Comments, key
order, blank lines and the quoting of everything else stay byte-identical, which a round-trip
dumper does not promise (ruamel.yaml re-indents and re-wraps what it writes back).

Values are written plain only where every YAML reader takes them for the same text; anything
else (`#`, `: `, `NO`, `null`, a number, a date in a title, a leading quote or indicator) is
quoted, and text over several lines is a `|` block. Every edit is then proved: the new file is
read again, the item must read back as exactly the text written, and `catalogue.parse` (the one
validator) must accept the file with every other item unchanged. Nothing here touches the disk.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import yaml

from digest.errors import CatalogueError
from digest.publish import catalogue as catalogues
from digest.publish.catalogue import Catalogue
from digest.publish.yamltext import (
    NUMBERISH,
    STR,
    Key,
    decode,
    join_lines,
    keys_of,
    last_line,
    line_end,
    newline_of,
    offset,
    quoted,
    split_lines,
    trailing_comment,
)
from digest.publish.yamltext import (
    EditError as EditError,  # re-exported: callers catch it from here
)
from digest.publish.yamltext import (
    plain_is_safe as plain_is_safe,  # re-exported, as above
)

# An item's keys in the order a new item is written (the editors' guide's order).
KEYS = (
    "id",
    "title",
    "date",
    "updated",
    "category",
    "section",
    "summary",
    "body",
    "link",
    "image",
    "tags",
    "draft",
    "event",
)
# Keys whose values are written plain when they have their expected form (as the guide writes
# them): a date, a slug, a URL.
_DATES = frozenset({"date", "updated"})
_WORDS = frozenset({"id", "category", "section"})

# A value is text, a list of tags, an image {url, alt}, the draft flag, an event (see
# EVENT_KEYS), or None (no such key).
Value = str | bool | tuple[str, ...] | Mapping[str, str] | None
# An item's event as the form holds it, flat: `location` is the place's name and `address` its
# address (in the file, `location: Name` or a mapping {name, address}). Written in this order.
EVENT_KEYS = ("start", "end", "duration", "location", "address", "online", "status")


@dataclass(frozen=True, slots=True)
class Edited:
    """A catalogue's new bytes, checked, and the index of the item the edit concerned."""

    raw: bytes
    catalogue: Catalogue
    index: int


# ------------------------------------------------------------------------------------------------
# Reading the layout: where each item and each of its keys sits


@dataclass(frozen=True, slots=True)
class _Region:
    """One item's lines, composed on their own: a file of 100,000 items is not parsed whole."""

    own: list[str]  # the region's lines, with their line ends
    newline: str  # the file's line end
    start: int  # the item's first line in the file (its dash), from 0
    item: yaml.MappingNode  # its marks count lines from `start`
    span: tuple[int, int] = (0, 0)  # the region's bytes in the file
    blank_before: bool = False  # whether a blank line comes before the item


# A line that starts in the first column with something other than a comment: past the items.
_TOP_LEVEL = re.compile(rb"^[^ \t#\r\n]", re.MULTILINE)


def _compose(own: list[str], newline: str, name: str, start: int) -> _Region:
    """Compose the item whose lines are `own`, the first of them line `start` of the file."""
    try:
        root = yaml.compose("".join(own), Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise EditError(
            f"{name}:{start + 1}: this item cannot be read on its own (an alias to a value "
            "elsewhere, say); edit it in the file itself"
        ) from exc
    entries = root.value if isinstance(root, yaml.SequenceNode) else []
    item = entries[0] if len(entries) == 1 else None
    if not isinstance(item, yaml.MappingNode):
        raise EditError(
            f"{name}:{start + 1}: items are expected as `  - id: ...` lines (a dash, then the "
            "first key); write this item that way to edit it here"
        )
    if item.flow_style or not item.value:
        raise EditError(
            f"{name}:{start + 1}: this item is written on one line ({{...}}); write it as one "
            "key a line, as the editors' guide shows, to edit it here"
        )
    return _Region(own, newline, start, item)


def _item_region(raw: bytes, loaded: Catalogue, index: int, name: str) -> _Region:
    """Return the region of item `index` of `loaded`, the catalogue `raw` holds.

    It runs from the item's dash to the next item's, or after the last item to the next line
    that starts in the first column (a top-level key) or the end of the file.
    """
    if not 0 <= index < len(loaded.items):
        raise EditError(f"{name} has no item {index}; reload the page")
    start = loaded.items[index].line - 1
    begin = offset(raw, start)
    if index + 1 < len(loaded.items):
        end = offset(raw, loaded.items[index + 1].line - 1 - start, begin)
    else:
        first = raw.find(b"\n", begin) + 1 or len(raw)
        found = _TOP_LEVEL.search(raw, first)
        end = found.start() if found else len(raw)
    own = split_lines(decode(raw[begin:end], name))
    region = _compose(own, newline_of(raw), name, start)
    before = raw[raw.rfind(b"\n", 0, max(begin - 1, 0)) + 1 : begin]
    return dataclasses.replace(
        region, span=(begin, end), blank_before=begin > 0 and not before.strip()
    )


def _layout_of_empty(raw: bytes, name: str) -> tuple[yaml.Node | None, yaml.Node | None]:
    """Return the `items` key and value of a catalogue without items (a small file)."""
    try:
        root = yaml.compose(raw.decode("utf-8"), Loader=yaml.CSafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise EditError(f"{name} is not valid YAML; run `digest check` and fix it first") from exc
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "items":
                return key, value
    return None, None


def values_at(raw: bytes, loaded: Catalogue, index: int) -> dict[str, Value]:
    """Return item `index`'s values as the file writes them (text as text, dates unparsed)."""
    return _values(_item_region(raw, loaded, index, loaded.path.name))


def _values(region: _Region) -> dict[str, Value]:
    return {k.name: _value_of(k.name, k.value) for k in keys_of(region.item, region.own)}


def _value_of(key: str, node: yaml.Node) -> Value:
    if key == "event":
        return _event_values(node)
    if isinstance(node, yaml.ScalarNode):
        text = str(node.value).strip()
        if key == "draft":
            return text == "true"
        if key == "tags":
            return (text,) if text else ()
        return text or None
    if isinstance(node, yaml.SequenceNode):
        return tuple(str(getattr(child, "value", "")).strip() for child in node.value)
    if isinstance(node, yaml.MappingNode):
        return {
            str(k.value): str(getattr(v, "value", "")).strip()
            for k, v in node.value
            if isinstance(k, yaml.ScalarNode)
        }
    return None


# An id made from a title keeps its first words, up to this many characters.
MAX_MADE_ID = 60


def slug_for(title: str, taken: set[str]) -> str:
    """Return a new item's id made from its title: lowercase ASCII words joined by hyphens.

    Accents are dropped (é: e), other letters and signs end a word; a title with no Latin letter
    or digit gives `item`. An id already taken gets `-2`, `-3`, ... The id never changes after.
    """
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        longer = f"{slug}-{word}" if slug else word
        if len(longer) > MAX_MADE_ID:
            break
        slug = longer
    slug = slug or (words[0][:MAX_MADE_ID] if words else "item")
    found, number = slug, 2
    while found in taken:
        found = f"{slug}-{number}"
        number += 1
    return found


# ------------------------------------------------------------------------------------------------
# Writing values: plain where every reader agrees, quoted otherwise

_DATE_FORM = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ][0-9:.+\-Z]+)?")
_SLUG_FORM = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_URL_FORM = re.compile(r"https?://[^\s#,\[\]{}'\"]+")


def scalar(key: str, text: str, *, flow: bool = False, style: str | None = None) -> str:
    if style in ('"', "'"):  # the file quoted this value: it stays quoted the same way
        return quoted(text, style)
    if key in _DATES and _DATE_FORM.fullmatch(text):
        return text
    if key in _WORDS and _SLUG_FORM.fullmatch(text) and not NUMBERISH.fullmatch(text):
        return text
    if key in ("link", "url") and _URL_FORM.fullmatch(text) and plain_is_safe(text, flow=flow):
        return text
    if key not in _DATES | _WORDS and plain_is_safe(text, flow=flow):
        return text
    return quoted(text)


def render(key: str, value: Value, style: str | None = None, step: int = 2) -> list[str]:
    """Return the lines (without line ends) of `key: value`, continuations indented by two
    (a nested block, the event's, by `step`: as the file indents).

    `style` is how the file wrote the value before (a quote mark, or None for plain).
    """
    if key == "event" and isinstance(value, Mapping):
        return _render_event(value, step)
    if isinstance(value, bool):
        return [f"{key}: {'true' if value else 'false'}"]
    if isinstance(value, tuple):
        return [f"{key}: [{', '.join(scalar('tag', t, flow=True) for t in value)}]"]
    if isinstance(value, Mapping):
        parts = [f"{k}: {scalar(k, value[k], flow=True)}" for k in ("url", "alt") if k in value]
        return [f"{key}: {{{', '.join(parts)}}}"]
    assert value is not None  # noqa: S101 -- None means "no key", never rendered
    if "\n" not in value:
        return [f"{key}: {scalar(key, value, style=style)}"]
    body = value.split("\n")
    first = next((line for line in body if line.strip()), "")
    header = f"{key}: |2" if first.startswith(" ") else f"{key}: |"
    # Continuation lines are relative to the key: the caller indents every line alike.
    return [header, *["  " + line if line.strip() else "" for line in body]]


def normal(key: str, value: Value) -> Value:
    """Return `value` as it is written and read back: text stripped, line ends as `\\n`."""
    if isinstance(value, str):
        text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
        if key in ("summary", "body"):
            # A line of spaces reads as an empty line in a `|` block (and in Markdown).
            text = "\n".join(line if line.strip() else "" for line in text.split("\n"))
        else:
            text = " ".join(text.split("\n"))
        return text or None
    if isinstance(value, tuple):
        tags = tuple(t for t in (normal("tag", tag) for tag in value) if isinstance(t, str))
        return tags or None
    if key == "event" and isinstance(value, Mapping):
        return _normal_event(value)
    if isinstance(value, Mapping):
        pic = {k: normal(k, value[k]) for k in ("url", "alt") if k in value}
        return {k: v for k, v in pic.items() if isinstance(v, str)} or None
    return value


# ------------------------------------------------------------------------------------------------
# Splicing


def _item_lines(values: Mapping[str, Value], step: int = 2) -> list[str]:
    out: list[str] = []
    for key in KEYS:
        value = values.get(key)
        if value is None or value == () or (key == "draft" and value is False):
            continue
        out.extend(render(key, value, step=step))
    return out


def _replace(region: _Region, changes: Mapping[str, Value], name: str) -> list[str]:
    """Return the item's region with `changes` written: only the changed keys' lines differ."""
    lines = list(region.own)
    newline = region.newline
    keys = keys_of(region.item, lines)
    indent = keys[0].column
    step = _step(lines[0], indent)
    by_name = {k.name: k for k in keys}
    edits: list[tuple[int, int, list[str]]] = []  # (first line, line after, new lines)
    for key, value in changes.items():
        old = by_name.get(key)
        if old is None:
            continue
        if value is None or value == ():
            if old is keys[0]:
                raise EditError(
                    f"{name}:{region.start + old.first + 1}: the item's first key cannot be removed"
                )
            edits.append((old.first, old.last + 1, []))
            continue
        if key == "event" and _is_block(old.value) and isinstance(value, Mapping):
            edits.extend(_event_edits(lines, old, value, newline))
            continue
        style = old.value.style if isinstance(old.value, yaml.ScalarNode) else None
        rendered = render(key, value, style, step)
        rendered[0] = lines[old.first][: old.column] + rendered[0]
        rendered[1:] = [(" " * indent + r if r else "") for r in rendered[1:]]
        if len(rendered) == 1:
            rendered[0] += trailing_comment(lines[old.last], old.value)
        end = line_end(lines[old.last]) or newline
        new = [r + newline for r in rendered[:-1]] + [rendered[-1] + end]
        edits.append((old.first, old.last + 1, new))
    added = [k for k in KEYS if k in changes and k not in by_name and changes[k] not in (None, ())]
    for key in added:
        before = [by_name[k] for k in KEYS[: KEYS.index(key)] if k in by_name]
        after = max(before, key=lambda k: k.last) if before else keys[-1]
        if not lines[after.last].endswith(("\n", "\r")):
            lines[after.last] += newline
        rendered = [" " * indent + r if r else "" for r in render(key, changes[key], step=step)]
        edits.append((after.last + 1, after.last + 1, join_lines(rendered, newline)))
    # Bottom up, so that earlier line numbers still hold. At one line, a replacement goes first,
    # then the insertions there, the last key first (each lands before the one after it).
    order = sorted(
        range(len(edits)), key=lambda n: (edits[n][0], edits[n][1] > edits[n][0], n), reverse=True
    )
    for n in order:
        first, stop, new = edits[n]
        lines[first:stop] = new
    return lines


def _append(last: _Region, values: Mapping[str, Value]) -> tuple[list[str], int]:
    """Return the last item's region followed by a new item, and where the new item starts
    in it (the last item's trailing comments and blank lines come after the new item)."""
    lines = list(last.own)
    nl = last.newline
    column = last.item.start_mark.column
    head = lines[0][:column]
    end = last_line(last.item, lines)
    rendered = _item_lines(values, _step(lines[0], column))
    new = [head + rendered[0], *[" " * column + r if r else "" for r in rendered[1:]]]
    blank = last.blank_before  # the file separates items with a blank line: so does this one
    if not lines[end].endswith(("\n", "\r")):
        lines[end] += nl
    lines[end + 1 : end + 1] = ([nl] if blank else []) + join_lines(new, nl)
    return lines, end + 1 + blank


def _first_item(raw: bytes, values: Mapping[str, Value], name: str) -> tuple[list[str], int]:
    """Return the file's lines with the first item where `items:` is empty (`items: []`)."""
    key, node = _layout_of_empty(raw, name)
    if key is None or node is None:
        raise EditError(f"{name} has no `items:` key; add `items:` at the end of the file")
    if isinstance(node, yaml.SequenceNode) and not node.flow_style:
        raise EditError(f"{name}:{key.start_mark.line + 1}: cannot find where items go")
    lines, newline = split_lines(decode(raw, name)), newline_of(raw)
    line = key.start_mark.line
    if node.end_mark.line != line:
        raise EditError(f"{name}:{line + 1}: write `items:` on one line to add the first item")
    indent = key.start_mark.column + 2
    rendered = _item_lines(values)
    head = " " * indent + "- "
    new = [head + rendered[0], *[" " * (indent + 2) + r if r else "" for r in rendered[1:]]]
    end = line_end(lines[line]) or newline
    lines[line] = " " * key.start_mark.column + "items:" + end
    lines[line + 1 : line + 1] = join_lines(new, newline)
    return lines, line + 1


# ------------------------------------------------------------------------------------------------
# The edit, proved


def replace(
    raw: bytes, before: Catalogue, index: int, changes: Mapping[str, Value], name: str = ""
) -> Edited:
    """Return the catalogue with item `index`'s `changes` written (None removes a key).

    `before` is `raw` as the catalogue loads it (the caller has checked it already).
    """
    name = name or before.path.name
    _known(changes)
    changes = {k: normal(k, v) for k, v in changes.items()}
    region = _item_region(raw, before, index, name)
    own = _replace(region, changes, name)
    begin, end = region.span
    new = raw[:begin] + "".join(own).encode("utf-8") + raw[end:]
    wanted = {**_values(region), **changes}
    proof = _Proof(new, own, region.newline, region.start, name, before, set(changes))
    return _prove(proof, index, wanted)


def append(raw: bytes, before: Catalogue, values: Mapping[str, Value], name: str = "") -> Edited:
    """Return the catalogue with a new item of `values` after the last one."""
    name = name or before.path.name
    _known(values)
    values = {k: normal(k, v) for k, v in values.items()}
    if before.items:
        last = _item_region(raw, before, len(before.items) - 1, name)
        own, at = _append(last, values)
        begin, end = last.span
        new = raw[:begin] + "".join(own).encode("utf-8") + raw[end:]
        start = last.start + at
    else:
        own, at = _first_item(raw, values, name)
        new = "".join(own).encode("utf-8")
        start = at
    proof = _Proof(new, own[at:], newline_of(raw), start, name, before, set(KEYS))
    return _prove(proof, len(before.items), values)


@dataclass(frozen=True, slots=True)
class _Proof:
    """What an edit wrote, and what to compare it with."""

    raw: bytes  # the new file
    own: list[str]  # the edited item's lines (and what follows it up to the next item)
    newline: str
    start: int  # the edited item's first line
    name: str
    before: Catalogue
    written: set[str]  # the keys this edit wrote


def _known(values: Mapping[str, Value]) -> None:
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise EditError(f"an item has no key {unknown[0]!r}; known keys: {', '.join(KEYS)}")
    _known_event(values.get("event"))


def _prove(proof: _Proof, index: int, wanted: Mapping[str, Value]) -> Edited:
    """Check that the new file reads back as `wanted` at `index`, everything else as before."""
    name, before = proof.name, proof.before
    region = _compose(proof.own, proof.newline, name, proof.start)
    got = {k: v for k, v in _values(region).items() if not (k == "draft" and v is False)}
    expected = {
        k: v
        for k, v in wanted.items()
        if v is not None and v != () and not (k == "draft" and not v)
    }
    if got != expected:
        raise EditError(
            f"writing item {index} of {name} would not read back as entered "
            f"({_first_difference(expected, got)}); nothing was written. Please report this"
        )
    _reads_as_text(region, name, proof.written)
    new = proof.raw
    # The one validator; a CatalogueError here is the form's, shown at the fields.
    after = catalogues.parse(new, before.path, name)
    grew = len(after.items) - len(before.items)
    others_before = [i for n, i in enumerate(before.items) if grew or n != index]
    others_after = [i for n, i in enumerate(after.items) if n != index]
    if (
        after.publication != before.publication
        or after.newsletter != before.newsletter
        or grew not in (0, 1)
        or after.items[index].line != proof.start + 1
        or list(map(unplaced, others_before)) != list(map(unplaced, others_after))
    ):
        raise EditError(
            f"writing item {index} of {name} would change other parts of the file; nothing was "
            "written. Please report this"
        )
    return Edited(new, after, index)


def unplaced(item: catalogues.Item) -> tuple[Any, ...]:
    """Return what an item says, without where it is (lines shift below an edit)."""
    return (
        item.id,
        item.title,
        item.date,
        item.updated,
        item.category,
        item.section,
        item.summary,
        item.body,
        item.link,
        item.image,
        item.tags,
        item.draft,
        item.event,
    )


def _first_difference(expected: Mapping[str, Value], got: Mapping[str, Value]) -> str:
    for key in KEYS:
        if expected.get(key) != got.get(key):
            return f"{key}: {expected.get(key)!r} came back as {got.get(key)!r}"
    return "the keys differ"


def _reads_as_text(region: _Region, name: str, written: set[str]) -> None:
    """Check that a standard YAML reader takes each text of the item for text (not `NO`: false)."""
    for key in keys_of(region.item, region.own):
        if key.name not in written:
            continue  # as the file had it: not this edit's to judge
        if key.name == "event":
            _event_reads_as_text(key.value, region, name)
            continue
        allowed = {STR}
        if key.name in _DATES:
            allowed.add("tag:yaml.org,2002:timestamp")
        if key.name == "draft":
            allowed = {"tag:yaml.org,2002:bool"}
        nodes = [key.value]
        if isinstance(key.value, yaml.SequenceNode):
            nodes = list(key.value.value)
        elif isinstance(key.value, yaml.MappingNode):
            nodes = [v for _, v in key.value.value]
        for node in nodes:
            if isinstance(node, yaml.ScalarNode) and node.tag not in allowed:
                raise EditError(
                    f"{name}:{region.start + node.start_mark.line + 1}: {key.name} would be "
                    f"read as {node.tag.rsplit(':', 1)[-1]}, not text; nothing was written. "
                    "Please report this"
                )


def problems_by_field(error: CatalogueError, index: int) -> tuple[dict[str, list[str]], list[str]]:
    """Split a check's problems into those of item `index`'s fields and all the others.

    Fields are named as the form names them: `image.url` and `image.alt` for the picture.
    """
    prefix = f"items[{index}]"
    fields: dict[str, list[str]] = {}
    other: list[str] = []
    for problem in error.problems:
        where = problem.path
        if where == prefix or where.startswith(prefix + "."):
            field = where[len(prefix) + 1 :] or "item"
            if field == "image":
                field = "image.url"
            elif field == "event" or field.startswith("event."):
                field = event_field(field)
            fields.setdefault(field, []).append(problem.message)
        else:
            other.append(str(problem))
    return fields, other


# ------------------------------------------------------------------------------------------------
# Events: the nested `event:` block, written key by key like the item itself

# The event block's keys in the order they are written (`location` holds the name and address).
_EVENT_LINES = ("start", "end", "duration", "location", "online", "status")
# Event keys quoted by the rules of the item key of the same form: dates, a URL, a word.
_EVENT_AS = {"start": "date", "end": "date", "online": "link", "status": "section"}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def _step(first_line: str, column: int) -> int:
    """Return how far the file indents a nested block: as far as its items' dash is indented
    under `items:` (two spaces in the bundled catalogue)."""
    dash = first_line[:column].find("-")
    return dash if dash > 0 else 2


def _is_block(node: yaml.Node) -> TypeGuard[yaml.MappingNode]:
    """Return whether `node` is a mapping written a key a line (not in braces, not empty)."""
    return isinstance(node, yaml.MappingNode) and not node.flow_style and bool(node.value)


def _event_values(node: yaml.Node) -> Mapping[str, str] | None:
    """Return an event block as the form holds it, flat (see EVENT_KEYS), or None."""
    if not isinstance(node, yaml.MappingNode):
        return None
    out: dict[str, str] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        if key.value == "location" and isinstance(value, yaml.MappingNode):
            for part, text in value.value:
                if isinstance(part, yaml.ScalarNode) and part.value in ("name", "address"):
                    field = "location" if part.value == "name" else "address"
                    out[field] = str(getattr(text, "value", ""))
        elif isinstance(value, yaml.ScalarNode):
            out[str(key.value)] = str(value.value)
    return _normal_event(out)


def _normal_event(value: Mapping[str, Any]) -> Mapping[str, str] | None:
    """Return an event as written and read back: each text on one line, stripped, empty ones
    dropped, and `status: scheduled` (the default) dropped; None when nothing is left."""
    out: dict[str, str] = {}
    for key in EVENT_KEYS:
        text = normal(key, value.get(key))
        if isinstance(text, str):
            out[key] = text
    if out.get("status") == "scheduled":
        del out["status"]
    return out or None


def _known_event(value: Value) -> None:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(EVENT_KEYS))
        if unknown:
            raise EditError(
                f"an event has no key {unknown[0]!r}; known keys: {', '.join(EVENT_KEYS)}"
            )
    elif value is not None:
        raise EditError("an event is a mapping of its keys (start, end, ...), or None for none")


def _event_scalar(key: str, text: str, *, flow: bool = False, style: str | None = None) -> str:
    return scalar(_EVENT_AS.get(key, key), text, flow=flow, style=style)


def _render_event(value: Mapping[str, str], step: int) -> list[str]:
    """Return the lines of a whole `event:` block, its keys `step` in from `event:`."""
    pad = " " * step
    out = ["event:"]
    for key in _EVENT_LINES:
        if key == "location" and not ({"location", "address"} & set(value)):
            continue
        if key == "location" or key in value:
            out.extend(pad + line for line in _render_event_key(key, value, None, step))
    return out


def _render_event_key(
    key: str, value: Mapping[str, str], old: yaml.Node | None, step: int
) -> list[str]:
    """Return the lines of one event key, continuations relative to it (by `step`).

    `old` is its value as the file wrote it: a quoted text stays quoted the same way, and a
    location the file wrote in braces stays in braces. A new location is its name alone, or,
    with an address, a block mapping.
    """
    if key != "location":
        style = old.style if isinstance(old, yaml.ScalarNode) else None
        return [f"{key}: {_event_scalar(key, value[key], style=style)}"]
    parts = [(k, value[f]) for k, f in (("name", "location"), ("address", "address")) if f in value]
    mapping = isinstance(old, yaml.MappingNode)
    if not mapping and [k for k, _ in parts] == ["name"]:
        style = old.style if isinstance(old, yaml.ScalarNode) else None
        return [f"location: {_event_scalar('location', parts[0][1], style=style)}"]
    styles: dict[str, str | None] = {}
    if isinstance(old, yaml.MappingNode):
        styles = {str(k.value): v.style for k, v in old.value if isinstance(v, yaml.ScalarNode)}
    if isinstance(old, yaml.MappingNode) and old.flow_style:
        inner = ", ".join(f"{k}: {scalar(k, t, flow=True, style=styles.get(k))}" for k, t in parts)
        return [f"location: {{{inner}}}"]
    pad = " " * step
    return ["location:", *[f"{pad}{k}: {scalar(k, t, style=styles.get(k))}" for k, t in parts]]


def _event_edits(
    lines: list[str], old: Key, value: Mapping[str, str], newline: str
) -> list[tuple[int, int, list[str]]]:
    """Return the edits that turn the block event `old` into `value`: only the keys that
    change are rewritten (a comment on a line of its own, or after an unchanged value, stays);
    a removed key loses its lines, an added one goes after the key before it in order."""
    assert _is_block(old.value)  # noqa: S101 -- the caller checked
    subs = keys_of(old.value, lines)
    by_name = {k.name: k for k in subs}
    column = subs[0].column
    step = max(column - old.column, 1)
    before = _event_values(old.value) or {}
    edits: list[tuple[int, int, list[str]]] = []
    for key in _EVENT_LINES:
        fields = ("location", "address") if key == "location" else (key,)
        if all(before.get(f) == value.get(f) for f in fields):
            continue
        sub = by_name.get(key)
        if not any(f in value for f in fields):
            if sub is not None:
                edits.append((sub.first, sub.last + 1, []))
            continue
        if sub is not None:
            inner = keys_of(sub.value, lines) if _is_block(sub.value) else []
            rendered = _render_event_key(
                key, value, sub.value, inner[0].column - sub.column if inner else step
            )
            rendered[0] = lines[sub.first][: sub.column] + rendered[0]
            rendered[1:] = [" " * column + r for r in rendered[1:]]
            if len(rendered) == 1:
                rendered[0] += trailing_comment(lines[sub.last], sub.value)
            end = line_end(lines[sub.last]) or newline
            edits.append(
                (sub.first, sub.last + 1, [*join_lines(rendered[:-1], newline), rendered[-1] + end])
            )
            continue
        earlier = [by_name[k] for k in _EVENT_LINES[: _EVENT_LINES.index(key)] if k in by_name]
        at = subs[0].first
        if earlier:
            after = max(earlier, key=lambda k: k.last)
            if not lines[after.last].endswith(("\n", "\r")):
                lines[after.last] += newline
            at = after.last + 1
        rendered = [" " * column + r for r in _render_event_key(key, value, None, step)]
        edits.append((at, at, join_lines(rendered, newline)))
    return edits


def _event_reads_as_text(node: yaml.Node, region: _Region, name: str) -> None:
    """Check that a standard YAML reader takes each of the event's values for text (its
    times for text or a timestamp)."""
    found: list[tuple[str, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(value, yaml.MappingNode):
                found.extend((f"event.{key.value}", v) for _, v in value.value)
            else:
                found.append((f"event.{key.value}", value))
    for field, value in found:
        allowed = {STR, _TIMESTAMP} if field in ("event.start", "event.end") else {STR}
        if isinstance(value, yaml.ScalarNode) and value.tag not in allowed:
            raise EditError(
                f"{name}:{region.start + value.start_mark.line + 1}: {field} would be read as "
                f"{value.tag.rsplit(':', 1)[-1]}, not text; nothing was written. Please report this"
            )


def event_field(field: str) -> str:
    """Return the form's name for a check problem's event field (`event.location.name`: the
    place's name, `event.location`; a problem of the whole block: the place, where the fix is)."""
    if field in ("event", "event.location.name"):
        return "event.location"
    if field == "event.location.address":
        return "event.address"
    return field
