"""The subscriber store: one row per address, what the person chose, and the history of changes.

A row holds an address (compared case-insensitively: the key is the address lower-cased), the name,
the status, the categories the digest is cut to, where the row came from (`source`), whether the
university's directory lists the address now, a pause, and the consent record (when and how the
person subscribed, and confirmed). Every change to a row is an event: its time, who made it (the
person, a staff member, an import) and each field's old and new value, so `replay` rebuilds the
row from its history alone.

The rules live here as plain functions from rows to changes (`import_directory`, `sign_up`,
`confirm`, `choose`, `unsubscribe`, ...), so a dry run computes exactly what a real run writes.
`Store` is the only code that speaks SQL to these tables; it works inside the ledger's database and
transactions. The SQL is kept to what SQLite and PostgreSQL both read.

Bounces and complaints (schema 5, `bounces`) are recorded once per report and address;
`bounced` is their rule: a hard bounce or a complaint ends a row at once, soft bounces after a
limit within a window. Only staff, with a reason, bring such a row back (`resubscribe`).

Who receives a digest (`receives`): an active row, not paused, with a reason to be on the list: the
directory lists it, or the person (or staff) subscribed it. Ending a directory membership changes
nothing else, so a person who signed up themselves keeps the digest after leaving the directory.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from digest.errors import DigestError
from digest.send.database import again_if_lost

if TYPE_CHECKING:
    from digest.send.ledger import Ledger
    from digest.send.subscribers import Subscriber, SubscriberList


class SubscriberStatus(StrEnum):
    """Where a subscription stands; the value is what the database holds."""

    PENDING = "pending"  # signed up, not confirmed yet
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class Source(StrEnum):
    """Who first put an address on the list; the value is what the database holds."""

    DIRECTORY = "directory"  # the directory import (`subscribers.csv`)
    SIGNUP = "signup"  # the person, through the sign-up form
    STAFF = "staff"  # a staff member, by hand


# Statuses no import, and no staff `add`, ever undoes: only the person (or staff with a reason).
ENDED = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED,
                   SubscriberStatus.COMPLAINED})  # fmt: skip
IMPORT = "import"  # the actor of a directory import: "import:subscribers.csv"
# Statuses the bounce rules set: only staff, with a reason, undo them (`resubscribe`).
BOUNCE_ENDED = frozenset({SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})
BOUNCE = "bounce"  # the actor of a bounce rule: "bounce:<report id>"

# Version 3 of the state database: the store's two tables. The one-click suppressions of earlier
# versions become unsubscribed rows (carried over with their time and source as the first event;
# replay takes a missing `email` to be the address itself), and their table goes: one record of who
# unsubscribed. One step, self-contained: a new file runs it too, after version 2's tables.
SCHEMA_3 = (
    """CREATE TABLE subscribers (
    address TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    name TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'active', 'unsubscribed', 'bounced', 'complained')),
    categories TEXT,
    own_categories INTEGER NOT NULL DEFAULT 0 CHECK (own_categories IN (0, 1)),
    source TEXT NOT NULL CHECK (source IN ('directory', 'signup', 'staff')),
    in_directory INTEGER NOT NULL DEFAULT 0 CHECK (in_directory IN (0, 1)),
    paused_until TEXT,
    subscribed_at TEXT,
    subscribed_via TEXT,
    confirmed_at TEXT,
    confirmed_via TEXT,
    updated_at TEXT NOT NULL
)""",
    """CREATE TABLE subscriber_events (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    changes TEXT NOT NULL
)""",
    "CREATE INDEX subscriber_events_by_address ON subscriber_events (address, id)",
    """INSERT INTO subscribers (address, email, status, source, in_directory, subscribed_via,
        updated_at)
    SELECT address, address, 'unsubscribed', 'directory', 0, 'before the subscriber store', at
    FROM suppressions""",
    """INSERT INTO subscriber_events (address, at, actor, action, changes)
    SELECT address, at, source, 'unsubscribed',
        '{"status": [null, "unsubscribed"], "source": [null, "directory"], '
        || '"subscribed_via": [null, "before the subscriber store"]}'
    FROM suppressions ORDER BY at, address""",
    "DROP TABLE suppressions",
)

# Version 5 of the state database: the bounces and complaints `digest bounces` read, one row per
# (report, address), so reading the same mailbox twice adds nothing. `month` is the month whose
# delivery the report is about (NULL: it names the subscriber but no month we can tie it to, and
# counts for nobody's rates); the month's ledger row is the delivery (month, address). `matched`
# says how the report was tied to the address ("verp", "recipient", "message-id").
# Self-contained, IF NOT EXISTS: the step can be renumbered beside other steps at a merge.
SCHEMA_5 = (
    """CREATE TABLE IF NOT EXISTS bounces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id TEXT NOT NULL,
    address TEXT NOT NULL,
    month TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
    status TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    arrived TEXT NOT NULL,
    matched TEXT NOT NULL DEFAULT '',
    UNIQUE (report_id, address)
)""",
    "CREATE INDEX IF NOT EXISTS bounces_by_address ON bounces (address, arrived)",
    "CREATE INDEX IF NOT EXISTS bounces_by_month ON bounces (month, kind)",
)

_COLUMNS = (
    "address, email, name, status, categories, own_categories, source, in_directory, "
    "paused_until, subscribed_at, subscribed_via, confirmed_at, confirmed_via, updated_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM subscribers"  # noqa: S608 -- constants
_COLUMN_NAMES = tuple(_COLUMNS.split(", "))
_UPDATE = (
    "UPDATE subscribers SET email = ?, name = ?, status = ?, categories = ?, own_categories = ?, "
    "source = ?, in_directory = ?, paused_until = ?, subscribed_at = ?, subscribed_via = ?, "
    "confirmed_at = ?, confirmed_via = ?, updated_at = ? WHERE address = ?"
)
_EVENT_COLUMNS = ("address", "at", "actor", "action", "changes")


def stamp(moment: datetime) -> str:
    """Return how the store writes a moment: as the ledger does (UTC, to the second)."""
    from digest.send.ledger import stamp as ledger_stamp

    return ledger_stamp(moment)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One address's row: what the store knows and what the person chose."""

    key: str  # the address lower-cased: one row per person
    email: str  # as written: what the digest is sent to
    name: str | None = None
    status: SubscriberStatus = SubscriberStatus.ACTIVE
    categories: frozenset[str] | None = None  # None: every category
    own_categories: bool = False  # the person chose them: no import changes them
    source: Source = Source.DIRECTORY
    in_directory: bool = False
    paused_until: str | None = None  # UTC stamp; nothing is sent before it
    subscribed_at: str | None = None
    subscribed_via: str | None = None
    confirmed_at: str | None = None
    confirmed_via: str | None = None
    updated_at: str = ""

    @property
    def listed(self) -> bool:
        """Return whether the address is on the list: active, and the directory lists it or
        the person (or staff) subscribed it."""
        if self.status is not SubscriberStatus.ACTIVE:
            return False
        # The directory put it here and no longer lists it: nobody else asked for it.
        return self.in_directory or self.source is not Source.DIRECTORY

    def receives(self, now: datetime) -> bool:
        """Return whether a digest enrolled at `now` goes to this address: listed, not paused."""
        return self.receives_at(stamp(now))

    def receives_at(self, at: str) -> bool:
        """Return `receives` at the moment the store writes as `at` (see `stamp`)."""
        return self.listed and (self.paused_until is None or self.paused_until <= at)

    def as_subscriber(self) -> Subscriber:
        """Return the recipient a send enrols."""
        from digest.send.subscribers import Subscriber

        return Subscriber(self.email, self.name, self.categories, 0)


