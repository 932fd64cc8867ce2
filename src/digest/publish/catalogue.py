"""Load and validate `items.yaml` into immutable data, reporting every mistake with its line."""

from __future__ import annotations

import difflib
import gc
import json
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.composer import Composer

from digest.errors import CatalogueError, DigestError, Problem
from digest.months import Month

T = TypeVar("T")

# Aliases may add this many nodes to what is written before the file is refused: enough to reuse a
# paragraph or a list many times, far too few for a "billion laughs" alias bomb.
ALIAS_BUDGET = 10_000

RESERVED_SLUGS = frozenset({"all", "index", "archive"})

# Limits on what a catalogue may hold, in characters (bytes for the file). Generous for any real
# publication, they stop one stray paste from breaking what is built from it: libxml2, inside the
# email styler, silently cuts a text over 10 MB short (and the footer with it), and every feed
# repeats each summary and body. Ghost, for comparison, allows a 255-character title, a
# 300-character excerpt, 191-character slugs and 2,000-character URLs.
MAX_CATALOGUE_BYTES = 200_000_000  # 100,000 items (a decade of a large university) are ~90 MB
MAX_LINE = 500  # any one-line text: a title, a name, a tag, alt text, the subject
MAX_SUMMARY = 10_000  # about 1,500 words; the bundled catalogue's longest is 641
MAX_BODY = 100_000  # about 15,000 words; 50 such items keep a feed near 5 MB
MAX_URL = 2_048  # the sitemaps protocol's bound, where many crawlers and tools stop too
# Slugs name files: `.<slug>.atom.xml.<suffix>.tmp` must stay far below the 255 bytes a file
# name may have (a slug is ASCII, so characters are bytes).
MAX_SLUG = 100

# ------------------------------------------------------------------------------------------------
# The validated catalogue


@dataclass(frozen=True, slots=True)
class Category:
    """A declared category; its slug names its feeds, its order is the digest's order."""

    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class Section:
    """A declared part of the source page (Features, Events, ...), in page order."""

    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class Author:
    """Who publishes the feeds."""

    name: str
    email: str | None


@dataclass(frozen=True, slots=True)
class Image:
    """An item's picture; the alt text is required."""

    url: str
    alt: str


@dataclass(frozen=True, slots=True)
class Publication:
    """Settings that apply to every feed and digest."""

    title: str
    subtitle: str | None
    site_url: str
    feeds_url: str
    author: Author
    language: str
    timezone: str
    feed_limit: int
    categories: tuple[Category, ...]
    sections: tuple[Section, ...]

    @property
    def tz(self) -> tzinfo:
        """Return the publication's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def host(self) -> str:
        """Return the site's host name, the authority of every entry's tag URI."""
        return urlsplit(self.site_url).hostname or ""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An email address with an optional display name."""

    name: str | None
    address: str

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


@dataclass(frozen=True, slots=True)
class Limits:
    """What the mail relay allows: honoured by every send, whoever starts it."""

    connections: int = 1
    rate: float | None = None  # messages a second
    daily_limit: int | None = None  # recipients in any 24 hours


@dataclass(frozen=True, slots=True)
class Dkim:
    """Where receivers find the key that signs each message: `selector._domainkey.domain`."""

    domain: str
    selector: str

    def aligns(self, sender: str) -> bool:
        """Return whether a signature by `domain` aligns with the From address `sender` (DMARC).

        Relaxed alignment asks for the same organizational domain. Without the Public Suffix
        List, what is sure to share it: the From domain is `domain`, a subdomain of it, or its
        parent (a From domain is a registered one, never a public suffix).
        """
        return aligned(self.domain, sender.rpartition("@")[2])


# The VERP token after "+" in the return path: "202511-" and a 10-letter signature (send/verp.py).
VERP_TOKEN_LENGTH = 17
MAX_LOCAL_PART = 64  # RFC 5321: longer local parts are refused by servers


@dataclass(frozen=True, slots=True)
class Bounces:
    """Where bounces come back (the VERP return path) and how many end a subscription."""

    address: str  # "bounces@provost.example.edu", lower-case: MAIL FROM is bounces+TOKEN@...
    soft_limit: int = 3  # soft bounces within soft_days that end a subscription
    soft_days: int = 30


def aligned(signer: str, domain: str) -> bool:
    """Return whether DKIM's d= `signer` aligns with the From `domain`, without a suffix list.

    Relaxed alignment (DMARC's default) asks for the same organisational domain; what is sure to
    share it is the same domain or one a parent of the other. Siblings (news.example.edu signed
    as mail.example.edu) count as not aligned, which strict alignment agrees with.
    """
    signer, domain = signer.lower().rstrip("."), domain.lower().rstrip(".")
    return signer == domain or domain.endswith(f".{signer}") or signer.endswith(f".{domain}")


@dataclass(frozen=True, slots=True)
class IssuePlan:
    """What the editors set for one month's digest (`newsletter.issues."YYYY-MM"`)."""

    month: str  # "YYYY-MM"
    intro: str | None = None  # Markdown, shown under the greeting
    items: tuple[str, ...] | None = None  # item ids in the order shown; None: the month's dates
    subject: str | None = None  # overrides newsletter.subject for this month
    line: int = 0


@dataclass(frozen=True, slots=True)
class Logo:
    """The office's logo at the top of the email and the pages."""

    url: str
    alt: str
    width: int  # CSS pixels


@dataclass(frozen=True, slots=True)
class Brand:
    """The office's look without editing templates: logo, accent colour, footer address."""

    logo: Logo | None = None
    accent: str | None = None  # "#rrggbb", lower-case; white text on it passes WCAG AA
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Newsletter:
    """How the monthly digest is addressed and when it is sent."""

    sender: Mailbox
    reply_to: str | None
    subject: str
    schedule: str
    unsubscribe: str
    subscribers: str
    limits: Limits = Limits()
    # Sign each message with DKIM (the key is DIGEST_DKIM_KEY); None: the relay signs, or nobody.
    dkim: Dkim | None = None
    issues: tuple[IssuePlan, ...] = ()
    brand: Brand | None = None
    # The VERP return path and the bounce rules; None: the envelope sender is the From address.
    bounces: Bounces | None = None

    def plan(self, month: Month) -> IssuePlan | None:
        """Return what the editors set for `month`'s issue, if anything."""
        key = str(month)
        return next((p for p in self.issues if p.month == key), None)


EVENT_STATUSES = ("scheduled", "cancelled", "postponed")


@dataclass(frozen=True, slots=True)
class Place:
    """Where an event happens in person: a name people recognise, and an optional address."""

    name: str
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """When and where an item's event happens.

    An all-day event has dates; `end` is then exclusive (the day after the last day, as
    iCalendar's DTEND), although the catalogue writes the last day. A timed event has aware
    date-times in any zone (an offset given in the catalogue is kept).
    """

    start: date | datetime
    end: date | datetime
    location: Place | None = None
    online: str | None = None
    status: str = "scheduled"

    @property
    def all_day(self) -> bool:
        """Return whether the event runs whole days, with no times."""
        return not isinstance(self.start, datetime)

    @property
    def last_day(self) -> date:
        """Return an all-day event's last day, as the catalogue writes it."""
        return date.fromordinal(self.end.toordinal() - 1)


@dataclass(frozen=True, slots=True)
class Item:
    """One announcement."""

    id: str
    title: str
    date: datetime
    updated: datetime | None
    category: str
    section: str | None
    summary: str
    body: str | None
    link: str | None
    image: Image | None
    tags: tuple[str, ...]
    draft: bool
    line: int
    event: Event | None = None

    @property
    def modified(self) -> datetime:
        """Return when the item last changed: `updated`, else `date`."""
        return self.updated or self.date


@dataclass(frozen=True, slots=True)
class Catalogue:
    """A validated catalogue; nothing downstream checks it again."""

    path: Path
    publication: Publication
    newsletter: Newsletter | None
    items: tuple[Item, ...]
    # What `published`, `next_change` and `counts` find at a given moment, worked out once: each
    # is asked several times by one command, and a pass over 100k items is not free.
    _at: dict[datetime, _Split] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _split(self, now: datetime) -> _Split:
        found = self._at.get(now)
        if found is None:
            live, drafts, scheduled = [], 0, []
            for i in self.items:
                if i.draft:
                    drafts += 1
                elif i.date <= now:
                    live.append(i)
                else:
                    scheduled.append(i.date)
            # A stable sort keeps the file's order among items of the same date.
            live.sort(key=lambda i: i.date, reverse=True)
            found = _Split(tuple(live), drafts, len(scheduled), min(scheduled, default=None))
            self._at.clear()  # one moment at a time is all a command asks about
            self._at[now] = found
        return found

    def mailing(self) -> Newsletter:
        """Return the newsletter block, or say that rendering and sending the digest need one."""
        if self.newsletter is None:
            raise DigestError(
                f"{self.path.name}: there is no `newsletter` block; add one (from, subject, "
                "schedule, unsubscribe) to render or send the digest (see the editors' guide)"
            )
        return self.newsletter

    def published(self, now: datetime) -> tuple[Item, ...]:
        """Return the items public at `now`: no drafts, no scheduled ones, newest first."""
        return self._split(now).published

    def next_change(self, now: datetime) -> datetime | None:
        """Return when the next scheduled item becomes public, if any is scheduled."""
        return self._split(now).next_change

    def counts(self, now: datetime) -> dict[str, int]:
        """Return how many items there are, and how many are drafts or scheduled."""
        split = self._split(now)
        return {
            "items": len(self.items),
            "published": len(split.published),
            "drafts": split.drafts,
            "scheduled": split.scheduled,
            "categories": len(self.publication.categories),
        }


