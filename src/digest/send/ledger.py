"""The delivery ledger: what was sent to whom, kept so that no crash loses or repeats it.

The state database is an SQLite file or, with DIGEST_DATABASE_URL, a PostgreSQL database
(`digest.send.database`); the SQL here is the same for both.

Every (month, recipient) has one row that moves pending -> sending -> sent | failed | deferred.
`sending` is committed before the message's DATA goes out and `sent` only after the server accepted
it, so after a crash the rows still `sending` are exactly the messages whose fate is unknown.

A row is one copy of the month's digest for that recipient: copy 0 first, and one more for each
deliberate resend (`start_over`), which keeps the copies before it in `copies`, Message-ID and all.
Every attempt at one copy carries the same Message-ID; a new copy carries a new one.

Only what an SMTP server accepted is recorded here. A rehearsal (the outbox) runs against a
throwaway ledger in memory (`Ledger.scratch`) and leaves nothing here but its `runs` row.

An SQLite database runs in WAL mode with synchronous=NORMAL: a commit survives the death of the
process (kill -9 included) without an fsync per message. A power cut can lose the last few
commits; the recipients concerned are then sent again, with the same Message-ID.

Another program holding the database locked (an sqlite3 shell with a transaction open, say; on
PostgreSQL, a session holding the write lock or rows) is waited for, `busy_timeout` seconds,
with word to `on_busy` after the first; then LedgerBusyError.
A write refused for a lock changed nothing, so it is safe to try again or to stop there.

On PostgreSQL a lost connection (a restart, a failover) is made again by `send/database.py`,
which also takes the month's send lock again; a write the server rolled back is made again
(`again_if_lost`), and a commit whose answer was lost is looked up, never guessed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from digest.errors import DeliveryError, LedgerBusyError, SendBusyError
from digest.send import migrations
from digest.send.database import (
    POSTGRESQL,
    RECONNECT_FOR,
    Database,
    PostgreSQLDatabase,
    again_if_lost,
    connect,
)
from digest.send.migrations import Migration
from digest.send.store import SCHEMA_3 as _STORE_SCHEMA
from digest.send.store import SCHEMA_5 as _BOUNCES_SCHEMA

T = TypeVar("T")
# How long SQLite itself waits for a lock before the ledger hears of it, says so, and tries again.
_SLICE = 0.5

# What SendLock.acquire writes into the lock file: "pid 123 on host, holder, since ...".
_HOLDER = re.compile(r"pid (\d+) on ([^,]+),")


class Status(StrEnum):
    """Where one copy for one recipient stands; the value is what the database holds."""

    PENDING = "pending"
    SENDING = "sending"  # committed before DATA goes out: after a crash, perhaps delivered
    SENT = "sent"  # the server accepted it
    FAILED = "failed"  # refused for good (5xx)
    DEFERRED = "deferred"  # refused for now (4xx, no connection): the next run tries again


class RunKind(StrEnum):
    """What a send was: a first send (or the rest of one), a deliberate resend, or a rehearsal."""

    SEND = "send"
    RESEND = "resend"
    REHEARSAL = "rehearsal"  # written to outbox/: nothing emailed, nobody recorded as sent


class Decision(StrEnum):
    """What the scheduler decided for a month; the value is how the log says it.

    The database holds the member's name in lower case (`kind`), and `detail` apart.
    """

    SENT = "sent"
    HELD = "held"  # nothing could go: the relay's daily limit had no room left
    REHEARSED = "rehearsed"
    STOPPED = "stopped"
    FAILED = "failed"
    NO_ITEMS = "skipped: no items"
    NO_READERS = "skipped: no readers"
    ALREADY_SENT = "skipped: already sent"
    BUSY = "skipped: another send is running"

    @property
    def kind(self) -> str:
        """Return the name the ledger stores."""
        return self.name.lower()


# Decisions after which a month needs nothing more, whatever the deliveries say.
_SETTLING = (Decision.NO_ITEMS, Decision.NO_READERS)

# The tables as version 1 made them, the starting point of every upgrade. Each statement is IF NOT
# EXISTS: a version-1 file made before a table was added to version 1 does not have it. Never edit
# these: they describe files that exist.
_SCHEMA_1 = (
    """CREATE TABLE IF NOT EXISTS issues (
    month TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    subject TEXT NOT NULL,
    items INTEGER NOT NULL,
    frozen_at TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS renders (
    month TEXT NOT NULL,
    selection TEXT NOT NULL,
    subject TEXT NOT NULL,
    html TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (month, selection)
)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
    month TEXT NOT NULL,
    recipient TEXT NOT NULL,
    address TEXT NOT NULL,
    name TEXT,
    selection TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'deferred')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_code INTEGER,
    last_reply TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (month, recipient)
)""",
    """CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    month TEXT NOT NULL,
    decision TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
)""",
    """CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    month TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    transport TEXT NOT NULL,
    started_by TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    deferred INTEGER NOT NULL DEFAULT 0,
    already INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    source TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS logouts (
    session TEXT PRIMARY KEY,
    until TEXT NOT NULL
)""",
)
_TABLES_1 = {"issues", "renders", "deliveries", "decisions", "runs", "suppressions", "logouts"}

_COPIES = """CREATE TABLE copies (
    month TEXT NOT NULL,
    recipient TEXT NOT NULL,
    copy INTEGER NOT NULL,
    address TEXT NOT NULL,
    message_id TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'deferred')),
    attempts INTEGER NOT NULL,
    last_code INTEGER,
    last_reply TEXT,
    updated_at TEXT NOT NULL,
    replaced_at TEXT NOT NULL,
    PRIMARY KEY (month, recipient, copy)
)"""

_DECISIONS_2 = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    month TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('sent', 'held', 'rehearsed', 'stopped', 'failed',
        'no_items', 'no_readers', 'already_sent', 'busy')),
    detail TEXT NOT NULL DEFAULT ''
)"""

# The months whose every run wrote to outbox/: nobody was emailed them.
_ONLY_REHEARSED = (
    "SELECT month FROM runs GROUP BY month "
    "HAVING MIN(CASE WHEN kind = 'rehearsal' THEN 1 ELSE 0 END) = 1"
)