@dataclass(frozen=True, slots=True)
class Change:
    """One row's change: what it was (None: new), what it becomes, why and by whom."""

    before: Subscription | None
    after: Subscription
    action: str
    actor: str

    def diff(self) -> dict[str, list[Any]]:
        """Return each field that changes, as [old, new] in the form the database holds."""
        return _diff(None if self.before is None else _record(self.before), _record(self.after))


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a row's history."""

    at: str
    actor: str
    action: str
    changes: dict[str, list[Any]]


def _categories_text(categories: frozenset[str] | None) -> str | None:
    return None if categories is None else ";".join(sorted(categories))


def _categories(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(slug for slug in text.split(";") if slug)


def _record(row: Subscription) -> tuple[Any, ...]:
    """Return the row's fields as the database holds them (text, integers, NULL), in the order
    of `_fields()` (which is `_COLUMNS`'s): one tuple, made without a loop, since an import
    makes one for each of its rows."""
    return (
        row.key, row.email, row.name, str(row.status), _categories_text(row.categories),
        int(row.own_categories), str(row.source), int(row.in_directory), row.paused_until,
        row.subscribed_at, row.subscribed_via, row.confirmed_at, row.confirmed_via,
        row.updated_at,
    )  # fmt: skip


def _values(row: Subscription) -> dict[str, Any]:
    """Return the row's fields by name as the database holds them."""
    return dict(zip(_fields(), _record(row), strict=True))


@functools.cache
def _fields() -> tuple[str, ...]:
    """Return the names of a row's fields (read once: an import reads them twice a row)."""
    return tuple(item.name for item in fields(Subscription))


@functools.cache
def _diffed() -> tuple[tuple[int, str], ...]:
    """Return the (place, name) of each field an event records: all but the key and the time."""
    return tuple((i, n) for i, n in enumerate(_fields()) if n not in ("key", "updated_at"))


def _diff(old: tuple[Any, ...] | None, new: tuple[Any, ...]) -> dict[str, list[Any]]:
    """Return each field that differs between two `_record`s, as [old, new]; from nothing
    (`old` None), each field that is set (neither NULL nor 0)."""
    if old is None:
        return {name: [None, new[i]] for i, name in _diffed() if new[i] is not None and new[i] != 0}
    return {name: [old[i], new[i]] for i, name in _diffed() if old[i] != new[i]}


def _row(values: tuple[Any, ...]) -> Subscription:
    key, email, name, status, categories, own, source, listed, *rest = values
    return Subscription(
        key, email, name, SubscriberStatus(status), _categories(categories), bool(own),
        Source(source), bool(listed), *rest,
    )  # fmt: skip


def replay(key: str, events: Iterable[Event]) -> Subscription | None:
    """Return the row its history describes (None: no history): the store's rows must match."""
    values: dict[str, Any] = {}
    at = ""
    for event in events:
        values.update({name: new for name, (_, new) in event.changes.items()})
        at = event.at
    if not at:
        return None
    columns = _values(Subscription(key, key, updated_at=at)) | values | {"key": key}
    return _row(tuple(columns[name] for name in _names()))


class Store:
    """The subscriber store in the ledger's database: read rows, apply changes, read history."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def rows(self) -> dict[str, Subscription]:
        """Return every row, by key, in address order."""
        return {row.key: row for row in map(_row, self.ledger.query(f"{_SELECT} ORDER BY address"))}

    def get(self, address: str) -> Subscription | None:
        """Return the row of `address` (any letter case), or None."""
        found = self.ledger.query(f"{_SELECT} WHERE address = ?", (address.strip().lower(),))
        return _row(found[0]) if found else None

    @again_if_lost
    def change(
        self, decide: Callable[[dict[str, Subscription]], list[Change]], now: datetime
    ) -> list[Change]:
        """Apply what `decide` makes of the current rows, in one transaction; return the changes.

        The rows are read under the write lock, so nothing changes between deciding and writing.
        """
        with self.ledger.transaction() as db:
            rows = {row.key: row for row in map(_row, db.execute(_SELECT).fetchall())}
            return _write(db, decide(rows), stamp(now))

    def history(self, address: str) -> list[Event]:
        """Return every change to `address`'s row, oldest first."""
        found = self.ledger.query(
            "SELECT at, actor, action, changes FROM subscriber_events WHERE address = ? "
            "ORDER BY id",
            (address.strip().lower(),),
        )
        return [
            Event(at, actor, action, json.loads(changes)) for at, actor, action, changes in found
        ]

    def suppressed(self) -> set[str]:
        """Return every address that must get no digest: unsubscribed, bounced or complained."""
        found = self.ledger.query(
            "SELECT address FROM subscribers WHERE status IN (?, ?, ?)", tuple(sorted(ENDED))
        )
        return {row[0] for row in found}

    def ended(self) -> dict[str, int]:
        """Return how many addresses are off the list for good, by status (unsubscribed, bounced,
        complained); statuses with none are left out."""
        found = self.ledger.query(
            "SELECT status, COUNT(*) FROM subscribers WHERE status IN (?, ?, ?) GROUP BY status",
            tuple(sorted(ENDED)),
        )
        return {str(status): int(count) for status, count in sorted(found)}

    # -- bounces and complaints (schema 5) ------------------------------------------------------

    @again_if_lost
    def record_bounce(self, report: Bounce, rules: BounceRules, now: datetime) -> Recorded:
        """Record one bounce or complaint and apply the rules to its subscriber, in one transaction.

        A report already recorded for that address (the same `report_id`) changes nothing: reading
        the same mailbox twice is harmless. `report.arrived` empty: recorded as arriving `now`.
        """
        at = stamp(now)
        report = report if report.arrived else replace(report, arrived=at)
        with self.ledger.transaction() as db:
            cursor = db.execute(_BOUNCE_INSERT, _bounce_values(report))
            if cursor.rowcount == 0:
                return Recorded(report, new=False, changes=())
            changes = _bounce_decision(
                lambda sql, values: db.execute(sql, tuple(values)).fetchall(), report, rules, ()
            )
            return Recorded(report, new=True, changes=tuple(_write(db, changes, at)))

    def plan_bounce(
        self, report: Bounce, rules: BounceRules, now: datetime, pending: Iterable[Bounce] = ()
    ) -> Recorded:
        """Return what `record_bounce` would do, writing nothing (a dry run).

        `pending`: bounces the same dry run would have recorded before this one (they count
        towards the soft limit as if written).
        """
        report = report if report.arrived else replace(report, arrived=stamp(now))
        known = self.ledger.query(
            "SELECT 1 FROM bounces WHERE report_id = ? AND address = ?",
            (report.report_id, report.address),
        )
        if known:
            return Recorded(report, new=False, changes=())
        changes = _bounce_decision(self.ledger.query, report, rules, tuple(pending))
        return Recorded(report, new=True, changes=tuple(changes))

    def recent_bounces(self, limit: int = 50) -> list[Bounce]:
        """Return the newest bounces and complaints of every subscriber, newest first."""
        found = self.ledger.query(f"{_BOUNCE_SELECT} ORDER BY id DESC LIMIT ?", (limit,))
        return [_bounce(row) for row in found]

    def bounces_of(self, address: str) -> list[Bounce]:
        """Return every bounce and complaint recorded for `address` (any letter case), oldest
        first."""
        found = self.ledger.query(
            f"{_BOUNCE_SELECT} WHERE address = ? ORDER BY id", (address.strip().lower(),)
        )
        return [_bounce(row) for row in found]

    def bounce_counts(self) -> dict[str, dict[BounceKind, int]]:
        """Return, by month (newest first), how many addresses bounced (hard, soft) or
        complained about that month's digest. Each address counts once a kind and month; a
        bounce not tied to a month counts for none."""
        found = self.ledger.query(
            "SELECT month, kind, COUNT(DISTINCT address) FROM bounces WHERE month IS NOT NULL "
            "GROUP BY month, kind ORDER BY month DESC"
        )
        counts: dict[str, dict[BounceKind, int]] = {}
        for month, kind, count in found:
            counts.setdefault(month, dict.fromkeys(BounceKind, 0))[BounceKind(kind)] = count
        return counts

    def bounced_by_month(self) -> dict[str, int]:
        """Return, by month, how many addresses a bounce (hard or soft) named: each address once,
        however many reports came back for it."""
        found = self.ledger.query(
            "SELECT month, COUNT(DISTINCT address) FROM bounces WHERE month IS NOT NULL "
            "AND kind IN ('hard', 'soft') GROUP BY month"
        )
        return {month: int(count) for month, count in found}


def _write(db: Any, decided: Iterable[Change], at: str) -> list[Change]:
    """Write `decided` (rows and their history) through the open transaction `db`; return the
    changes that change something."""
    changes: list[Change] = []
    inserts, updates, events = [], [], []
    for change in decided:
        # Each row's values are made once, for its diff and its statement alike.
        old = None if change.before is None else _record(change.before)
        new = _record(change.after)
        diff = _diff(old, new)
        if old is not None and not diff:
            continue
        written = (*new[:-1], at)  # updated_at is the last column
        if old is None:
            inserts.append(written)
        else:
            updates.append((*written[1:], written[0]))
        events.append((written[0], at, change.actor, change.action, json.dumps(diff)))
        changes.append(change)
    # Each row is one address, changed once: one statement for all the rows of a kind (new
    # rows and the history by COPY on PostgreSQL: a first import writes thousands of each).
    db.insert("subscribers", _COLUMN_NAMES, inserts)
    db.executemany(_UPDATE, updates)
    db.insert("subscriber_events", _EVENT_COLUMNS, events)
    return changes


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(
        "key" if name == "address" else name for name in (n.strip() for n in _COLUMNS.split(","))
    )


# -- the rules: rows in, changes out --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """What a directory import does: by address, the rows it adds, updates and ends, and keeps."""

    file: str
    changes: tuple[Change, ...]
    kept: tuple[Subscription, ...] = ()  # listed, but unsubscribed, bounced or complained: kept so
    unchanged: int = 0  # listed and already as the file says
    after: Mapping[str, Subscription] = field(default_factory=dict)

    def of(self, action: str) -> list[Change]:
        """Return the changes of one kind: "added", "updated" or "ended"."""
        return [change for change in self.changes if change.action == action]

    @property
    def nothing(self) -> bool:
        """Return whether the import changes nothing."""
        return not self.changes


def import_directory(
    rows: Mapping[str, Subscription], listed: SubscriberList, file: str, now: datetime
) -> ImportPlan:
    """Return what importing the directory `listed` (read from `file`) does to `rows`.

    A new address is added, active; a listed one is marked in the directory, its name and address
    as the directory writes them (for rows the directory added) and its categories as listed
    (unless the person chose their own); an address no longer listed only leaves the directory.
    Nobody's status is changed, except that a pending sign-up the directory lists becomes active.
    """
    actor = f"{IMPORT}:{file}"
    at, via = stamp(now), f"directory import of {file}"
    changes: list[Change] = []
    kept: list[Subscription] = []
    unchanged = 0
    seen: set[str] = set()
    for person in listed.subscribers:
        seen.add(person.key)
        before = rows.get(person.key)
        if before is None:
            after = Subscription(
                person.key, person.email, person.name, categories=person.categories,
                in_directory=True, subscribed_at=at, subscribed_via=via,
            )  # fmt: skip
            changes.append(Change(None, after, "added", actor))
            continue
        after = _listed(before, person)
        if before.status in ENDED:
            kept.append(before)
        if after == before:
            unchanged += 1
        else:
            changes.append(Change(before, after, "updated", actor))
    for key, before in rows.items():
        if before.in_directory and key not in seen:
            changes.append(Change(before, replace(before, in_directory=False), "ended", actor))
    after_rows = dict(rows) | {change.after.key: change.after for change in changes}
    return ImportPlan(file, tuple(changes), tuple(kept), unchanged, after_rows)


def _listed(before: Subscription, person: Subscriber) -> Subscription:
    """Return `before` as the directory's row for it says, keeping the person's own choices.

    Only what differs is replaced: an import of an unchanged directory copies no row.
    """
    changed: dict[str, Any] = {}
    if not before.in_directory:
        changed["in_directory"] = True
    if before.source is Source.DIRECTORY and (before.email, before.name) != (
        person.email,
        person.name,
    ):
        changed.update(email=person.email, name=person.name)
    if not before.own_categories and before.categories != person.categories:
        changed["categories"] = person.categories
    if before.status is SubscriberStatus.PENDING:
        changed["status"] = SubscriberStatus.ACTIVE
    return replace(before, **changed) if changed else before


class StoreError(DigestError):
    """A change the store refuses: it would override a person's choice, or names nobody."""


def sign_up(
    rows: Mapping[str, Subscription],
    email: str,
    name: str | None,
    categories: frozenset[str] | None,
    now: datetime,
    via: str,
) -> list[Change]:
    """Return the change of a sign-up: a new address is pending; a known one is left as it is.

    The choices travel in the confirmation link instead, so a sign-up in someone else's name
    changes nobody's row.
    """
    key = email.lower()
    if key in rows:
        return []
    row = Subscription(
        key, email, name, SubscriberStatus.PENDING, categories, categories is not None,
        Source.SIGNUP, subscribed_at=stamp(now), subscribed_via=via,
    )  # fmt: skip
    return [Change(None, row, "signed up", "subscriber")]


def confirm(
    rows: Mapping[str, Subscription],
    email: str,
    name: str | None,
    categories: frozenset[str] | None,
    now: datetime,
    via: str,
) -> list[Change]:
    """Return the change of a confirmed sign-up: active, the person's own, consent recorded."""
    key = email.lower()
    before = rows.get(key)
    base = before or Subscription(key, email, subscribed_at=stamp(now), subscribed_via=via)
    after = replace(
        base, name=name or base.name, status=SubscriberStatus.ACTIVE, source=Source.SIGNUP,
        paused_until=None, confirmed_at=stamp(now), confirmed_via=via,
    )  # fmt: skip
    if categories is not None:
        after = replace(after, categories=categories, own_categories=True)
    return [Change(before, after, "confirmed", "subscriber")]


def choose(
    rows: Mapping[str, Subscription],
    address: str,
    actor: str,
    *,
    categories: frozenset[str] | None = None,
    paused_until: datetime | None = None,
    every: bool = False,
    resume: bool = False,
) -> list[Change]:
    """Return the change of a person's choice: categories (`every`: all of them), a pause, or
    the end of one (`resume`)."""
    before = _known(rows, address)
    after = before
    if categories is not None or every:
        after = replace(after, categories=None if every else categories, own_categories=True)
    if paused_until is not None:
        after = replace(after, paused_until=stamp(paused_until))
    if resume:
        after = replace(after, paused_until=None)
    return [Change(before, after, "chose", actor)]


def unsubscribe(rows: Mapping[str, Subscription], address: str, actor: str) -> list[Change]:
    """Return the change of an unsubscribe; nothing for an address already off the list.

    An address the store does not know yet (a test copy's link, say) gets a row that says so, so
    no later import adds it.
    """
    key = address.strip().lower()
    before = rows.get(key)
    if before is not None and before.status in ENDED:
        return []
    base = before or Subscription(key, key, subscribed_via="unsubscribed before it was listed")
    after = replace(base, status=SubscriberStatus.UNSUBSCRIBED, paused_until=None)
    return [Change(before, after, "unsubscribed", actor)]


def resubscribe(
    rows: Mapping[str, Subscription], address: str, actor: str, reason: str | None = None
) -> list[Change]:
    """Return the change of a person coming back: active again, their choices as they were.

    A bounced or complained address comes back only with a `reason` (staff's: the mailbox works
    again, the person asked), which the history keeps in the change's action.
    """
    before = _known(rows, address)
    if before.status is SubscriberStatus.ACTIVE:
        return []
    why = " ".join((reason or "").split())
    if before.status in BOUNCE_ENDED and not why:
        raise StoreError(
            f"{before.email} is {before.status} since {before.updated_at}: only staff can put "
            "it back on the list, with a reason (say, 'mailbox works again, checked by phone')"
        )
    source = before.source
    if source is Source.DIRECTORY and not before.in_directory:
        source = Source.SIGNUP  # their own choice now, not the directory's
    after = replace(before, status=SubscriberStatus.ACTIVE, source=source)
    action = f"resubscribed by staff: {why}" if why else "resubscribed"
    return [Change(before, after, action, actor)]


def add(
    rows: Mapping[str, Subscription],
    email: str,
    name: str | None,
    categories: frozenset[str] | None,
    staff: str,
    now: datetime,
) -> list[Change]:
    """Return the change of staff adding an address; refuse one the person took off the list."""
    key = email.lower()
    before = rows.get(key)
    actor = f"staff:{staff}"
    if before is not None and before.status in ENDED:
        raise StoreError(
            f"{email} is {before.status} since {before.updated_at}; only they can subscribe "
            "again (from a digest's preferences link, or the sign-up form)"
        )
    if before is not None and before.listed:
        return []
    base = before or Subscription(
        key, email, subscribed_at=stamp(now), subscribed_via=f"added by {staff}"
    )
    after = replace(
        base, name=name or base.name, status=SubscriberStatus.ACTIVE, source=Source.STAFF
    )
    if categories is not None:
        after = replace(after, categories=categories, own_categories=True)
    return [Change(before, after, "added", actor)]


def _known(rows: Mapping[str, Subscription], address: str) -> Subscription:
    key = address.strip().lower()
    if key not in rows:
        raise StoreError(
            f"{address} is not in the subscriber store; `digest subscribers list` shows who is"
        )
    return rows[key]


def readers(
    rows: Mapping[str, Subscription], now: datetime, first: Iterable[str] = ()
) -> list[Subscriber]:
    """Return who a digest enrolled at `now` goes to: the keys in `first` in their order, then
    the rest by address."""
    order = {key: place for place, key in enumerate(first)}
    at = stamp(now)
    chosen = [row for row in rows.values() if row.receives_at(at)]
    chosen.sort(key=lambda row: (order.get(row.key, len(order)), row.key))
    return [row.as_subscriber() for row in chosen]


# -- bounces and complaints: the rules -----------------------------------------------------------


class BounceKind(StrEnum):
    """What a report said of one address; the value is what the database holds."""

    HARD = "hard"  # permanent failure (5.x.x): bounced at once
    SOFT = "soft"  # transient failure (4.x.x): bounced after `soft_limit` in `soft_days`
    COMPLAINT = "complaint"  # a feedback-loop report (the person marked it as spam)


@dataclass(frozen=True, slots=True)
class BounceRules:
    """The rules of `newsletter.bounces`: how many soft bounces, within how many days, end it."""

    soft_limit: int = 3
    soft_days: int = 30


@dataclass(frozen=True, slots=True)
class Bounce:
    """One bounce or complaint tied to a subscriber, as `bounces` holds it."""

    report_id: str  # the report's own key (its Message-ID, else a hash of its bytes)
    address: str  # the subscriber's key (lower-cased)
    month: str | None  # the month whose digest bounced; None: cannot be tied to one
    kind: BounceKind
    status: str = ""  # the enhanced status code ("5.1.1"), or ""
    detail: str = ""  # the diagnostic, one plain line
    arrived: str = ""  # when `digest bounces` read it (UTC stamp)
    matched: str = ""  # how it was tied to the address: "verp", "recipient", "message-id"
    id: int = 0  # its number in the table (0 until recorded)

    @property
    def actor(self) -> str:
        """Return the actor the subscriber's history names for this report's change."""
        return f"{BOUNCE}:{self.report_id}"


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one bounce did: whether it was new, and the change to the subscriber."""

    bounce: Bounce
    new: bool  # False: this report was recorded for this address before; nothing changed
    changes: tuple[Change, ...]


_BOUNCE_COLUMNS = "report_id, address, month, kind, status, detail, arrived, matched"
_BOUNCE_SELECT = f"SELECT {_BOUNCE_COLUMNS}, id FROM bounces"  # noqa: S608 -- constants
_BOUNCE_INSERT = (
    f"INSERT INTO bounces ({_BOUNCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
    "ON CONFLICT (report_id, address) DO NOTHING"
)


def _bounce_values(report: Bounce) -> tuple[Any, ...]:
    return (
        report.report_id, report.address, report.month, str(report.kind), report.status,
        report.detail, report.arrived, report.matched,
    )  # fmt: skip


def _bounce(row: tuple[Any, ...]) -> Bounce:
    report_id, address, month, kind, status, detail, arrived, matched, number = row
    return Bounce(report_id, address, month, BounceKind(kind), status, detail, arrived, matched,
                  number)  # fmt: skip


def _bounce_decision(
    select: Callable[[str, Iterable[Any]], list[Any]],
    report: Bounce,
    rules: BounceRules,
    pending: tuple[Bounce, ...],
) -> list[Change]:
    """Read what the rules need about `report`'s subscriber through `select`; return the change."""
    found = select(f"{_SELECT} WHERE address = ?", (report.address,))
    rows = {report.address: _row(found[0])} if found else {}
    since = _back_since(select, report.address)
    earlier = [
        _bounce(row)
        for row in select(
            f"{_BOUNCE_SELECT} WHERE address = ? AND kind = 'soft' AND arrived >= ?",
            (report.address, since),
        )
    ]
    return bounced(rows, report, [*earlier, *pending], rules)


def _back_since(select: Callable[[str, Iterable[Any]], list[Any]], key: str) -> str:
    """Return when `key` last became active (its soft bounces before then are forgiven), or ""."""
    events = select(
        "SELECT at, changes FROM subscriber_events WHERE address = ? ORDER BY id DESC", (key,)
    )
    for at, changes in events:
        status = json.loads(changes).get("status")
        if status is not None and status[1] == SubscriberStatus.ACTIVE:
            return str(at)
    return ""


def bounced(
    rows: Mapping[str, Subscription],
    report: Bounce,
    earlier: Iterable[Bounce],
    rules: BounceRules,
) -> list[Change]:
    """Return the change one new bounce or complaint makes to its subscriber's row.

    A hard bounce makes the row `bounced` and a complaint `complained`, at once; a soft bounce
    makes it `bounced` when it is the `soft_limit`-th of `earlier` (the address's soft bounces
    since it last became active) within `soft_days` of it. A row already off the list stays as it
    is; an address the store does not know gets a row that says so, so no later import adds it.
    """
    key = report.address.strip().lower()
    before = rows.get(key)
    if before is not None and before.status in ENDED:
        return []
    if report.kind is BounceKind.SOFT:
        since = stamp(datetime.fromisoformat(report.arrived) - timedelta(days=rules.soft_days))
        count = 1 + sum(
            1
            for other in earlier
            if other.address == key and other.kind is BounceKind.SOFT
            and other.report_id != report.report_id and since <= other.arrived <= report.arrived
        )  # fmt: skip
        if count < rules.soft_limit:
            return []
        status = SubscriberStatus.BOUNCED
        action = f"bounced: {count} soft bounces in {rules.soft_days} days"
    elif report.kind is BounceKind.HARD:
        status = SubscriberStatus.BOUNCED
        action = f"bounced: {report.status or 'permanent failure'}"
    else:
        status = SubscriberStatus.COMPLAINED
        action = "complained: marked the digest as spam"
    if report.detail:
        action += f" ({report.detail})"
    base = before or Subscription(key, key, subscribed_via="bounced before it was listed")
    after = replace(base, status=status, paused_until=None)
    return [Change(before, after, action, report.actor)]