@dataclass(frozen=True, slots=True)
class _Split:
    """The catalogue at one moment."""

    published: tuple[Item, ...]
    drafts: int
    scheduled: int
    next_change: datetime | None


def load(path: Path, display_name: str | None = None) -> Catalogue:
    """Read and validate the catalogue at `path`; raise CatalogueError listing every problem."""
    name = display_name or str(path)
    try:
        with path.open("rb") as handle:
            # One byte past the limit is enough to know: a huge file, or an endless one such as
            # a device, is never read into memory whole.
            raw = handle.read(MAX_CATALOGUE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CatalogueError(
            [Problem(name, None, "", f"cannot read the catalogue: {reason}")]
        ) from exc
    return parse(raw, path, name)


def parse(raw: bytes, path: Path, name: str) -> Catalogue:
    """Validate the catalogue given as bytes; `path` anchors relative paths inside it."""
    if len(raw) > MAX_CATALOGUE_BYTES:
        raise CatalogueError([Problem(name, None, "", _too_big())])
    problems: list[Problem] = []
    # Loading and checking make millions of objects and no reference cycles: paused, the cyclic
    # collector no longer traverses the growing tree again and again (a third of the load time).
    paused = gc.isenabled()
    gc.disable()
    try:
        return _parse(raw, path, name, problems)
    finally:
        if paused:
            gc.enable()


def _too_big() -> str:
    return (
        f"the catalogue is larger than {MAX_CATALOGUE_BYTES // 1_000_000} MB, the most `digest` "
        "reads (100,000 items take about 90 MB); check that -c names the catalogue, and look "
        "for a pasted file or log that does not belong in it"
    )


def _parse(raw: bytes, path: Path, name: str, problems: list[Problem]) -> Catalogue:
    data = _read_yaml(raw, name, problems)
    if data is None:  # unreadable: nothing more can be checked
        if not problems:  # a document with no content, such as a lone `---`
            problems.append(
                Problem(
                    name,
                    None,
                    "",
                    "the catalogue is empty; the editors' guide (docs/editors.md) shows its format",
                )
            )
        raise CatalogueError(problems)
    # Duplicate keys and alias overuse do not stop loading: the schema is checked too, so that the
    # editor sees every mistake in one run.
    catalogue = _Checker(name, problems).catalogue(data, path)
    if problems or catalogue is None:
        problems.sort(key=lambda p: p.line or 0)
        raise CatalogueError(problems)
    return catalogue


def _is_items_key(key: Any) -> bool:
    """Return whether `key` is the node of the top-level `items` key, written plainly."""
    return (
        key.__class__ is yaml.ScalarNode
        and key.value == "items"
        and key.tag == _STR_TAG
        and not key.style
    )


# ------------------------------------------------------------------------------------------------
# YAML: a safe C loader where every scalar is text and every mapping knows its lines


class _Map(dict[str, Any]):
    """A mapping that remembers the line of each key, and the keys it had twice."""

    __slots__ = ("cut", "duplicates", "key_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}
        self.duplicates: list[tuple[str, int]] = []  # (key, line of the repeat)
        self.cut: list[tuple[str, str]] = []  # (key, the whole line's value) cut by a ` #`


class _Seq(list[Any]):
    """A sequence that remembers the line of each entry."""

    __slots__ = ("item_lines", "line")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _Loader(yaml.CSafeLoader):
    """CSafeLoader that keeps scalars as text, so the schema, not YAML 1.1, decides types.

    `title: NO` stays "NO", `date: 2025-11-31` reaches the date check instead of raising inside
    PyYAML, and `feed_limit: 50` is turned into a number by the field that expects one.

    libyaml parses the file and composes the tree of all of it, which the constructor then reads
    (for a large file, `_StreamingLoader` reads the items one by one instead).
    """

    # Start both registries empty: no implicit types, and no constructor for explicit tags such as
    # `!!timestamp 2025-11-31` (PyYAML's would raise a bare ValueError).
    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 -- typed as such by the stubs
    yaml_constructors: ClassVar[dict[Any, Any]] = {}
    problems: list[Problem]
    display_name: str
    sizes: dict[yaml.Node, int]
    alias_extra: int
    source: bytes
    _comment_lines: dict[int, int] | None = None

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        # The items list's node -> its entries made into values, and how many values they hold
        # (only `_StreamingLoader` makes them before the tree is constructed).
        self._streamed: dict[yaml.SequenceNode, tuple[_Seq, int]] = {}

    def note(self, mark: Any, message: str) -> None:
        self.problems.append(Problem(self.display_name, mark.line + 1, "", message))

    def construct_text(self, node: yaml.Node) -> str:
        return str(node.value)

    def construct_null(self, node: yaml.Node) -> None:
        return None

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        # PyYAML's resolver, cut down to what this loader resolves: plain nulls, else text. It
        # runs for every node of the file, and its general loop over resolvers was a tenth of
        # the load time.
        if kind is yaml.ScalarNode:
            if implicit[0] and (not value or value[0] in "~nN") and _NULL.match(value):
                return _NULL_TAG
            return _STR_TAG
        return _SEQ_TAG if kind is yaml.SequenceNode else _MAP_TAG

    def _child(self, node: yaml.Node, line: int) -> tuple[Any, int]:
        """Construct a child node; return it and how many nodes it expands to."""
        if node.tag == _STR_TAG and node.__class__ is yaml.ScalarNode:
            # Most nodes are text: constructed here directly rather than through
            # construct_object's general dispatch. Recorded like it, so that an alias to this
            # node is still seen (and counted) as one.
            if node in self.constructed_objects:
                self.alias_extra += 1
                self._over_budget(line, 1)
                return self.constructed_objects[node], 1
            value = self.constructed_objects[node] = node.value  # text already
            return value, 1
        if node in self.constructed_objects:  # an alias: counts again every time it is used
            size = self.sizes.get(node, 1)
            self.alias_extra += size
            self._over_budget(line, size)
            return self.constructed_objects[node], size
        value = self.construct_object(node, deep=True)
        return value, self.sizes.get(node, 1)

    def _over_budget(self, line: int, size: int) -> None:
        """Report, once, the alias that takes the expansion past the budget."""
        if self.alias_extra > ALIAS_BUDGET and self.alias_extra - size <= ALIAS_BUDGET:
            self.problems.append(
                Problem(
                    self.display_name,
                    line,
                    "",
                    f"aliases expand to more than {ALIAS_BUDGET} extra values; "
                    "write the content out instead of nesting aliases",
                )
            )

    def construct_map(self, node: yaml.MappingNode) -> _Map:
        data = _Map(node.start_mark.line + 1)
        lines = data.key_lines
        constructed = self.constructed_objects
        scalar = yaml.ScalarNode
        size = 1
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _STR_TAG and key_node.__class__ is scalar:
                # The common case, without construct_object's dispatch, recorded as it would.
                key = constructed[key_node] = key_node.value
            else:
                key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                self.note(key_node.start_mark, "keys must be plain words like `title`")
                continue
            if key in data:  # reported by the checker, which knows the path
                data.duplicates.append((key, key_line))
                continue
            if (
                value_node.tag == _STR_TAG
                and value_node.__class__ is scalar
                and value_node not in constructed
            ):
                value = constructed[value_node] = value_node.value  # _child's fast path, inline
                size += 1
                if not value_node.style and key in _ONE_LINE:
                    whole = self._cut_by_comment(value_node)
                    if whole is not None:
                        data.cut.append((key, whole))
            else:
                value, value_size = self._child(value_node, key_line)
                size += value_size
            data[key] = value
            lines[key] = key_line
        self.sizes[node] = size
        return data

    def _cut_by_comment(self, node: yaml.ScalarNode) -> str | None:
        """Return the line's whole value when a ` #` made YAML cut this plain scalar short."""
        if self._comment_lines is None:
            self._comment_lines = _lines_with_comments(self.source)
        end = node.end_mark
        start = self._comment_lines.get(end.line)
        if start is None:  # most lines: no ` #` anywhere on them
            return None
        stop = self.source.find(b"\n", start)
        # Marks count characters: only this one line is decoded to find the column.
        text = self.source[start : len(self.source) if stop < 0 else stop].decode("utf-8")
        if _COMMENT_AFTER.match(text, end.column) is None:
            return None
        return f"{node.value} {text[end.column :].strip()}"

    def construct_seq(self, node: yaml.SequenceNode) -> _Seq:
        streamed = self._streamed.get(node)
        if streamed is not None:  # the items, made into values as they were read
            self.sizes[node] = streamed[1]
            return streamed[0]
        data = _Seq(node.start_mark.line + 1)
        size = 1
        for child in node.value:
            # An alias node carries its anchor's position; the best place to point at is this list.
            aliased = child in self.constructed_objects
            line = node.start_mark.line + 1 if aliased else child.start_mark.line + 1
            value, value_size = self._child(child, line)
            size += value_size
            data.append(value)
            data.item_lines.append(line)
        self.sizes[node] = size
        return data

    def construct_unsupported(self, node: yaml.Node) -> Any:
        self.note(
            node.start_mark,
            f"the YAML tag {node.tag} is not supported here; remove it and write plain text",
        )
        # Go on as if the tag were not there, so that it is the only complaint about this value.
        if isinstance(node, yaml.MappingNode):
            return self.construct_map(node)
        if isinstance(node, yaml.SequenceNode):
            return self.construct_seq(node)
        return self.construct_text(node)


_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
# One-line text fields where a ` #` inside an unquoted value would silently cut it short.
_ONE_LINE = frozenset(
    {"title", "subtitle", "name", "summary", "alt", "subject", "intro", "location", "address"}
)
_COMMENT_AFTER = re.compile(r"[ \t]+#")


def _lines_with_comments(raw: bytes) -> dict[int, int]:
    """Return, for each line (from 0) holding a ` #`, the offset where the line starts.

    Found with `bytes.find` at memchr speed (a regex with a class in front tries every position,
    half a second over a 90 MB catalogue): a catalogue without comments costs no decoding at all,
    and only the lines that have one are looked at again.
    """
    # `#` is rare in a catalogue, a space is everywhere: look for the one, then check the other.
    hits = [at - 1 for at in _occurrences(raw, b"#") if at and raw[at - 1] in b" \t"]
    found: dict[int, int] = {}
    line, counted = 0, 0
    for at in hits:
        line += raw.count(b"\n", counted, at)
        counted = at
        if line not in found:
            found[line] = raw.rfind(b"\n", 0, at) + 1
    return found


def _occurrences(raw: bytes, needle: bytes) -> list[int]:
    """Return every offset of `needle` in `raw`."""
    found, at = [], raw.find(needle)
    while at >= 0:
        found.append(at)
        at = raw.find(needle, at + 1)
    return found


_Loader.add_implicit_resolver(_NULL_TAG, _NULL, ["~", "n", "N", ""])
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_text)
_Loader.add_constructor("tag:yaml.org,2002:null", _Loader.construct_null)
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_seq)
_Loader.add_constructor(None, _Loader.construct_unsupported)