# From version 1 to 2, in one transaction: copies of a resend (each with its own Message-ID) and
# the earlier ones kept; runs say whether they were rehearsals; decisions as a kind and a detail.
# Version 1 recorded every message written to outbox/ as sent: a month only ever written there is
# un-recorded, so its first real send reaches everyone (its runs stay, marked as rehearsals).
_UPGRADE_1_TO_2 = (
    "ALTER TABLE issues ADD COLUMN resends INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE deliveries ADD COLUMN copy INTEGER NOT NULL DEFAULT 0 CHECK (copy >= 0)",
    "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'send' "
    "CHECK (kind IN ('send', 'resend', 'rehearsal'))",
    # Version 1 sent through SMTP (smtp://, smtps://) or wrote to a folder ("outbox/").
    "UPDATE runs SET kind = 'rehearsal' "
    "WHERE transport NOT LIKE 'smtp://%' AND transport NOT LIKE 'smtps://%'",
    f"DELETE FROM deliveries WHERE month IN ({_ONLY_REHEARSED})",  # noqa: S608 -- constants
    f"DELETE FROM renders WHERE month IN ({_ONLY_REHEARSED})",  # noqa: S608
    f"DELETE FROM issues WHERE month IN ({_ONLY_REHEARSED})",  # noqa: S608
    _COPIES,
    _DECISIONS_2.format(name="decisions_2"),
    # Version 1 wrote exactly these texts; any other (edited by hand) is kept whole in `detail`.
    """INSERT INTO decisions_2 (id, at, month, kind, detail)
    SELECT id, at, month,
        CASE decision
            WHEN 'sent' THEN 'sent'
            WHEN 'stopped' THEN 'stopped'
            WHEN 'failed' THEN 'failed'
            WHEN 'skipped: no items' THEN 'no_items'
            WHEN 'skipped: no readers' THEN 'no_readers'
            WHEN 'skipped: already sent' THEN 'already_sent'
            WHEN 'skipped: another send is running' THEN 'busy'
            ELSE 'failed'
        END,
        CASE WHEN decision IN ('sent', 'stopped', 'failed', 'skipped: no items',
                'skipped: no readers', 'skipped: already sent', 'skipped: another send is running')
            THEN detail
            ELSE decision || CASE WHEN detail = '' THEN '' ELSE ' (' || detail || ')' END
        END
    FROM decisions""",
    "DROP TABLE decisions",
    "ALTER TABLE decisions_2 RENAME TO decisions",
    f"UPDATE decisions SET kind = 'rehearsed' WHERE kind IN ('sent', 'stopped') "  # noqa: S608
    f"AND month IN ({_ONLY_REHEARSED})",
)

# The relay's daily limit: `holds` is a month whose last run stopped at the limit, how many it
# left waiting, and until when. What the relay accepted is not logged apart: a row marked `sent`
# keeps that moment in `updated_at`, and a copy a --resend replaced keeps it in `copies`, so
# `accepted_since` reads both (a log filled by a trigger cost a send an insert per message).
_LIMITS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS holds (
    month TEXT PRIMARY KEY,
    held INTEGER NOT NULL,
    until TEXT NOT NULL
)""",
)

# The console's editor (schema 4): every save of an item, who made it, when, the diff of the
# catalogue, and the item's values before and after as JSON (`before` NULL for a new item).
# Self-contained, IF NOT EXISTS: the step can be renumbered beside other steps at a merge.
_EDITS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS edits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item TEXT NOT NULL,
    staff TEXT NOT NULL,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    diff TEXT NOT NULL,
    before TEXT,
    after TEXT NOT NULL,
    version TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS edits_by_item ON edits (item, id)",
)

# Several senders (schema 6). A row a sender has claimed names it (`claimer`) and says until when
# the claim holds (`lease_until`, a stamp): a claim whose lease has run out (its sender was killed
# or lost its network) is anyone's to take. A row deferred in a send keeps a lease that never runs
# out (DEFERRED_LEASE) until the month's send is opened again: nobody retries it meanwhile.
# `sends` holds each month's shared send: open from its enrolment until none of its rows is left
# to do, and `next_at`, the moment (seconds since the epoch) the shared rate lets the next message
# begin. Self-contained, IF NOT EXISTS where it can be: the step can be renumbered at a merge.
_CLAIMS_COLUMNS = (("deliveries", "claimer", "TEXT"), ("deliveries", "lease_until", "TEXT"))
_CLAIMS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sends (
    month TEXT PRIMARY KEY,
    opened_at TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    closed_at TEXT,
    next_at DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
)

# The migrations, oldest first: version N is what migration N makes of version N-1, and a new,
# empty database runs them all. To change the schema, append one (docs/developers.md says how);
# never edit one that shipped, since databases at its version exist.
MIGRATIONS = (
    # PostgreSQL has no rowid: `deliveries` gets one, numbered as rows are enrolled, so that
    # `ORDER BY rowid` means the same on both engines.
    Migration(
        1,
        "the ledger: issues, renders, deliveries, decisions, runs, suppressions, logouts",
        _SCHEMA_1,
        postgresql=(
            "ALTER TABLE deliveries ADD COLUMN rowid BIGINT GENERATED BY DEFAULT AS IDENTITY",
        ),
    ),
    Migration(
        2,
        "resends (copies), rehearsals, decisions by kind, the daily limit's holds",
        _UPGRADE_1_TO_2 + _LIMITS_SCHEMA,
    ),
    Migration(3, "the subscriber store: subscribers and their history", _STORE_SCHEMA),
    Migration(4, "the editor's history: edits", _EDITS_SCHEMA),
    Migration(5, "bounces and complaints: bounces", _BOUNCES_SCHEMA),
    Migration(
        6,
        "several senders: claims with leases, shared sends",
        _CLAIMS_SCHEMA,
        columns=_CLAIMS_COLUMNS,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


@dataclass(frozen=True, slots=True)
class Edit:
    """One save of an item from the console's editor."""

    id: int
    item: str
    staff: str
    at: str
    action: str
    diff: str
    before: str | None  # the item's values as JSON, None when the save created it
    after: str
    version: str  # the catalogue's SHA-256 after the save


@dataclass(frozen=True, slots=True)
class Frozen:
    """The issue of a month as it was when sending (or the latest resend) began."""

    content_hash: str
    subject: str
    items: int
    frozen_at: str
    resends: int = 0  # how many times --resend began a new copy for everyone


@dataclass(frozen=True, slots=True)
class Render:
    """A frozen rendering for one category selection, with tokens for the personal parts."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the ledger: the current copy of the month's digest for one recipient."""

    month: str
    recipient: str
    address: str
    name: str | None
    selection: str
    status: Status
    attempts: int
    last_code: int | None
    last_reply: str | None
    updated_at: str
    copy: int = 0  # 0 for the first copy; each resend adds one, and a new Message-ID


@dataclass(frozen=True, slots=True)
class Copy:
    """An earlier copy of a month's digest for one recipient, replaced by a resend."""

    month: str
    recipient: str
    copy: int
    address: str
    message_id: str
    status: Status  # where it stood when it was replaced
    attempts: int
    last_code: int | None
    last_reply: str | None
    updated_at: str
    replaced_at: str


@dataclass(frozen=True, slots=True)
class MonthStatus:
    """How far one month's digest has got."""

    month: str
    counts: dict[str, int]  # by Status
    first: str
    last: str


@dataclass(frozen=True, slots=True)
class Run:
    """One send of a month: who started it, through what, and how it ended (if it has)."""

    id: int
    month: str
    started_at: str
    finished_at: str | None
    transport: str
    started_by: str
    sent: int  # for a rehearsal: written to the outbox
    failed: int
    deferred: int
    already: int
    kind: RunKind = RunKind.SEND

    @property
    def rehearsal(self) -> bool:
        """Return whether the run only wrote files: nothing emailed, nothing recorded as sent."""
        return self.kind is RunKind.REHEARSAL


class Decided(NamedTuple):
    """One decision of the scheduler, as `last_decision` returns it."""

    at: str
    month: str
    decision: Decision
    detail: str


class Mark(NamedTuple):
    """A row's new status, for `Ledger.record`; `attempt` counts one more attempt."""

    recipient: str
    status: Status
    attempt: bool = False
    code: int | None = None  # None keeps the last one
    reply: str | None = None


# The last two: a claimer, None or the same again (only rows it holds; any row when None).
_MARK = (
    "UPDATE deliveries SET status = ?, attempts = attempts + ?, "
    "last_code = COALESCE(?, last_code), last_reply = COALESCE(?, last_reply), "
    "updated_at = ? WHERE month = ? AND recipient = ? AND (CAST(? AS TEXT) IS NULL OR claimer = ?)"
)


# Several rows at once: (recipient, status, attempt, code, reply) in VALUES' column1..column5.
_MARKS = (
    "UPDATE deliveries SET status = m.column2, attempts = attempts + CAST(m.column3 AS INTEGER), "
    "last_code = COALESCE(CAST(m.column4 AS INTEGER), last_code), "
    "last_reply = COALESCE(m.column5, last_reply), "
    "updated_at = ?{lease} FROM (VALUES {rows}) AS m WHERE month = ? AND recipient = m.column1"
    "{claimed}"
)
# With a claim: the lease a row keeps (to do: the claim's; deferred: until the send opens again).
_LEASE = (
    ", lease_until = CASE WHEN m.column2 IN ('pending', 'sending') THEN ? "
    "WHEN m.column2 = 'deferred' THEN ? ELSE NULL END"
)
_CLAIMED = " AND claimer = ? RETURNING recipient"

# A deferred row's lease within a send: later than any moment, until `open_send` clears it.
DEFERRED_LEASE = "9999-12-31T23:59:59+00:00"


class Claim(NamedTuple):
    """A sender's claim on rows: who it is (unique among senders) and until when it holds."""

    claimer: str
    until: str  # a stamp


# The rows a claim takes: of the given recipients, those to do that nobody holds, oldest first.
# Both the rows updated and the rows chosen are named by key, (month, recipient IN the list):
# PostgreSQL then finds each by the primary key, where `recipient IN (chosen)` alone it would
# join with a scan of the whole month.
_CLAIM = (
    "UPDATE deliveries SET claimer = ?, lease_until = ? WHERE month = ? "
    "AND recipient IN ({recipients}) AND recipient IN ("
    "SELECT recipient FROM deliveries WHERE month = ? AND recipient IN ({recipients}) "
    "AND status IN ('pending', 'sending', 'deferred') "
    "AND (lease_until IS NULL OR lease_until < ? OR (claimer = ? AND lease_until <> ?)) "
    "ORDER BY rowid LIMIT ?{skip}) "
    "RETURNING month, recipient, address, name, selection, status, attempts, last_code, "
    "last_reply, updated_at, copy"
)
# What the daily limit has taken: accepted in the last 24 hours, and claimed (live) to go now.
_TAKEN = (
    "SELECT (SELECT COUNT(*) FROM ({accepted}) AS accepted) + (SELECT COUNT(*) FROM deliveries "
    "WHERE status IN ('pending', 'sending') AND lease_until >= ?)"
)
# The advisory lock of claims counted against a daily limit (PostgreSQL): "clam".
_CLAIM_LOCK = 0x636C616D

# The rows an enrolment adds, for the length of its transaction. (The INSERT ... SELECT from it
# says WHERE true: SQLite reads an ON CONFLICT after a SELECT only after a WHERE.)
_ENROLLING = (
    "CREATE TEMPORARY TABLE enrolling (n INTEGER NOT NULL, recipient TEXT NOT NULL, "
    "address TEXT NOT NULL, name TEXT, selection TEXT NOT NULL)"
)

_DELIVERY = (
    "SELECT month, recipient, address, name, selection, status, attempts, last_code, last_reply, "
    "updated_at, copy FROM deliveries"
)
_ISSUE = "SELECT content_hash, subject, items, frozen_at, resends FROM issues WHERE month = ?"


def _now() -> str:
    return stamp(datetime.now(UTC))