# Catalogues from this size on are read item by item (about 17,000 items): below it libyaml's own
# composer is quicker (PyYAML's, in Python, costs about 7 % of a cold build of 1,000 items), and
# the tree of the whole file is small; above it, the tree is what fills the memory.
STREAM_FROM_BYTES = 16_000_000


class _StreamingLoader(Composer, _Loader):
    """The loader for a large catalogue: the top-level `items` list is made one item at a time.

    libyaml parses; the nodes are composed by PyYAML's Composer (see `compose_node`), so that
    each entry of `items` is constructed as soon as it is read and its nodes forgotten
    (`_stream_items`). libyaml's composer makes the tree of the whole file first: 620 MB of nodes
    for 100,000 items, two thirds of a cold build's peak memory.
    """

    def __init__(self, stream: bytes) -> None:
        _Loader.__init__(self, stream)
        Composer.__init__(self)
        self._level = 0  # how deep compose_node is: 1 for the document, 2 for its keys and values

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Compose the next node as libyaml's composer does, in its words for a bad anchor.

        PyYAML's Composer names the anchor in these two messages and consults path resolvers,
        which this loader has none of; otherwise it is the same composer.
        """
        event: Any  # typed as the base Event, which has no anchor
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            if event.anchor not in self.anchors:
                raise yaml.composer.ComposerError(
                    None, None, "found undefined alias", event.start_mark
                )
            return self.anchors[event.anchor]
        event = self.peek_event()
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise yaml.composer.ComposerError(
                "found duplicate anchor; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        self._level += 1
        try:
            if self.check_event(yaml.ScalarEvent):
                return self.compose_scalar_node(anchor)
            if self.check_event(yaml.SequenceStartEvent):
                if (
                    self._level == 2
                    and not self._streamed  # a second `items` key is a duplicate, never made
                    and _is_items_key(index)
                    and anchor is None
                    and not self.anchors
                ):
                    return self._stream_items()
                return self.compose_sequence_node(anchor)
            return self.compose_mapping_node(anchor)
        finally:
            self._level -= 1

    def _stream_items(self) -> yaml.SequenceNode:
        """Compose and construct the top-level `items` list one entry at a time.

        Returns the list's node without its entries; `construct_seq` gives what they were made
        into. Only while the file has no anchor so far: then no entry can be an alias's target,
        and once made into values, its nodes are forgotten. An anchor further on stops the
        forgetting, so that its aliases find it, as they would in a tree of the whole file.
        """
        start: Any = self.get_event()  # a SequenceStartEvent
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.SequenceNode, None, start.implicit)
        node = yaml.SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        data = _Seq(node.start_mark.line + 1)
        size = 1
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            child = self.compose_node(node, index)
            # As construct_seq would have done with the whole list.
            aliased = child in self.constructed_objects
            line = node.start_mark.line + 1 if aliased else child.start_mark.line + 1
            value, value_size = self._child(child, line)
            size += value_size
            data.append(value)
            data.item_lines.append(line)
            if not self.anchors:
                self.constructed_objects.clear()
                self.sizes.clear()
            index += 1
        end: Any = self.get_event()
        node.end_mark = end.end_mark
        self._streamed[node] = (data, size)
        return node


def _utf8(raw: bytes, name: str, problems: list[Problem]) -> bool:
    """Return whether `raw` is UTF-8; if not, append a problem that names the line and byte."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8"
        problems.append(Problem(name, line, "", message))
        return False
    return True