def stamp(moment: datetime) -> str:
    """Return how the ledger writes a moment: UTC, to the second, ISO 8601."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


_ALMOST_A_SECOND = timedelta(microseconds=999_999)


def _stamp_up(moment: datetime) -> str:
    """Return `stamp(moment)` rounded up to the second: never before the moment itself.

    A message's place in the daily limit's window ends 24 hours after this: rounded down, it
    would end a fraction of a second before the relay's does.
    """
    return stamp(moment + _ALMOST_A_SECOND)  # stamp() drops the fraction: this rounds up


def _delivery(row: tuple[Any, ...]) -> Delivery:
    month, recipient, address, name, selection, status, attempts, code, reply, at, copy = row
    return Delivery(
        month, recipient, address, name, selection, Status(status), attempts, code, reply, at, copy
    )


# Every message a server accepted after a moment: the current copies marked sent, and the earlier
# copies a --resend replaced. The moment a row became `sent` is its `updated_at`: nothing changes
# a sent row afterwards (a resend moves it to `copies` with that stamp).
_ACCEPTED = (
    "SELECT updated_at AS at FROM deliveries WHERE status = 'sent' AND updated_at > ? "
    "UNION ALL SELECT updated_at FROM copies WHERE status = 'sent' AND updated_at > ?"
)

_EDIT = "SELECT id, item, staff, at, action, diff, before, after, version FROM edits"


class Ledger:
    """The state database; one instance per process, safe to share between threads.

    Use it as a context manager (`with Ledger(path) as ledger:`), or call `close`.
    `url`: DIGEST_DATABASE_URL when it names PostgreSQL (`path` then only places the send locks);
    None (or an sqlite:/// URL, which settings turn into `path`) opens the SQLite file `path`.
    `busy_timeout`: how many seconds to wait for a database another program has locked;
    `on_busy(where, busy_timeout)` is told once a wait has begun (a person may be able to end it);
    `where` is the file, or the URL without its password.
    `reconnect_for`: how many seconds a lost PostgreSQL connection is tried again, after which
    the error names the database.
    A new, empty database is brought to the current schema as it is opened, and so is an older
    SQLite file, in one transaction; an older PostgreSQL database is refused with word to run
    `digest db upgrade` (unless `upgrade`, which is how that command opens it), a newer one always.
    """

    def __init__(
        self,
        path: Path,
        *,
        url: str | None = None,
        busy_timeout: float = 30.0,
        on_busy: Callable[[str, float], None] | None = None,
        upgrade: bool = False,
        reconnect_for: float = RECONNECT_FOR,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.on_busy = on_busy
        self._lock = threading.Lock()
        self._db: Database = connect(
            path, url, wait=min(_SLICE, busy_timeout), reconnect_for=reconnect_for
        )
        self.where = self._db.shown  # the file, or the URL without its password
        try:
            self._open(upgrade)
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def scratch(cls) -> Ledger:
        """Return a throwaway ledger in memory: a rehearsal's, which no later send ever reads."""
        return cls(Path(":memory:"))

    @property
    def engine(self) -> str:
        """Return "sqlite" or "postgresql"."""
        return self._db.engine

    @property
    def database(self) -> Database:
        """Return the connection, for `digest db` (copy, status): nothing else speaks to it."""
        return self._db

    def _open(self, upgrade: bool) -> None:
        """Check the version; bring an older ledger (or a new, empty one) up to this one."""
        try:
            if self._db.engine != POSTGRESQL:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._version()
        except self._db.errors as exc:
            raise DeliveryError(f"{self.where}: cannot open the delivery ledger: {exc}") from exc
        self._refuse_newer(version)
        if version == SCHEMA_VERSION:
            return  # nothing to write: a ledger another program keeps locked still opens
        if version:  # an older shared database is refused before anything is locked
            self._refuse_older(version, upgrade)
        try:
            with self._transaction() as db:
                # Again, under the write lock: another process may have upgraded it meanwhile,
                # or made a new one (its tables and version are seen together only here).
                version = self._version()
                self._refuse_newer(version)
                if version < SCHEMA_VERSION:
                    self._refuse_older(version, upgrade)
                    self._upgrade(db, version)
        except self._db.errors as exc:
            raise DeliveryError(
                f"{self.where}: cannot upgrade the delivery ledger from schema {version} to "
                f"{SCHEMA_VERSION} ({exc}); nothing in it was changed. Remove what is in the way "
                "or move the file aside to start a new ledger"
            ) from exc

    def _version(self) -> int:
        return migrations.version(self._db)

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise DeliveryError(
                f"{self.where}: written by a newer digest (schema {version}); upgrade digest"
            )

    def _refuse_older(self, version: int, upgrade: bool) -> None:
        """Refuse a shared (PostgreSQL) database older than this code: an upgrade is deliberate.

        A new, empty one (version 0, no tables) is made at once: a first run just works.
        """
        if upgrade or self._db.engine != POSTGRESQL or (version == 0 and not self._db.tables()):
            return
        raise DeliveryError(
            f"{self.where}: the state database is at schema {version} and this digest needs "
            f"{SCHEMA_VERSION}; nothing was changed. Back it up (pg_dump), stop every digest that "
            "uses it, then run `digest db upgrade`"
        )

    def _upgrade(self, db: Database, version: int) -> None:
        """Bring the ledger from `version` to SCHEMA_VERSION, inside the caller's transaction."""
        tables = db.tables() - {migrations.VERSION_TABLE}
        if version == 0 and not tables <= _TABLES_1:
            others = ", ".join(sorted(tables - _TABLES_1))
            raise DeliveryError(
                f"{self.where}: is not a delivery ledger (it holds other tables: {others}); "
                "give --state (or DIGEST_STATE, DIGEST_DATABASE_URL) the ledger's, or a new one"
            )
        # Version 0 with ledger tables: version 1 made them, then could not write its number;
        # migration 1 makes only the tables it lacks.
        migrations.apply(db, MIGRATIONS, version)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _patiently(self, work: Callable[[], T], patience: float | None = None) -> T:
        """Return what `work` returns, trying again while another program holds the lock.

        The caller holds `_lock`. `patience` (seconds, default `busy_timeout`): 0 tries once.
        """
        patience = self.busy_timeout if patience is None else patience
        started = time.monotonic()
        told = False
        while True:
            try:
                return work()
            except self._db.errors as exc:
                if not self._db.busy(exc):
                    raise
                if time.monotonic() - started >= patience:
                    raise LedgerBusyError(self.where, patience, self._db.engine) from exc
                if not told and self.on_busy is not None:
                    told = True
                    self.on_busy(self.where, patience)

    def query(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        """Return every row `sql` selects: for the subscriber store, which shares this database."""
        return self._rows(sql, parameters)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Hold the write lock for a `with` block, committed at its end or rolled back."""
        with self._transaction() as db:
            yield db

    def _rows(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        """Return every row `sql` selects."""
        values = tuple(parameters)
        with self._lock:
            return self._patiently(lambda: self._db.execute(sql, values).fetchall())

    @contextmanager
    def _transaction(self, patience: float | None = None) -> Iterator[Database]:
        with self._lock:
            # The write lock is taken here, at once, or not at all: nothing after it waits.
            self._patiently(self._db.begin, patience)
            try:
                yield self._db
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    def lock_month(self, month: str, holder: str = "") -> bool:
        """Take PostgreSQL's session lock on sending `month`; return False if another has it.

        The lock is taken again if the connection is lost and made again (LockLostError if
        another session took it meanwhile). `holder` ("pid 12 on host, digest send") names the
        session in pg_stat_activity, which is how other hosts learn who sends (`SendLock.holder`).
        """
        db = self._db
        assert isinstance(db, PostgreSQLDatabase)  # noqa: S101 -- called on PostgreSQL only
        with self._lock:
            taken = db.session_lock(_SEND_LOCKS, _month_key(month), f"the lock of sending {month}")
            if taken and holder:
                db.set_name(f"{_NAME_PREFIX}{holder}")
        return taken

    def unlock_month(self, month: str) -> None:
        """Release `lock_month`'s lock."""
        db = self._db
        assert isinstance(db, PostgreSQLDatabase)  # noqa: S101 -- called on PostgreSQL only
        with self._lock:
            db.session_unlock(_SEND_LOCKS, _month_key(month))

    def sending(self) -> dict[str, str]:
        """Return, by month, who holds its send lock on PostgreSQL now, from any host.

        The holder as its session named itself ("pid 12 on host, digest send"), with the moment
        that session began ("since"): the lock is the truth, the name only describes it.
        """
        if self._db.engine != POSTGRESQL:
            return {}  # an SQLite file's senders are this machine's: see SendLock.held
        found = {}
        for key, name, began in self._rows(_SENDERS, (_SEND_LOCKS,)):
            month = f"{key // 100:04d}-{key % 100:02d}"
            who = str(name or "").removeprefix(_NAME_PREFIX) or "a session that gave no name"
            since = f", since {stamp(began)}" if began is not None else ""
            found[month] = f"{who}{since}"
        return found

    # -- the frozen issue ----------------------------------------------------------------------

    def frozen(self, month: str) -> Frozen | None:
        """Return the issue frozen for `month`, if sending began."""
        rows = self._rows(_ISSUE, (month,))
        return Frozen(*rows[0]) if rows else None

    @again_if_lost
    def freeze(self, month: str, content_hash: str, subject: str, items: int) -> Frozen:
        """Record the issue about to be sent; return what is frozen (the earlier one if any)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO issues (month, content_hash, subject, items, frozen_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (month, content_hash, subject, items, _now()),
            )
            row = db.execute(_ISSUE, (month,)).fetchone()
        return Frozen(*row)

    def render(self, month: str, selection: str) -> Render | None:
        """Return the frozen rendering of `selection`, if there is one."""
        rows = self._rows(
            "SELECT subject, html, text FROM renders WHERE month = ? AND selection = ?",
            (month, selection),
        )
        return Render(*rows[0]) if rows else None

    @again_if_lost
    def keep_render(self, month: str, selection: str, render: Render) -> Render:
        """Freeze a rendering; return the one kept (an earlier one wins)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO renders (month, selection, subject, html, text) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (month, selection, render.subject, render.html, render.text),
            )
            row = db.execute(
                "SELECT subject, html, text FROM renders WHERE month = ? AND selection = ?",
                (month, selection),
            ).fetchone()
        return Render(*row)

    @again_if_lost
    def start_over(
        self,
        month: str,
        content_hash: str,
        subject: str,
        items: int,
        message_id: Callable[[str, int], str],
    ) -> Frozen:
        """Begin a deliberate resend of `month`: a new copy for everyone; return the new issue.

        In one transaction: every copy that may have reached a server (tried, or sent) is kept in
        `copies` with its Message-ID, `message_id(address, copy)`; the month's rows and renders
        go, to be enrolled and rendered afresh (each reader's next copy is one more than their
        last kept one), and the issue is frozen anew. A row never tried keeps its copy number.
        """
        now = _now()
        with self._transaction() as db:
            tried = db.execute(
                "SELECT recipient, copy, address, status, attempts, last_code, last_reply, "
                "updated_at FROM deliveries WHERE month = ? AND (attempts > 0 OR status IN (?, ?))",
                (month, Status.SENDING, Status.SENT),
            ).fetchall()
            db.executemany(
                "INSERT INTO copies (month, recipient, copy, address, message_id, status, "
                "attempts, last_code, last_reply, updated_at, replaced_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (month, recipient, copy, address, message_id(address, copy), *rest, now)
                    for recipient, copy, address, *rest in tried
                ],
            )
            db.execute("DELETE FROM deliveries WHERE month = ?", (month,))
            db.execute("DELETE FROM renders WHERE month = ?", (month,))
            db.execute("DELETE FROM holds WHERE month = ?", (month,))
            db.execute(
                "INSERT INTO issues (month, content_hash, subject, items, frozen_at, resends) "
                "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (month) DO UPDATE SET "
                "content_hash = excluded.content_hash, subject = excluded.subject, "
                "items = excluded.items, frozen_at = excluded.frozen_at, "
                "resends = issues.resends + 1",
                (month, content_hash, subject, items, now),
            )
            row = db.execute(_ISSUE, (month,)).fetchone()
        return Frozen(*row)

    def copies(self, month: str) -> list[Copy]:
        """Return the earlier copies of `month`, replaced by resends: by recipient, oldest first."""
        rows = self._rows(
            "SELECT month, recipient, copy, address, message_id, status, attempts, last_code, "
            "last_reply, updated_at, replaced_at FROM copies WHERE month = ? "
            "ORDER BY recipient, copy",
            (month,),
        )
        return [
            Copy(month, recipient, copy, address, message_id, Status(status), *rest)
            for month, recipient, copy, address, message_id, status, *rest in rows
        ]

    # -- deliveries ----------------------------------------------------------------------------

    def enrol(self, month: str, rows: Iterable[tuple[str, str, str | None, str]]) -> None:
        """Add (recipient, address, name, selection) rows as pending, keeping existing ones.

        A recipient with earlier copies of the month (replaced by a resend) gets the next copy.
        """
        rows = list(rows)
        if not rows:
            return
        if self._enrol(month, rows):
            # Every mark and claim of the send finds its rows by key; on PostgreSQL only once
            # the planner knows the month has these rows (it plans from statistics autovacuum
            # brings up to date only later, and would meanwhile scan the month for each claim).
            with self._lock:
                self._db.analyze("deliveries")

    @again_if_lost
    def _enrol(self, month: str, rows: list[tuple[str, str, str | None, str]]) -> int:
        """Add the rows not there yet; return how many that was."""
        now = _now()
        with self._transaction() as db:
            # The rows go in by one COPY on PostgreSQL (Database.insert), into a table of this
            # transaction, and from there into the month: a row kept from before stays as it
            # is, a new one gets its copy number, in the order given.
            db.execute(_ENROLLING)
            db.insert(
                "enrolling",
                ("n", "recipient", "address", "name", "selection"),
                ((n, *row) for n, row in enumerate(rows)),
            )
            added = db.execute(
                "INSERT INTO deliveries (month, recipient, address, name, selection, status, "
                "updated_at, copy) SELECT ?, e.recipient, e.address, e.name, e.selection, ?, ?, "
                "(SELECT COALESCE(MAX(c.copy) + 1, 0) FROM copies AS c WHERE c.month = ? "
                "AND c.recipient = e.recipient) FROM enrolling AS e WHERE true ORDER BY e.n "
                "ON CONFLICT DO NOTHING",
                (month, Status.PENDING, now, month),
            ).rowcount
            db.execute("DROP TABLE enrolling")
        return added

    def deliveries(self, month: str, statuses: Iterable[str] = tuple(Status)) -> list[Delivery]:
        """Return the month's rows with the given statuses, in the order they were enrolled."""
        wanted = set(statuses)
        rows = self._rows(f"{_DELIVERY} WHERE month = ? ORDER BY rowid", (month,))
        return [_delivery(row) for row in rows if row[5] in wanted]

    def sent_count(self, month: str) -> int:
        """Return how many of `month`'s recipients a server has accepted the digest for."""
        rows = self._rows(
            "SELECT COUNT(*) FROM deliveries WHERE month = ? AND status = 'sent'", (month,)
        )
        return int(rows[0][0])

    def has_recipient(self, recipient: str) -> bool:
        """Return whether any month's deliveries include `recipient` (any letter case)."""
        rows = self._rows(
            "SELECT 1 FROM deliveries WHERE recipient = ? LIMIT 1", (recipient.strip().lower(),)
        )
        return bool(rows)

    def record(
        self,
        month: str,
        marks: Iterable[Mark],
        *,
        patience: float | None = None,
        at: datetime | None = None,
        claim: Claim | None = None,
    ) -> set[str]:
        """Record several rows' new statuses in one transaction: one commit for them all.

        `patience`: seconds to wait for a lock held by another program (default `busy_timeout`).
        `at`: the moment to record (default now); a row marked `sent` counts against the daily
        limit from then. `claim`, when given: only rows that claimer holds are written, a row
        still to do keeps the claim until `claim.until`, a deferred one until the send is opened
        again. Return the recipients whose marks were not written because another sender has
        taken their rows (this one's lease ran out): always empty without `claim`.
        """
        marks = list(marks)
        if not marks:
            return set()
        now = _stamp_up(at or datetime.now(UTC))
        if len({m.recipient for m in marks}) != len(marks):
            return self._record_in_order(month, marks, now, patience, claim)
        # One statement needs no BEGIN and COMMIT around it: in autocommit mode SQLite commits
        # it on its own, as durably, with a third of the calls (a send runs this every round).
        rows = ", ".join(["(?, ?, ?, ?, ?)"] * len(marks))
        values: list[object] = [now]
        if claim is not None:
            values += [claim.until, DEFERRED_LEASE]
        for m in marks:
            values += [m.recipient, m.status, 1 if m.attempt else 0, m.code, m.reply]
        values.append(month)
        if claim is None:
            sql = _MARKS.format(rows=rows, lease="", claimed="")
        else:
            values.append(claim.claimer)
            sql = _MARKS.format(rows=rows, lease=_LEASE, claimed=_CLAIMED)
        with self._lock:
            # Refused for a lock, the statement changed nothing: it is tried again whole.
            cursor = self._patiently(lambda: self._db.execute(sql, values), patience)
            written = {row[0] for row in cursor.fetchall()} if claim is not None else None
        return set() if written is None else {m.recipient for m in marks} - written

    @again_if_lost
    def _record_in_order(
        self,
        month: str,
        marks: list[Mark],
        now: str,
        patience: float | None,
        claim: Claim | None,
    ) -> set[str]:
        """Record marks naming the same row more than once: in order, in one transaction."""
        claimer = None if claim is None else claim.claimer
        with self._transaction(patience) as db:
            db.executemany(
                _MARK,
                [
                    (
                        m.status,
                        1 if m.attempt else 0,
                        m.code,
                        m.reply,
                        now,
                        month,
                        m.recipient,
                        claimer,
                        claimer,
                    )
                    for m in marks
                ],
            )
            if claim is None:
                return set()
            held = sorted({m.recipient for m in marks})
            listed = ", ".join("?" * len(held))
            rows = db.execute(
                f"SELECT recipient FROM deliveries WHERE month = ? AND claimer = ? "  # noqa: S608
                f"AND recipient IN ({listed})",
                (month, claim.claimer, *held),
            ).fetchall()
            db.execute(
                "UPDATE deliveries SET lease_until = CASE WHEN status IN ('pending', 'sending') "  # noqa: S608 -- placeholders only
                "THEN ? WHEN status = 'deferred' THEN ? ELSE NULL END "
                f"WHERE month = ? AND claimer = ? AND recipient IN ({listed})",
                (claim.until, DEFERRED_LEASE, month, claim.claimer, *held),
            )
        return set(held) - {row[0] for row in rows}

    # -- claims: several senders share a month ---------------------------------------------------

    @again_if_lost
    def open_send(self, month: str, by: str, at: datetime | None = None) -> None:
        """Open `month`'s shared send (again): senders may join it; its deferred rows go again.

        The shared rate starts afresh, as each run's own did before sends were shared.
        """
        when = stamp(at or datetime.now(UTC))
        with self._transaction() as db:
            db.execute(
                "INSERT INTO sends (month, opened_at, opened_by) VALUES (?, ?, ?) "
                "ON CONFLICT (month) DO UPDATE SET opened_at = excluded.opened_at, "
                "opened_by = excluded.opened_by, closed_at = NULL, next_at = 0",
                (month, when, by),
            )
            db.execute(
                "UPDATE deliveries SET lease_until = NULL WHERE month = ? AND status = 'deferred'",
                (month,),
            )

    def close_send(self, month: str, at: datetime | None = None) -> None:
        """Close `month`'s shared send: nothing of it is left to do; workers no longer join it."""
        when = stamp(at or datetime.now(UTC))
        with self._lock:
            self._patiently(
                lambda: self._db.execute(
                    "UPDATE sends SET closed_at = ? WHERE month = ? AND closed_at IS NULL",
                    (when, month),
                )
            )

    def open_sends(self) -> list[str]:
        """Return the months whose shared send is open, oldest month first."""
        rows = self._rows("SELECT month FROM sends WHERE closed_at IS NULL ORDER BY month")
        return [row[0] for row in rows]

    @again_if_lost
    def claim(
        self,
        month: str,
        recipients: list[str],
        claim: Claim,
        now: datetime,
        daily_limit: int | None = None,
    ) -> list[Delivery]:
        """Claim those of `recipients`' rows that are to do and nobody holds; return them, in order.

        A row is to do when pending, deferred before the send was opened, or `sending` (perhaps
        delivered: it goes again with the same Message-ID) with no live lease. On PostgreSQL rows
        another claim has locked are skipped (FOR UPDATE SKIP LOCKED), never waited for. With a
        `daily_limit`, no more are claimed than the limit has room for, counting every sender's
        live claims: the count and the claim are one transaction, serialised by an advisory lock.
        """
        if not recipients:
            return []
        at = stamp(now)
        marks = ", ".join("?" * len(recipients))
        skip = " FOR UPDATE SKIP LOCKED" if self.engine == POSTGRESQL else ""
        sql = _CLAIM.format(recipients=marks, skip=skip)
        with self._claiming(daily_limit is not None) as db:
            limit = len(recipients)
            if daily_limit is not None:
                since = stamp(now - timedelta(hours=24))
                taken = db.execute(_TAKEN.format(accepted=_ACCEPTED), (since, since, at)).fetchone()
                limit = max(0, min(limit, daily_limit - int(taken[0])))
            if not limit:
                return []
            values: list[object] = [claim.claimer, claim.until, month, *recipients, month]
            values += [*recipients, at, claim.claimer, DEFERRED_LEASE, limit]
            rows = db.execute(sql, values).fetchall()
        got = {row[1]: _delivery(row) for row in rows}
        return [got[r] for r in recipients if r in got]

    def renew(self, month: str, claim: Claim) -> int:
        """Extend the lease of every row of `month` this claimer holds; return how many."""
        with self._lock:
            cursor = self._patiently(
                lambda: self._db.execute(
                    "UPDATE deliveries SET lease_until = ? WHERE month = ? AND claimer = ? "
                    "AND status IN ('pending', 'sending')",
                    (claim.until, month, claim.claimer),
                ),
                0.0,
            )
        return cursor.rowcount

    def release(self, month: str, claimer: str, patience: float | None = None) -> None:
        """Let go of every row of `month` this claimer holds and did not finish: anyone's now.

        `patience`: as for `record`.
        """
        with self._lock:
            self._patiently(
                lambda: self._db.execute(
                    "UPDATE deliveries SET lease_until = NULL WHERE month = ? AND claimer = ? "
                    "AND status IN ('pending', 'sending')",
                    (month, claimer),
                ),
                patience,
            )

    def leases(self, month: str) -> dict[str, tuple[str, str | None, str | None]]:
        """Return each of `month`'s rows' (status, claimer, lease_until), by recipient."""
        rows = self._rows(
            "SELECT recipient, status, claimer, lease_until FROM deliveries WHERE month = ?",
            (month,),
        )
        return {recipient: (status, who, until) for recipient, status, who, until in rows}

    def taken(self, now: datetime) -> int:
        """Return what the daily limit has taken at `now`: accepted in 24 hours, and claimed."""
        since = stamp(now - timedelta(hours=24))
        rows = self._rows(_TAKEN.format(accepted=_ACCEPTED), (since, since, stamp(now)))
        return int(rows[0][0])

    def take_slots(self, month: str, count: int, interval: float, now: float) -> float | None:
        """Reserve `count` starts of the shared rate, `interval` seconds apart; return the first.

        The moments are seconds since the epoch, on every sender's clock: the hosts' clocks must
        agree (NTP) as closely as the rate needs.
        """
        with self._lock:
            row = self._patiently(
                lambda: self._db.execute(
                    "UPDATE sends SET next_at = CASE WHEN next_at > ? THEN next_at ELSE ? END "
                    "+ ? WHERE month = ? RETURNING next_at",
                    (now, now, count * interval, month),
                ).fetchone()
            )
        if row is None:  # no shared send (a plan executed without one)
            return None
        return float(row[0]) - count * interval

    @contextmanager
    def _claiming(self, limited: bool) -> Iterator[Database]:
        """A claim's transaction: on PostgreSQL without the write lock every other writer takes
        (claims lock rows, not the database), with the claims' own lock when `limited`; on
        SQLite BEGIN IMMEDIATE, as any write."""
        db = self._db
        with self._lock:
            # Through `begin`, so a connection lost in it is known to have lost the transaction.
            self._patiently(lambda: db.begin(lock=False))
            try:
                if limited and db.engine == POSTGRESQL:
                    db.execute("SELECT pg_advisory_xact_lock(?, ?)", (_CLAIM_LOCK, 0))
                yield db
            except BaseException:
                db.rollback()
                raise
            db.commit()

    # -- the daily limit -----------------------------------------------------------------------

    def accepted_since(self, since: datetime) -> int:
        """Return how many messages servers accepted after `since`, of every month and copy."""
        at = stamp(since)
        rows = self._rows(f"SELECT COUNT(*) FROM ({_ACCEPTED}) AS accepted", (at, at))  # noqa: S608
        return int(rows[0][0])

    def accepted_at(self, since: datetime, position: int) -> datetime | None:
        """Return when the `position`-th message accepted after `since` was (1: the oldest)."""
        at = stamp(since)
        rows = self._rows(
            f"SELECT at FROM ({_ACCEPTED}) AS accepted ORDER BY at LIMIT 1 OFFSET ?",  # noqa: S608
            (at, at, position - 1),
        )
        return datetime.fromisoformat(rows[0][0]) if rows else None

    @again_if_lost
    def hold(self, month: str, held: int, until: datetime | None) -> None:
        """Record that `held` of `month`'s recipients wait for the daily limit until `until`.

        Nothing held (0, or no `until`) clears the month's hold.
        """
        with self._transaction() as db:
            if held and until is not None:
                db.execute(
                    "INSERT INTO holds (month, held, until) VALUES (?, ?, ?) ON CONFLICT (month) "
                    "DO UPDATE SET held = excluded.held, until = excluded.until",
                    (month, held, stamp(until)),
                )
            else:
                db.execute("DELETE FROM holds WHERE month = ?", (month,))

    def holds(self) -> dict[str, tuple[int, str]]:
        """Return, by month, how many recipients the daily limit holds and until when (UTC)."""
        rows = self._rows("SELECT month, held, until FROM holds ORDER BY month DESC")
        return {month: (held, until) for month, held, until in rows}

    # -- runs and status -----------------------------------------------------------------------

    @again_if_lost
    def start_run(
        self, month: str, transport: str, started_by: str, kind: RunKind = RunKind.SEND
    ) -> int:
        """Record the start of a send; return its id."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (month, started_at, transport, started_by, kind) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (month, _now(), transport, started_by, kind),
            )
            return int(cursor.fetchone()[0])

    @again_if_lost
    def finish_run(self, run: int, sent: int, failed: int, deferred: int, already: int) -> None:
        """Record how a send ended."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, sent = ?, failed = ?, deferred = ?, already = ? "
                "WHERE id = ?",
                (_now(), sent, failed, deferred, already, run),
            )

    def runs(self, month: str | None = None, limit: int = 20) -> list[Run]:
        """Return the newest sends and rehearsals (of `month`, or of every month), newest first."""
        rows = self._rows(
            "SELECT id, month, started_at, finished_at, transport, started_by, sent, failed, "
            "deferred, already, kind FROM runs WHERE CAST(? AS TEXT) IS NULL OR month = ? "
            "ORDER BY id DESC LIMIT ?",
            (month, month, limit),
        )
        return [
            Run(number, month, start, end, via, by, sent, failed, deferred, already, RunKind(kind))
            for number, month, start, end, via, by, sent, failed, deferred, already, kind in rows
        ]

    # -- suppressions (one-click unsubscribe): kept in the subscriber store -------------------

    def suppress(self, address: str, source: str) -> bool:
        """Record that `address` must get no more digests; return False if it already was.

        `source` is who asked ("one-click"): the subscriber store records it as the change's actor.
        """
        from digest.send import store

        changes = store.Store(self).change(
            lambda rows: store.unsubscribe(rows, address, source), datetime.now(UTC)
        )
        return bool(changes)

    def suppressed(self) -> set[str]:
        """Return every address unsubscribed, bounced or complained, lower-cased."""
        from digest.send.store import Store

        return Store(self).suppressed()

    @again_if_lost
    def record_logout(self, session: str, now: datetime, until: datetime) -> None:
        """Record that the console session `session` ended: refused until `until`, its expiry."""
        with self._transaction() as db:
            db.execute("DELETE FROM logouts WHERE until < ?", (stamp(now),))  # expired anyway
            db.execute(
                "INSERT INTO logouts (session, until) VALUES (?, ?) "
                "ON CONFLICT (session) DO UPDATE SET until = excluded.until",
                (session, stamp(until)),
            )

    def logouts(self, now: datetime) -> set[str]:
        """Return the console sessions logged out that would otherwise still be valid at `now`."""
        rows = self._rows("SELECT session FROM logouts WHERE until >= ?", (stamp(now),))
        return {row[0] for row in rows}

    # -- the editor's history ------------------------------------------------------------------

    @again_if_lost
    def record_edit(
        self,
        item: str,
        staff: str,
        at: datetime,
        action: str,
        diff: str,
        before: str | None,
        after: str,
        version: str,
    ) -> int:
        """Record one save of an item from the console; return its number."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO edits (item, staff, at, action, diff, before, after, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (item, staff, stamp(at), action, diff, before, after, version),
            )
            return int(cursor.fetchone()[0])

    def edits(self, item: str | None = None, limit: int = 200) -> list[Edit]:
        """Return the saves of `item` (of every item when None), newest first."""
        where, values = ("WHERE item = ?", (item,)) if item is not None else ("", ())
        rows = self._rows(f"{_EDIT} {where} ORDER BY id DESC LIMIT ?", (*values, limit))
        return [Edit(*row) for row in rows]

    def edit(self, number: int) -> Edit | None:
        """Return save number `number`, if there is one."""
        rows = self._rows(f"{_EDIT} WHERE id = ?", (number,))
        return Edit(*rows[0]) if rows else None

    # -- the scheduler -------------------------------------------------------------------------

    @again_if_lost
    def record_decision(self, at: str, month: str, decision: Decision, detail: str = "") -> None:
        """Record what the scheduler decided for a month, for `digest status` and restarts."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO decisions (at, month, kind, detail) VALUES (?, ?, ?, ?)",
                (at, month, decision.kind, detail),
            )

    def last_decision(self) -> Decided | None:
        """Return the scheduler's newest decision, if it ever decided."""
        rows = self._rows("SELECT at, month, kind, detail FROM decisions ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        at, month, kind, detail = rows[0]
        return Decided(at, month, Decision[kind.upper()], detail)

    def settled(self, month: str) -> str | None:
        """Return why `month` needs nothing more (all delivered or failed, or skipped), or None.

        Only what a server accepted or refused counts: a rehearsal leaves nothing here.
        """
        skipped = self._rows(
            "SELECT kind FROM decisions WHERE month = ? AND kind IN (?, ?) "
            "ORDER BY id DESC LIMIT 1",
            (month, *(decision.kind for decision in _SETTLING)),
        )
        if skipped:
            return str(Decision[skipped[0][0].upper()])
        rows = self.deliveries(month)
        gone = self.suppressed()  # unsubscribed mid-month: nothing more is owed to them
        done = (Status.SENT, Status.FAILED)
        if rows and all(row.status in done or row.recipient in gone for row in rows):
            return "already sent"
        return None

    def months(self) -> list[MonthStatus]:
        """Return every month with deliveries, newest first, with counts by status."""
        rows = self._rows(
            "SELECT month, status, COUNT(*), MIN(updated_at), MAX(updated_at) FROM deliveries "
            # Someone who unsubscribed mid-month is no longer waiting for anything.
            "WHERE status IN ('sent', 'failed') "
            "OR recipient NOT IN (SELECT address FROM subscribers "
            "WHERE status IN ('unsubscribed', 'bounced', 'complained')) "
            "GROUP BY month, status ORDER BY month DESC"
        )
        by_month: dict[str, MonthStatus] = {}
        for month, status, count, first, last in rows:
            entry = by_month.setdefault(
                month, MonthStatus(month, dict.fromkeys(Status, 0), first, last)
            )
            entry.counts[Status(status)] = count
            by_month[month] = MonthStatus(
                month, entry.counts, min(entry.first, first), max(entry.last, last)
            )
        return list(by_month.values())


def selection_key(categories: frozenset[str] | None) -> str:
    """Return the ledger's name for a category selection ("*" for all)."""
    return "*" if categories is None else json.dumps(sorted(categories))


def parse_selection(key: str) -> frozenset[str] | None:
    """Invert `selection_key`."""
    return None if key == "*" else frozenset(json.loads(key))


class SendLock:
    """One sender per month: an exclusive lock on a file beside the ledger.

    The operating system releases the lock when the holder exits, however it exits, so a killed
    send never leaves a stale lock behind. Given the `ledger` and it is on PostgreSQL, the lock is
    also a session advisory lock there, so that a send of the same month from another machine
    sharing the database is refused too; PostgreSQL releases it when the connection ends. There,
    who holds it is read from the database (`held`, `holder`), whatever host it runs on.
    """

    def __init__(self, ledger_path: Path, month: str, ledger: Ledger | None = None) -> None:
        self.month = month
        self.path = _lock_path(ledger_path, month)
        self._handle: int | None = None
        self._shared = ledger if ledger is not None and ledger.engine == POSTGRESQL else None

    def acquire(self, holder: str) -> None:
        """Take the lock or raise DeliveryError naming who holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DeliveryError(f"{self.path}: cannot take the send lock: {exc}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = os.pread(handle, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(handle)
            raise SendBusyError(
                f"another send of {self.month} is running ({who}); wait for it to finish, "
                f"or stop it, then run this again"
            ) from None
        who = f"pid {os.getpid()} on {socket.gethostname()}, {holder}"
        if self._shared is not None and not self._shared.lock_month(self.month, who):
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)
            elsewhere = self._shared.sending().get(self.month)
            named = f" ({elsewhere})" if elsewhere else ""
            raise SendBusyError(
                f"another send of {self.month} is running on another machine that shares the "
                f"state database {self._shared.where}{named}; wait for it to finish, or stop it, "
                "then run this again"
            )
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{who}, since {_now()}".encode(), 0)
        self._handle = handle

    def release(self) -> None:
        """Let the next sender in."""
        if self._handle is not None:
            if self._shared is not None:
                self._shared.unlock_month(self.month)
            os.ftruncate(self._handle, 0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> SendLock:
        return self

    @staticmethod
    def held(ledger_path: Path, ledger: Ledger | None = None) -> list[tuple[str, str]]:
        """Return (month, holder) for every month being sent now, newest month first.

        With a `ledger` on PostgreSQL: every send on the database, from any host (its locks);
        else the lock files beside `ledger_path`, this machine's.
        """
        if ledger is not None and ledger.engine == POSTGRESQL:
            return sorted(ledger.sending().items(), reverse=True)
        found = []
        for path in sorted(ledger_path.parent.glob("send-*.lock"), reverse=True):
            month = path.name.removeprefix("send-").removesuffix(".lock")
            holder = SendLock.holder(ledger_path, month)
            if holder:
                found.append((month, holder))
        return found

    @staticmethod
    def holder(ledger_path: Path, month: str, ledger: Ledger | None = None) -> str | None:
        """Return who is sending `month` now, or None; never takes the lock.

        With a `ledger` on PostgreSQL, the database says, for every host. Else the lock file: a
        holder that exits releases the lock and empties the file; one that was killed leaves its
        description behind, so a holder on this machine whose process is gone counts as none.
        """
        if ledger is not None and ledger.engine == POSTGRESQL:
            return ledger.sending().get(month)
        try:
            text = (
                _lock_path(ledger_path, month).read_text(encoding="utf-8", errors="replace").strip()
            )
        except OSError:
            return None
        if not text:
            return None
        found = _HOLDER.match(text)
        if found and found.group(2) == socket.gethostname():
            try:
                os.kill(int(found.group(1)), 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass  # alive, another user's
        return text

    def __exit__(self, *exc: object) -> None:
        self.release()


# The advisory locks of sends on PostgreSQL: (this number, the month as YYYYMM).
_SEND_LOCKS = 0x64696773  # "digs"
# How a sending session names itself (application_name): "digest: pid 12 on host, digest send".
_NAME_PREFIX = "digest: "
# Who holds each month's send lock on PostgreSQL: the locks themselves (a holder that died has
# none), and the name each holder gave its session. Locks of this database only.
_SENDERS = (
    "SELECT l.objid::bigint, a.application_name, a.backend_start FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.objsubid = 2 AND l.classid::bigint = ? "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _month_key(month: str) -> int:
    return int(month.replace("-", "")) if month.replace("-", "").isdigit() else 0


def _lock_path(ledger_path: Path, month: str) -> Path:
    return ledger_path.parent / f"send-{month}.lock"