def _read_yaml(raw: bytes, name: str, problems: list[Problem]) -> Any:
    """Parse YAML bytes; on failure append a located problem and return None."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    # YAML counts these as line breaks where editors do not, which would shift every line number
    # after them; nobody means to type them, so they are refused up front, located by real lines.
    # ASCII has none. Two patterns that each start with fixed bytes are searched for at memchr
    # speed; one alternation, or `in`, is four times slower over a 90 MB catalogue.
    found = not raw.isascii() and (_NEL_UTF8.search(raw) or _LS_PS_UTF8.search(raw))
    if found and not _utf8(raw, name, problems):
        return None
    for odd in _ODD_BREAKS_UTF8.finditer(raw) if found else ():
        line = raw.count(b"\n", 0, odd.start()) + 1
        code = f"U+{ord(odd.group().decode()):04X}"
        problems.append(
            Problem(name, line, "", f"contains {code}, an invisible line break; delete it")
        )
    if problems:
        return None
    loader = (_StreamingLoader if len(raw) >= STREAM_FROM_BYTES else _Loader)(raw)
    loader.source = raw
    loader.problems = problems
    loader.display_name = name
    loader.sizes = {}
    loader.alias_extra = 0
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        where, message = _explain(exc, raw)
        problems.append(Problem(name, where, "", message))
        return None
    except yaml.reader.ReaderError as exc:  # a raw control character; libyaml counts bytes
        if not _utf8(raw, name, problems):
            return None  # libyaml checks the encoding as it reads; Python locates the bad byte
        line = raw[: exc.position].count(b"\n") + 1
        message = f"contains the control character U+{exc.character:04X}; remove it"
        problems.append(Problem(name, line, "", message))
        return None
    except yaml.YAMLError as exc:  # an error the parser could not locate
        problems.append(Problem(name, None, "", f"invalid YAML: {exc}"))
        return None
    finally:
        loader.dispose()


def _explain(exc: yaml.MarkedYAMLError, raw: bytes) -> tuple[int | None, str]:
    """Return the line where a YAML syntax error starts and what to do, in plain words.

    PyYAML's own wording is kept for the cases not recognised; the common slips (a quote left
    open, text after a closing quote, a colon or comma in an unquoted value, a line indented off
    its neighbours) get the line where they start and the fix.
    """
    mark = exc.problem_mark or exc.context_mark
    where = mark.line + 1 if mark is not None else None
    start = exc.context_mark.line + 1 if exc.context_mark is not None else where
    if exc.problem == "found unconstructable recursive node":
        return where, "an alias refers to the list or mapping it is inside; write the content out"
    text = raw.decode("utf-8", "replace")
    line = _line_text(text, where) if where is not None else ""
    wording = f"invalid YAML: {exc.problem or exc.context}"
    if exc.context and exc.problem:
        wording += f" ({exc.context})"
    if "\t" in line:
        return where, f"{wording}; YAML does not allow tabs for indentation, use spaces"
    if exc.context == "while scanning a quoted scalar":
        # Noticed only at the end of the file: the quote is where the problem starts.
        return start, (
            "invalid YAML: the quote that opens this value is never closed; end the value with "
            "the same quote mark"
        )
    opened = _runaway_quote(raw, where)
    if opened is not None:
        return opened, (
            "invalid YAML: the quote that opens this value is not closed on its line, so YAML "
            f"read on to the next quote mark, on line {where}; close the quote at the end of "
            "this value (for a quote inside the value, wrap the value in the other kind)"
        )
    if exc.problem in _INDENTATION_PROBLEMS and re.match(_TEXT_AFTER_QUOTE, line):
        return where, (
            "invalid YAML: text follows the closing quote; put the quotes around the whole value, "
            """like title: '"Quoted" and more'"""
        )
    if exc.context in ("while parsing a flow mapping", "while parsing a flow sequence"):
        closing = "}" if "mapping" in exc.context else "]"
        return start, (
            f"invalid YAML: the '{'{' if closing == '}' else '['}' on this line is not closed "
            f"with '{closing}' on its line, or a value inside holds ', ', ': ' or ' #'; close "
            "it, and put such values in quotes"
        )
    if exc.problem == "mapping values are not allowed in this context" and re.match(
        _COLON_IN_VALUE, line
    ):
        return where, (
            "invalid YAML: ': ' inside an unquoted value starts a new key; put the value in "
            'quotes, like title: "Note: the value"'
        )
    if exc.problem in _INDENTATION_PROBLEMS:
        return where, (
            "invalid YAML: this line is not indented like the lines around it; keys of one item "
            "start in the same column, and every entry of a list starts with '-' in the same "
            "column (spaces only)"
        )
    return where, wording


def _runaway_quote(raw: bytes, error_line: int | None) -> int | None:
    """Return the line of a quoted value that ran over several lines up to a later error."""
    if error_line is None:
        return None
    opened = None
    try:
        for token in yaml.scan(raw, Loader=yaml.CSafeLoader):
            if token.start_mark.line + 1 > error_line:
                break
            if (
                isinstance(token, yaml.ScalarToken)
                and token.style in ('"', "'")
                and token.end_mark.line > token.start_mark.line
                and token.end_mark.line + 1 >= error_line - 1
            ):
                opened = token.start_mark.line + 1
    except yaml.YAMLError:
        pass  # the error being explained; the tokens before it are what counts
    return opened


# Only a YAML error reads these two, so they are compiled then (by `re`, once), not on every
# start: the second, with its Unicode classes, takes about 8 ms to compile.
# A line `key: "quoted" more`: text after the closing quote.
_TEXT_AFTER_QUOTE = r"""\s*(?:- )?[\w-]+:\s+(["'])[^"']*\1[ \t]*[^\s#]"""
# A line `key: text: more`, the colon after the first being inside a plain value.
_COLON_IN_VALUE = r"\s*(?:- )?[\w-]+:\s+[^\s\"'{\[|>][^#]*?:(?:\s|$)"
_INDENTATION_PROBLEMS = frozenset(
    {
        "mapping values are not allowed in this context",
        "did not find expected '-' indicator",
        "did not find expected key",
        "expected <block end>, but found '<block mapping start>'",
        "expected <block end>, but found '<block sequence start>'",
        "expected <block end>, but found '-'",
    }
)


def _line_text(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


# ------------------------------------------------------------------------------------------------
# Validation


class _Invalid(Exception):
    """A value failed its field's check; the message is shown to the user."""


_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_CRON = re.compile(r"\S+(?:\s+\S+){4}")
# XML 1.0 cannot carry these, and they have no place in announcements: C0/C1 controls except tab and
# newlines, lone surrogates, and the two non-characters.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# A title or name is one line: these would end a line in a feed reader or an email header.
_LINE_BREAKS = re.compile("[\r\n\x85\u2028\u2029]")
# What ends an email header: every character str.splitlines() breaks at, and NUL. Python 3.11.7's
# email package lets a trailing newline in a header value end the header block (CVE-2024-6923),
# so message.header_safe refuses these in every header too, as a last guard.
HEADER_BREAKERS = re.compile("[\r\n\x00\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# U+0085, U+2028 and U+2029 as UTF-8 (in valid UTF-8 these bytes can only be those characters).
_ODD_BREAKS_UTF8 = re.compile(b"\xc2\x85|\xe2\x80[\xa8\xa9]")
_NEL_UTF8 = re.compile(b"\xc2\x85")
_LS_PS_UTF8 = re.compile(b"\xe2\x80[\xa8\xa9]")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "nothing" if value is None else repr(value)


def _text(
    value: Any, *, multiline: bool = False, limit: int = MAX_LINE, fix: str = "shorten it"
) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected text, found {_describe(value)}")
    if len(value) > limit and len(value.strip()) > limit:  # before scanning all of it below
        raise _Invalid(
            f"is {len(value.strip()):,} characters long (at most {limit:,} characters; {fix})"
        )
    # Checked before stripping: strip() would silently drop some controls at the edges.
    bad = _BAD_CHARS.search(value)
    if bad:
        raise _Invalid(f"contains the control character U+{ord(bad.group()):04X}; remove it")
    text = value.strip()
    if not text:
        raise _Invalid("is empty")
    if not multiline:
        line_break = _LINE_BREAKS.search(text)
        if line_break:
            raise _Invalid(
                f"must be a single line (it contains U+{ord(line_break.group()):04X}, a line break)"
            )
    return text


def _summary(value: Any) -> str:
    return _text(
        value,
        multiline=True,
        limit=MAX_SUMMARY,
        fix="a summary is the teaser every feed and digest shows; put the full text in `body`",
    )


def _body(value: Any) -> str:
    return _text(
        value,
        multiline=True,
        limit=MAX_BODY,
        fix="publish a text this long on the web site and point to it with `link`",
    )


def _slug(value: Any, limit: int = MAX_SLUG) -> str:
    text = _text(
        value,
        limit=limit,
        fix="a slug names files and links and must stay short; use a few words, like 'campus-news'",
    )
    if not _SLUG.fullmatch(text):
        raise _Invalid(
            f"'{text}' is not a slug (use lowercase letters, digits and single hyphens, "
            "like 'campus-news')"
        )
    return text


def _url(value: Any) -> str:
    text = _text(value, limit=MAX_URL, fix="use the page's short address")
    try:
        parts = urlsplit(text)
    except ValueError:  # a malformed IPv6 host such as `http://[::1`
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", text):
        raise _Invalid(f"'{text}' is not an absolute http(s) URL (like https://example.edu/page)")
    return text


def _email(value: Any) -> str:
    text = _text(value)
    if not re.fullmatch(r"[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+", text):
        raise _Invalid(f"'{text}' is not an email address (like office@example.edu)")
    return text


def _return_path(value: Any) -> str:
    """Return a bounce address: lower-case (servers case-fold local parts), room for the token."""
    text = _email(value).lower()
    local = text.rpartition("@")[0]
    if "+" in local:
        raise _Invalid(
            f"'{text}' already has a '+' in it; give the plain mailbox (like "
            "bounces@example.edu): digest adds '+' and a code for each message itself"
        )
    room = MAX_LOCAL_PART - 1 - VERP_TOKEN_LENGTH
    if len(local) > room:
        raise _Invalid(
            f"the part before '@' of '{text}' is {len(local)} characters; with the code digest "
            f"adds it must be at most {room}, or servers refuse the messages"
        )
    return text


def _mailbox(value: Any) -> Mailbox:
    text = _text(value)
    match = re.fullmatch(r"(?:([^<>]*?)\s*)?<([^<>]+)>", text)
    if not match:
        return Mailbox(None, _email(text))
    name = (match.group(1) or "").strip().strip('"').strip() or None
    return Mailbox(name, _email(match.group(2)))


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _dns_label(value: Any) -> str:
    text = _text(value).lower()
    if not _LABEL.fullmatch(text):
        raise _Invalid(
            f"{text!r} is not a DNS label (letters, digits and hyphens, at most 63, like "
            "'digest2026')"
        )
    return text


def _domain(value: Any) -> str:
    text = _text(value).lower().rstrip(".")
    labels = text.split(".")
    if len(labels) < 2 or len(text) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise _Invalid(f"{text!r} is not a domain name (like provost.example.edu)")
    return text


def _positive_int(value: Any) -> int:
    text = _text(value)
    # ASCII digits only: int() refuses some Unicode digits ('²') and very long numbers.
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 1:
        raise _Invalid(f"'{text}' is not a whole number of 1 or more")
    return int(text)


MAX_CONNECTIONS = 8
_PER = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


def _connections(value: Any) -> int:
    count = _positive_int(value)
    if count > MAX_CONNECTIONS:
        raise _Invalid(f"'{count}' connections is more than {MAX_CONNECTIONS}; relays refuse more")
    return count


def _rate(value: Any) -> float:
    text = _text(value)
    match = re.fullmatch(r"([0-9]{1,6})\s*/\s*(second|minute|hour)", text)
    if match is None or int(match.group(1)) < 1:
        raise _Invalid(f'\'{text}\' is not a rate; write it like "30/minute" or "5/second"')
    return int(match.group(1)) / _PER[match.group(2)]


def _bool(value: Any) -> bool:
    text = _text(value)
    if text not in ("true", "false"):
        raise _Invalid(f"'{text}' is not true or false")
    return text == "true"


def _language(value: Any) -> str:
    text = _text(value)
    if not _LANGUAGE.fullmatch(text):
        raise _Invalid(f"'{text}' is not a language tag (like en or zh-HK)")
    return text


def _timezone(value: Any) -> str:
    text = _text(value)
    try:
        ZoneInfo(text)
    # OSError: a region such as `Asia` is a directory of the time zone database, not a zone.
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise _Invalid(
            f"'{text}' is not a time zone name (use an IANA name like Asia/Hong_Kong)"
        ) from exc
    return text


def _subject(value: Any) -> str:
    text = _text(value)
    # Every month, since a month's name or a day of the year can be what breaks the subject.
    for month in range(1, 13):
        try:
            subject_line(text, date(SAMPLE_YEAR, month, 1))
        except ValueError as exc:
            raise _Invalid(str(exc)) from exc
    return text


# The year whose twelve months `check` fills the subject in for.
SAMPLE_YEAR = 2025

_PLACEHOLDERS = (
    "only {month} is available, optionally with a date format after a colon, like "
    "{month:%B %Y}; attributes, indexes and conversions ({month.year}, {month[0]}, {month!r}) "
    "are not"
)


def subject_line(template: str, month: date) -> str:
    """Return the subject for the month that starts on `month`; raise ValueError saying why not.

    The one rule for `newsletter.subject`: `check` applies it to every month of a year, `render`
    and `send` to the month they render. Only `{month}` may appear, with an optional strftime
    format: no attributes, indexes or conversions, which would reach into Python objects.
    """
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"is not a valid template ({exc}); write braces as {{{{ and }}}}") from exc
    parts = []
    for literal, name, spec, conversion in fields:
        parts.append(literal)
        if name is None:
            continue
        if name != "month" or conversion is not None or "{" in (spec or ""):
            written = "{" + name + (f"!{conversion}" if conversion else "")
            written += f":{spec}}}" if spec else "}"
            raise ValueError(f"{written} is not allowed: {_PLACEHOLDERS}")
        try:
            parts.append(format(month, spec or ""))
        except ValueError as exc:
            raise ValueError(f"{{month:{spec}}} is not a valid date format ({exc})") from exc
    subject = "".join(parts)
    label = f"{month:%B %Y}"
    breaker = HEADER_BREAKERS.search(subject)
    if breaker:
        raise ValueError(
            f"becomes {subject!r} for {label}, which contains U+{ord(breaker.group()):04X}, a "
            "line break, and a subject must be one line; remove the date format that makes it "
            "(such as %n)"
        )
    if not subject.strip():
        raise ValueError(f"is empty for {label}; write some text around {{month}}")
    return subject


def _cron(value: Any) -> str:
    text = _text(value)
    if not _CRON.fullmatch(text):
        raise _Invalid(f"'{text}' is not a cron expression of five fields (like '0 9 1 * *')")
    return text


def _unsubscribe(value: Any) -> str:
    text = _text(value, limit=MAX_URL, fix="use a short address")
    if text.startswith("mailto:"):
        _email(text[len("mailto:") :].split("?", 1)[0])
        return text
    if text.startswith("https://"):
        return _url(text)
    raise _Invalid(f"'{text}' is neither a mailto: address nor an https:// URL")


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"expected a list like [medicine, research], found {_describe(value)}")
    return tuple(_text(tag) for tag in value)


# -- newsletter.issues and newsletter.brand ------------------------------------------------------

_MONTH_KEY = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def _month_key(key: str) -> Month:
    """Read an issue's key, a month written "YYYY-MM"."""
    match = _MONTH_KEY.fullmatch(key)
    # The year's last month has no month after it to end in, as the date check needs.
    if match is None or not 1 <= int(match.group(1)) <= 9998:
        raise _Invalid(
            f'\'{key}\' is not a month; write the month as "YYYY-MM" in quotes, like "2025-11"'
        )
    return Month(int(match.group(1)), int(match.group(2)))


def _intro(value: Any) -> str:
    return _text(
        value,
        multiline=True,
        limit=MAX_SUMMARY,
        fix="an introduction is a short note; publish a longer letter as an item with a `link`",
    )


def _unknown_id(slug: str, known: Mapping[str, Item]) -> str:
    """Say that no item has the id `slug`, suggesting the id it was probably meant as."""
    close = difflib.get_close_matches(slug, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; check the item's `id`"
    return f"'{slug}' is not the id of any item{hint}"


def _https_url(value: Any) -> str:
    text = _url(value)
    if not text.startswith("https://"):
        raise _Invalid(
            f"'{text}' is not an https:// URL; mail clients and browsers block or warn about "
            "images over plain http, so serve the logo over https"
        )
    return text


# The logo's width in CSS pixels: big enough to see, and no wider than the email's header inside
# its margins (600 px less 32 px each side), which Outlook, ignoring max-width, would stretch.
LOGO_WIDTH = 200
MIN_LOGO_WIDTH = 16
MAX_LOGO_WIDTH = 536


def _logo_width(value: Any) -> int:
    text = _text(value)
    if not re.fullmatch(r"[0-9]{1,4}", text):
        raise _Invalid(f"'{text}' is not a width in pixels (a whole number, like 200)")
    width = int(text)
    if not MIN_LOGO_WIDTH <= width <= MAX_LOGO_WIDTH:
        raise _Invalid(
            f"{width} px is outside {MIN_LOGO_WIDTH}-{MAX_LOGO_WIDTH} px; the email's header is "
            f"{MAX_LOGO_WIDTH} px wide inside its margins"
        )
    return width


_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# WCAG 2.x level AA for normal text: white on the accent (the header, buttons) and the accent as
# link text on white are the same pair of colours, so one ratio decides both.
WCAG_AA = 4.5


def contrast_with_white(colour: str) -> float:
    """Return the WCAG 2.x contrast ratio between a #rrggbb colour and white."""
    from coloraide import Color  # imported only for a catalogue that has an accent

    return float(Color(colour).contrast("#ffffff", method="wcag21"))


def _accent(value: Any) -> str:
    text = _text(value)
    if not _HEX_COLOUR.fullmatch(text):
        raise _Invalid(
            f"'{text}' is not a colour; write it as a hex colour in quotes, like \"#7a1f5c\""
        )
    digits = text[1:].lower()
    colour = "#" + ("".join(d * 2 for d in digits) if len(digits) == 3 else digits)
    ratio = contrast_with_white(colour)
    if ratio < WCAG_AA:
        raise _Invalid(
            f"'{text}' gives white text on it (and itself as link text on white) a contrast of "
            f"{_ratio(ratio)}; WCAG AA needs {WCAG_AA}:1: choose a darker colour"
        )
    return colour


def _ratio(ratio: float) -> str:
    """Write a contrast ratio as people read it, never rounded up past a threshold: 4.49:1."""
    return f"{int(ratio * 100) / 100:.2f}".rstrip("0").rstrip(".") + ":1"


Parser = Callable[[Any], Any]
# field name -> (required, parser); a parser returns the checked value or raises _Invalid.
Fields = Mapping[str, tuple[bool, Parser]]


class _Checker:
    """Walks the loaded YAML, collecting every problem instead of stopping at the first."""

    def __init__(self, name: str, problems: list[Problem]) -> None:
        self.name = name
        self.problems = problems
        # Each item id an issue lists: (its issue's month, its path, its line, the id).
        self.listed: list[tuple[Month, str, int, str]] = []

    def error(self, line: int | None, path: str, message: str) -> None:
        self.problems.append(Problem(self.name, line, path, message))

    def mapping(self, value: Any, line: int | None, path: str, fields: Fields) -> dict[str, Any]:
        """Check a mapping against `fields`; return the values that passed (missing: absent)."""
        if not isinstance(value, _Map):
            self.error(line, path, f"expected a mapping of keys, found {_describe(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, repeat in value.duplicates:
            self.error(
                repeat,
                f"{path}.{key}" if path else key,
                f"duplicate key (first at line {value.key_lines[key]}); YAML would keep only the "
                "last one, so remove or rename one of them",
            )
        for key, whole in value.cut:
            self.error(
                value.key_lines[key],
                f"{path}.{key}" if path else key,
                f"' #' starts a YAML comment, so this value was cut to {value[key]!r}; put the "
                f"whole value in quotes: {key}: {json.dumps(whole, ensure_ascii=False)}",
            )
        for key, raw in value.items():
            spec = fields.get(key)
            if spec is None:
                hint = difflib.get_close_matches(key, list(fields), n=1)
                known = f"did you mean '{hint[0]}'?" if hint else "known keys: " + ", ".join(fields)
                key_path = f"{path}.{key}" if path else key
                self.error(value.key_lines[key], key_path, f"unknown key '{key}'; {known}")
                continue
            required, parse = spec
            if raw is None and not required:
                continue  # an optional key left empty counts as absent
            try:
                out[key] = parse(raw)
            except _Invalid as exc:
                key_path = f"{path}.{key}" if path else key
                self.error(value.key_lines[key], key_path, str(exc))
        for key, (required, _) in fields.items():
            if required and key not in value:
                where = f"{path}.{key}" if path else key
                self.error(value.line, where, "is required")
        return out

    def sequence(
        self,
        value: Any,
        line: int | None,
        path: str,
        each: Callable[[Any, int, str], T | None],
        *,
        release: bool = False,
    ) -> list[T]:
        """Check each entry of a list; `release` lets go of each parsed entry once checked.

        Released, the items' parsed mappings (a third of the catalogue's memory while it is
        checked) are freed one by one as their items are made, not all at the end.
        """
        if not isinstance(value, _Seq):
            self.error(line, path, f"expected a list, found {_describe(value)}")
            return []
        out = []
        for index, (entry, line) in enumerate(zip(value, value.item_lines, strict=True)):
            result = each(entry, line, f"{path}[{index}]")
            if release:
                value[index] = None
            if result is not None:
                out.append(result)
        return out

    # -- the catalogue's parts -----------------------------------------------------------------

    def catalogue(self, data: Any, path: Path) -> Catalogue | None:
        top = self.mapping(
            data,
            getattr(data, "line", 1),
            "",
            {
                "publication": (True, _identity),
                "newsletter": (False, _identity),
                "items": (True, _identity),
            },
        )
        publication = self.publication(top.get("publication"), _key_line(data, "publication"))
        newsletter = None
        if "newsletter" in top:
            newsletter = self.newsletter(top["newsletter"], _key_line(data, "newsletter"))
        items = []
        if "items" in top:
            before = len(self.problems)
            items = self.items(top["items"], _key_line(data, "items"), publication)
            # An item with a mistake is not in `items`: its id is not "unknown".
            whole = len(self.problems) == before
            self.listed_items(items, publication.tz if publication else None, whole)
        if publication is None or self.problems:
            return None
        return Catalogue(path, publication, newsletter, tuple(items))

    def publication(self, value: Any, line: int | None) -> Publication | None:
        if value is None:
            return None
        fields = self.mapping(
            value,
            line,
            "publication",
            {
                "title": (True, _text),
                "subtitle": (False, _text),
                "site_url": (True, _url),
                "feeds_url": (True, _url),
                "author": (True, _identity),
                "language": (False, _language),
                "timezone": (False, _timezone),
                "feed_limit": (False, _positive_int),
                "categories": (True, _identity),
                "sections": (False, _identity),
            },
        )
        author = None
        if "author" in fields:
            a = self.mapping(
                fields["author"],
                _key_line(value, "author"),
                "publication.author",
                {"name": (True, _text), "email": (False, _email)},
            )
            if "name" in a:
                author = Author(a["name"], a.get("email"))
        categories = self.declared(fields, value, "categories", Category)
        sections = self.declared(fields, value, "sections", Section)
        required = ("title", "site_url", "feeds_url")
        if author is None or not categories or any(k not in fields for k in required):
            return None
        feeds_url = fields["feeds_url"]
        return Publication(
            title=fields["title"],
            subtitle=fields.get("subtitle"),
            site_url=fields["site_url"],
            feeds_url=feeds_url if feeds_url.endswith("/") else feeds_url + "/",
            author=author,
            language=fields.get("language", "en"),
            timezone=fields.get("timezone", "UTC"),
            feed_limit=fields.get("feed_limit", 50),
            categories=tuple(categories),
            sections=tuple(sections),
        )

    def declared(self, fields: dict[str, Any], parent: Any, key: str, kind: type[T]) -> list[T]:
        """Check a list of {slug, name} declarations: unique, not reserved."""
        if key not in fields:
            return []
        seen: dict[str, int] = {}
        path = f"publication.{key}"

        def each(entry: Any, line: int, where: str) -> T | None:
            got = self.mapping(entry, line, where, {"slug": (True, _slug), "name": (True, _text)})
            if "slug" not in got or "name" not in got:
                return None
            slug = got["slug"]
            if slug in seen:
                self.error(
                    line,
                    f"{where}.slug",
                    f"'{slug}' is declared twice (first at line {seen[slug]})",
                )
                return None
            if key == "categories" and slug in RESERVED_SLUGS:
                self.error(
                    line,
                    f"{where}.slug",
                    f"'{slug}' is reserved for the combined feed; choose another",
                )
                return None
            seen[slug] = line
            return kind(slug, got["name"])  # type: ignore[call-arg]

        declared = self.sequence(fields[key], _key_line(parent, key), path, each)
        if key == "categories" and not declared and isinstance(fields[key], _Seq):
            self.error(_key_line(parent, key), path, "declare at least one category")
        return declared

    def newsletter(self, value: Any, line: int | None) -> Newsletter | None:
        fields = self.mapping(
            value,
            line,
            "newsletter",
            {
                "from": (True, _mailbox),
                "reply_to": (False, _email),
                "subject": (True, _subject),
                "schedule": (True, _cron),
                "unsubscribe": (True, _unsubscribe),
                "subscribers": (False, _text),
                "delivery": (False, _identity),
                "dkim": (False, _identity),
                "issues": (False, _identity),
                "brand": (False, _identity),
                "bounces": (False, _identity),
            },
        )
        bounces = (
            self.bounces(fields["bounces"], _key_line(value, "bounces"))
            if "bounces" in fields
            else None
        )
        dkim = self.dkim(fields["dkim"], _key_line(value, "dkim")) if "dkim" in fields else None
        plans = (
            self.issues(fields["issues"], _key_line(value, "issues")) if "issues" in fields else []
        )
        brand = (
            self.brand(fields["brand"], _key_line(value, "brand")) if "brand" in fields else None
        )
        if dkim is not None and "from" in fields and not dkim.aligns(fields["from"].address):
            self.misaligned(dkim, fields["from"].address, _key_line(fields["dkim"], "domain"))
        limits = Limits()
        if "delivery" in fields:
            given = self.mapping(
                fields["delivery"],
                _key_line(value, "delivery"),
                "newsletter.delivery",
                {
                    "connections": (False, _connections),
                    "rate": (False, _rate),
                    "daily_limit": (False, _positive_int),
                },
            )
            limits = Limits(**given)
        if any(k not in fields for k in ("from", "subject", "schedule", "unsubscribe")):
            return None
        return Newsletter(
            sender=fields["from"],
            reply_to=fields.get("reply_to"),
            subject=fields["subject"],
            schedule=fields["schedule"],
            unsubscribe=fields["unsubscribe"],
            subscribers=fields.get("subscribers", "subscribers.csv"),
            limits=limits,
            dkim=dkim,
            issues=tuple(plans),
            brand=brand,
            bounces=bounces,
        )

    def bounces(self, value: Any, line: int | None) -> Bounces | None:
        given = self.mapping(
            value,
            line,
            "newsletter.bounces",
            {
                "address": (True, _return_path),
                "soft_limit": (False, _positive_int),
                "soft_days": (False, _positive_int),
            },
        )
        if "address" not in given:  # reported already
            return None
        return Bounces(**given)

    def dkim(self, value: Any, line: int | None) -> Dkim | None:
        given = self.mapping(
            value,
            line,
            "newsletter.dkim",
            {"domain": (True, _domain), "selector": (True, _dns_label)},
        )
        if len(given) < 2:  # both keys; a missing one is already reported
            return None
        return Dkim(domain=given["domain"], selector=given["selector"])

    def misaligned(self, dkim: Dkim, sender: str, line: int | None) -> None:
        own = sender.rpartition("@")[2].lower()
        self.error(
            line,
            "newsletter.dkim.domain",
            f"'{dkim.domain}' does not align with the From address's domain '{own}', so DMARC "
            f"would fail for every message even with a good signature; sign as '{own}' (or a "
            "domain it is a subdomain of), or leave newsletter.dkim out and let the relay sign",
        )

    def items(self, value: Any, line: int | None, publication: Publication | None) -> list[Item]:
        tz: tzinfo = publication.tz if publication else ZoneInfo("UTC")
        categories = {c.slug for c in publication.categories} if publication else None
        sections = {s.slug for s in publication.sections} if publication else None
        seen: dict[str, int] = {}

        # Thousands of items share a date, a category, a section: each distinct text is parsed
        # once (the values are immutable, so sharing them is safe).
        dates: dict[str, datetime] = {}
        slugs: dict[str, str] = {}

        def when(value: Any) -> datetime:
            if value.__class__ is str:
                known = dates.get(value)
                if known is None:
                    known = dates[value] = _when(value, tz)
                return known
            return _when(value, tz)

        # An item names a category or section by its slug; one too long is not declared, which
        # its declaration's own error says once rather than once for every item.
        def declared_slug(value: Any) -> str:
            if value.__class__ is str:
                known = slugs.get(value)
                if known is None:
                    known = slugs[value] = _slug(value, MAX_LINE)
                return known
            return _slug(value, MAX_LINE)

        fields: Fields = {
            "id": (True, _slug),
            "title": (True, _text),
            "date": (True, when),
            "updated": (False, when),
            "category": (True, declared_slug),
            "section": (False, declared_slug),
            "summary": (True, _summary),
            "body": (False, _body),
            "link": (False, _url),
            "image": (False, _identity),
            "tags": (False, _tags),
            "draft": (False, _bool),
            "event": (False, _identity),
        }

        required = sum(1 for r, _ in fields.values() if r)

        def each(entry: Any, line: int, path: str) -> Item | None:
            before = len(self.problems)
            got = self.mapping(entry, line, path, fields)
            if "image" in got:
                got["image"] = self.image(entry, got["image"], path)
            if "event" in got:
                got["event"] = self.event(entry, got["event"], path, tz)
            ok = len(self.problems) == before
            ok = self.item_fits(entry, got, path, line, seen, categories, sections) and ok
            if not ok or len(got) < required:
                return None
            return Item(
                id=got["id"],
                title=got["title"],
                date=got["date"],
                updated=got.get("updated"),
                category=got["category"],
                section=got.get("section"),
                summary=got["summary"],
                body=got.get("body"),
                link=got.get("link"),
                image=got.get("image"),
                tags=got.get("tags", ()),
                draft=got.get("draft", False),
                line=line,
                event=got.get("event"),
            )

        return self.sequence(value, line, "items", each, release=True)

    def image(self, entry: Any, value: Any, path: str) -> Image | None:
        """Check an item's image: a URL and its alt text, both required."""
        pic = self.mapping(
            value,
            _key_line(entry, "image"),
            f"{path}.image",
            {"url": (True, _url), "alt": (True, _text)},
        )
        return Image(pic["url"], pic["alt"]) if len(pic) == 2 else None

    def event(self, entry: Any, value: Any, path: str, tz: tzinfo) -> Event | None:
        """Check an item's event block: its times, its place and its status."""
        where, line = f"{path}.event", _key_line(entry, "event")
        got = self.mapping(
            value,
            line,
            where,
            {
                "start": (True, lambda v: _moment(v, tz)),
                "end": (False, lambda v: _moment(v, tz)),
                "duration": (False, _duration),
                "location": (False, _identity),
                "online": (False, _online),
                "status": (False, _status),
            },
        )
        place = None
        if "location" in got:
            place = self.place(value, got["location"], where)
        elif (
            isinstance(value, _Map)
            and value.get("location") is None
            and value.get("online") is None
        ):
            self.error(
                value.line,
                where,
                "gives neither `location` nor `online`; say where people go, like "
                "location: {name: Lecture Theater A}, or online: https://... for a web meeting",
            )
        failed = any(k in value and k not in got for k in ("end", "duration"))
        if "start" not in got or failed:  # reported already
            return None
        end = self.event_end(value, got, where)
        if end is None or ("location" in got and place is None):
            return None
        return Event(got["start"], end, place, got.get("online"), got.get("status", "scheduled"))

    def event_end(self, value: Any, got: dict[str, Any], where: str) -> date | datetime | None:
        """Return an event's end (exclusive for an all-day one), or None after an error."""
        start: date | datetime = got["start"]
        all_day = not isinstance(start, datetime)
        kind = "a date" if all_day else "a date and time"
        if "end" in got and "duration" in got:
            self.error(
                _key_line(value, "duration"),
                f"{where}.duration",
                "is given with `end`; give one of them",
            )
            return None
        if "duration" in got:
            length: timedelta = got["duration"]
            if all_day and (length.seconds or length.microseconds):
                self.error(
                    _key_line(value, "duration"),
                    f"{where}.duration",
                    "is not a whole number of days, and this event's start is a date (an "
                    "all-day event); give days, like P2D, or give start a time",
                )
                return None
            return start + length
        if "end" not in got:
            if all_day:
                return start + timedelta(days=1)  # one whole day
            self.error(
                _key_line(value, "start"),
                f"{where}.start",
                "has a time but the event has neither `end` nor `duration`; add one, like "
                "duration: PT2H",
            )
            return None
        end: date | datetime = got["end"]
        if isinstance(end, datetime) == all_day:
            self.error(
                _key_line(value, "end"),
                f"{where}.end",
                f"must be {kind}, like start: both dates for an all-day event, or both dates "
                "with times",
            )
            return None
        if all_day and end < start:
            self.error(
                _key_line(value, "end"),
                f"{where}.end",
                f"{end.isoformat()} is before start ({start.isoformat()}); for an all-day "
                "event `end` is its last day (a one-day event needs no end)",
            )
            return None
        if not all_day and end <= start:
            said = "is the same time as" if end == start else "is before"
            self.error(
                _key_line(value, "end"),
                f"{where}.end",
                f"{said} start ({start.isoformat()}); an event ends after it starts",
            )
            return None
        return end + timedelta(days=1) if all_day else end

    def place(self, event: Any, value: Any, where: str) -> Place | None:
        """Check an event's location: a name (text alone is a name), optional address."""
        if isinstance(value, str):
            try:
                return Place(_text(value))
            except _Invalid as exc:
                self.error(_key_line(event, "location"), f"{where}.location", str(exc))
                return None
        got = self.mapping(
            value,
            _key_line(event, "location"),
            f"{where}.location",
            {"name": (True, _text), "address": (False, _text)},
        )
        return Place(got["name"], got.get("address")) if "name" in got else None

    def item_fits(
        self,
        entry: Any,
        got: dict[str, Any],
        path: str,
        line: int,
        seen: dict[str, int],
        categories: set[str] | None,
        sections: set[str] | None,
    ) -> bool:
        """Check what one item's fields must agree on with the rest; return whether they do."""
        ok = True
        if "id" in got:
            if got["id"] in seen:
                self.error(
                    _key_line(entry, "id"),
                    f"{path}.id",
                    f"'{got['id']}' is already used by the item at line {seen[got['id']]}; "
                    "ids must be unique",
                )
                ok = False
            else:
                seen[got["id"]] = line
        for key, declared in (("category", categories), ("section", sections)):
            slug = got.get(key)
            if declared is not None and slug is not None and slug not in declared:
                self.error(_key_line(entry, key), f"{path}.{key}", _undeclared(slug, key, declared))
                ok = False
        if "date" in got and got.get("updated") is not None and got["updated"] < got["date"]:
            self.error(
                _key_line(entry, "updated"),
                f"{path}.updated",
                "is before the item's date; `updated` records a later correction",
            )
            ok = False
        return ok

    # -- newsletter.issues and newsletter.brand ------------------------------------------------

    def issues(self, value: Any, line: int | None) -> list[IssuePlan]:
        """Check `newsletter.issues`: a mapping of "YYYY-MM" months to what each issue holds."""
        if not isinstance(value, _Map):
            self.error(
                line,
                "newsletter.issues",
                f'expected a mapping of months like "2025-11", found {_describe(value)}',
            )
            return []
        for key, repeat in value.duplicates:
            self.error(
                repeat,
                f'newsletter.issues."{key}"',
                f"this month is given twice (first at line {value.key_lines[key]}); YAML would "
                "keep only the last one, so merge them into one",
            )
        plans = []
        for key, raw in value.items():
            plan = self.issue_plan(key, raw, value.key_lines[key])
            if plan is not None:
                plans.append(plan)
        return plans

    def issue_plan(self, key: str, value: Any, line: int) -> IssuePlan | None:
        """Check one month's issue: its key, `intro`, `items` and `subject`."""
        where = f'newsletter.issues."{key}"'
        try:
            month = _month_key(key)
        except _Invalid as exc:
            self.error(line, where, str(exc))
            month = None
        got = self.mapping(
            value,
            line,
            where,
            {"intro": (False, _intro), "items": (False, _identity), "subject": (False, _text)},
        )
        if month is None:
            return None
        if "subject" in got:
            try:
                subject_line(got["subject"], month.first_day)
            except ValueError as exc:
                self.error(_key_line(value, "subject"), f"{where}.subject", str(exc))
                del got["subject"]
        items = None
        if "items" in got:
            items = self.issue_items(got["items"], _key_line(value, "items"), where, month)
        return IssuePlan(str(month), got.get("intro"), items, got.get("subject"), line)

    def issue_items(
        self, value: Any, line: int | None, where: str, month: Month
    ) -> tuple[str, ...] | None:
        """Check an issue's list of item ids; each is matched to its item once items are read."""
        seen: dict[str, str] = {}

        def each(entry: Any, entry_line: int, path: str) -> str | None:
            try:
                slug = _slug(entry)
            except _Invalid as exc:
                self.error(entry_line, path, str(exc))
                return None
            if slug in seen:
                first = seen[slug].removeprefix(f"{where}.")
                self.error(
                    entry_line,
                    path,
                    f"'{slug}' is listed twice (first as {first}); list each item once",
                )
                return None
            seen[slug] = path
            self.listed.append((month, path, entry_line, slug))
            return slug

        ids = self.sequence(value, line, f"{where}.items", each)
        if isinstance(value, _Seq) and not value:
            self.error(
                line,
                f"{where}.items",
                "is an empty list; list the ids of the items to show, or remove `items` to show "
                "the items dated in the month",
            )
            return None
        return tuple(ids)

    def listed_items(self, items: list[Item], tz: tzinfo | None, whole: bool) -> None:
        """Check that every id an issue lists names an item that issue can show."""
        if not self.listed:  # most catalogues: no index of 100,000 ids for nothing
            return
        known = {i.id: i for i in items}
        for month, path, line, slug in self.listed:
            found = known.get(slug)
            if found is None:
                if whole:
                    self.error(line, path, _unknown_id(slug, known))
                continue
            if found.draft:
                self.error(
                    line,
                    path,
                    f"'{slug}' is a draft (line {found.line}), and drafts are published nowhere; "
                    "publish it first (remove `draft: true`), or take it out of the list",
                )
            elif tz is not None and found.date >= month.shift(1).start(tz):
                self.error(
                    line,
                    path,
                    f"'{slug}' is dated {found.date.astimezone(tz).date().isoformat()} (line "
                    f"{found.line}), after {month.label} ends, so it is still scheduled when the "
                    f"{month.label} digest goes out; list it in the issue of its own month, or "
                    "take it out of the list",
                )

    def brand(self, value: Any, line: int | None) -> Brand | None:
        """Check `newsletter.brand`: a logo, an accent colour that passes WCAG AA, an address."""
        fields = self.mapping(
            value,
            line,
            "newsletter.brand",
            {"logo": (False, _identity), "accent": (False, _accent), "address": (False, _text)},
        )
        if isinstance(value, _Map) and "accent" in value and value["accent"] is None:
            self.error(
                _key_line(value, "accent"),
                "newsletter.brand.accent",
                "is empty; '#' starts a YAML comment, so a colour must be in quotes, like "
                'accent: "#7a1f5c"',
            )
        logo = None
        if "logo" in fields:
            got = self.mapping(
                fields["logo"],
                _key_line(value, "logo"),
                "newsletter.brand.logo",
                {"url": (True, _https_url), "alt": (True, _text), "width": (False, _logo_width)},
            )
            if "url" in got and "alt" in got:
                logo = Logo(got["url"], got["alt"], got.get("width", LOGO_WIDTH))
        return Brand(logo, fields.get("accent"), fields.get("address"))


def _undeclared(slug: str, kind: str, declared: set[str]) -> str:
    """Say that `slug` is not declared, suggesting the declared slug it was probably meant as."""
    close = difflib.get_close_matches(slug, sorted(declared), n=1)
    if close:
        return f"'{slug}' is not a declared {kind}; did you mean '{close[0]}'?"
    plural = {"category": "categories", "section": "sections"}[kind]
    listed = ", ".join(sorted(declared)) or f"none (add publication.{plural})"
    return f"'{slug}' is not a declared {kind}; declared: {listed}"


def _identity(value: Any) -> Any:
    return value


def _key_line(value: Any, key: str) -> int | None:
    if isinstance(value, _Map):
        return value.key_lines.get(key, value.line)
    return None


def _when(value: Any, tz: tzinfo) -> datetime:
    """Parse `YYYY-MM-DD` or an ISO 8601 date-time; naive values are read in `tz`."""
    text = _text(value)
    try:
        if _DATE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=tz)
        if _DATETIME.fullmatch(text):
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    except ValueError as exc:
        raise _Invalid(f"'{text}' is not a real date ({exc})") from exc
    raise _Invalid(
        f"'{text}' is not a date (use YYYY-MM-DD, or an ISO 8601 date-time like 2025-11-19T09:30)"
    )


def _moment(value: Any, tz: tzinfo) -> date | datetime:
    """Parse an event time: a date (all day), or a date-time in `tz` unless it has an offset."""
    text = _text(value)
    if _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise _Invalid(f"'{text}' is not a real date ({exc})") from exc
    if not _DATETIME.fullmatch(text):
        raise _Invalid(
            f"'{text}' is not a date or a date and time (use YYYY-MM-DD for an all-day event, "
            "or an ISO 8601 date-time like 2025-11-19T18:30)"
        )
    return _when(text, tz)


# ISO 8601 durations of weeks, or days and a time (PT2H, PT1H30M, P1D, P2DT3H), or the same in
# words: "2 hours", "90 minutes", "1 day", "1h30m".
_ISO_DURATION = re.compile(
    r"P(?:(?P<w>\d{1,3})W|(?:(?P<d>\d{1,3})D)?(?:T(?:(?P<h>\d{1,4})H)?(?:(?P<m>\d{1,5})M)?)?)"
)
_WORD_DURATION = re.compile(
    r"(?:(?P<d>\d{1,3})\s*(?:d|days?)\s*)?(?:(?P<h>\d{1,4})\s*(?:h|hours?)\s*)?"
    r"(?:(?P<m>\d{1,5})\s*(?:m|min|minutes?))?"
)
# The longest event a calendar is asked to show: a year.
MAX_EVENT_DAYS = 366


def _duration(value: Any) -> timedelta:
    text = _text(value)
    found = _ISO_DURATION.fullmatch(text) or _WORD_DURATION.fullmatch(text.lower())
    parts = {k: int(v) for k, v in found.groupdict().items() if v} if found else {}
    if not parts or text.endswith("T"):
        raise _Invalid(
            f"'{text}' is not a duration; write it like PT2H, PT1H30M or P1D (ISO 8601), or "
            "like 2 hours, 90 minutes, 1 day"
        )
    length = timedelta(
        weeks=parts.get("w", 0),
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
    )
    if not length:
        raise _Invalid(f"'{text}' is no time at all; an event lasts a while")
    if length > timedelta(days=MAX_EVENT_DAYS):
        raise _Invalid(f"'{text}' is longer than {MAX_EVENT_DAYS} days; check it")
    return length


def _online(value: Any) -> str:
    text = _url(value)
    if not text.startswith("https://"):
        raise _Invalid(
            f"'{text}' is not an https:// URL; give the meeting's secure address (https://...)"
        )
    return text


def _status(value: Any) -> str:
    text = _text(value)
    if text not in EVENT_STATUSES:
        hint = difflib.get_close_matches(text.lower(), EVENT_STATUSES, n=1)
        known = f"did you mean '{hint[0]}'?" if hint else "use " + ", ".join(EVENT_STATUSES)
        raise _Invalid(f"'{text}' is not an event status; {known}")
    return text


def iter_months(items: tuple[Item, ...], tz: tzinfo) -> Iterator[tuple[int, int]]:
    """Yield each (year, month) that has items, in the publication's time zone, newest first."""
    seen = sorted({(i.date.astimezone(tz).year, i.date.astimezone(tz).month) for i in items})
    yield from reversed(seen)
