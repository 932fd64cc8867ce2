"""The delivery ledger: what was sent to whom, kept in SQLite so that no crash loses or repeats it.

Every (month, recipient) has one row that moves pending -> sending -> sent | failed | deferred.
`sending` is committed before the message's DATA goes out and `sent` only after the server accepted
it, so after a crash the rows still `sending` are exactly the messages whose fate is unknown.

The database runs in WAL mode with synchronous=NORMAL: a commit survives the death of the process
(kill -9 included) without an fsync per message. A power cut can lose the last few commits; the
recipients concerned are then sent again, with the same Message-ID.

Another program holding the database locked (an sqlite3 shell with a transaction open, say) is
waited for, `busy_timeout` seconds, with word to `on_busy` after the first; then LedgerBusyError.
A write refused for a lock changed nothing, so it is safe to try again or to stop there.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from digest.errors import DeliveryError, LedgerBusyError, SendBusyError

T = TypeVar("T")
# How long SQLite itself waits for a lock before the ledger hears of it, says so, and tries again.
_SLICE = 0.5

SCHEMA_VERSION = 1
# What SendLock.acquire writes into the lock file: "pid 123 on host, holder, since ...".
_HOLDER = re.compile(r"pid (\d+) on ([^,]+),")
STATUSES = ("pending", "sending", "sent", "failed", "deferred")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issues (
    month TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    subject TEXT NOT NULL,
    items INTEGER NOT NULL,
    frozen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS renders (
    month TEXT NOT NULL,
    selection TEXT NOT NULL,
    subject TEXT NOT NULL,
    html TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (month, selection)
);
CREATE TABLE IF NOT EXISTS deliveries (
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
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    month TEXT NOT NULL,
    decision TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS runs (
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
);
CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logouts (
    session TEXT PRIMARY KEY,
    until TEXT NOT NULL
);
"""

# The relay's daily limit (issue 14), kept apart from the tables above so that it merges with any
# migration as one unit: new tables and a trigger, so `CREATE ... IF NOT EXISTS` on every opening
# is the whole upgrade (run it after any migration that rebuilds `deliveries`, which drops the
# trigger), no schema version is needed, and an older digest opening the file ignores them.
# `accepted` logs every message a server accepted and when (the row's `updated_at` as it became
# `sent`). It is a log of its own, not a column of `deliveries`, because a --resend forgets the
# month's rows and the relay still counts what it took. The trigger writes it within the UPDATE
# that marks the rows sent: atomic with it, and at no cost to a send's rounds, which an INSERT of
# their own in a transaction would slow by about 3 %. No index: it is read once a send and pruned
# to a few days. `holds`: a month whose last run stopped at the limit, how many it left waiting,
# and until when.
_LIMITS_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    at TEXT NOT NULL,
    month TEXT NOT NULL,
    recipient TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS accepted_log AFTER UPDATE OF status ON deliveries
WHEN NEW.status = 'sent' AND OLD.status IS NOT 'sent'
BEGIN
    INSERT INTO accepted (at, month, recipient) VALUES (NEW.updated_at, NEW.month, NEW.recipient);
END;
CREATE TABLE IF NOT EXISTS holds (
    month TEXT PRIMARY KEY,
    held INTEGER NOT NULL,
    until TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Frozen:
    """The issue of a month as it was when sending began."""

    content_hash: str
    subject: str
    items: int
    frozen_at: str


@dataclass(frozen=True, slots=True)
class Render:
    """A frozen rendering for one category selection, with tokens for the personal parts."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the ledger."""

    month: str
    recipient: str
    address: str
    name: str | None
    selection: str
    status: str
    attempts: int
    last_code: int | None
    last_reply: str | None
    updated_at: str


@dataclass(frozen=True, slots=True)
class MonthStatus:
    """How far one month's digest has got."""

    month: str
    counts: dict[str, int]
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
    sent: int
    failed: int
    deferred: int
    already: int


class Mark(NamedTuple):
    """A row's new status, for `Ledger.record`; `attempt` counts one more attempt."""

    recipient: str
    status: str
    attempt: bool = False
    code: int | None = None  # None keeps the last one
    reply: str | None = None


_MARK = (
    "UPDATE deliveries SET status = ?, attempts = attempts + ?, "
    "last_code = COALESCE(?, last_code), last_reply = COALESCE(?, last_reply), "
    "updated_at = ? WHERE month = ? AND recipient = ?"
)


# Several rows at once: (recipient, status, attempt, code, reply) in VALUES' column1..column5.
_MARKS = (
    "UPDATE deliveries SET status = m.column2, attempts = attempts + m.column3, "
    "last_code = COALESCE(m.column4, last_code), last_reply = COALESCE(m.column5, last_reply), "
    "updated_at = ? FROM (VALUES {rows}) AS m WHERE month = ? AND recipient = m.column1"
)


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


class Ledger:
    """The SQLite state file; one instance per process, safe to share between threads.

    `busy_timeout`: how many seconds to wait for a database another program has locked;
    `on_busy(path, busy_timeout)` is told once a wait has begun (a person may be able to end it).
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 30.0,
        on_busy: Callable[[Path, float], None] | None = None,
    ) -> None:
        import threading

        self.path = path
        self.busy_timeout = busy_timeout
        self.on_busy = on_busy
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path,
                timeout=min(_SLICE, busy_timeout),
                isolation_level=None,
                check_same_thread=False,
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.executescript(_LIMITS_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DeliveryError(
                    f"{path}: written by a newer digest (schema {version}); upgrade digest"
                )
            if version != SCHEMA_VERSION:  # a write: a ledger another program locks still opens
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:  # OSError: its directory cannot be made
            raise DeliveryError(f"{path}: cannot open the delivery ledger: {exc}") from exc

    def close(self) -> None:
        """Close the database."""
        self._db.close()

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
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                if time.monotonic() - started >= patience:
                    raise LedgerBusyError(str(self.path), patience) from exc
                if not told and self.on_busy is not None:
                    told = True
                    self.on_busy(self.path, patience)

    def _rows(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        """Return every row `sql` selects."""
        values = tuple(parameters)
        with self._lock:
            return self._patiently(lambda: self._db.execute(sql, values).fetchall())

    @contextmanager
    def _transaction(self, patience: float | None = None) -> Iterator[sqlite3.Connection]:
        with self._lock:
            # The write lock is taken here, at once, or not at all: nothing after it waits.
            self._patiently(lambda: self._db.execute("BEGIN IMMEDIATE"), patience)
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- the frozen issue ----------------------------------------------------------------------

    def frozen(self, month: str) -> Frozen | None:
        """Return the issue frozen for `month`, if sending began."""
        rows = self._rows(
            "SELECT content_hash, subject, items, frozen_at FROM issues WHERE month = ?", (month,)
        )
        return Frozen(*rows[0]) if rows else None

    def freeze(self, month: str, content_hash: str, subject: str, items: int) -> Frozen:
        """Record the issue about to be sent; return what is frozen (the earlier one if any)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO issues VALUES (?, ?, ?, ?, ?)",
                (month, content_hash, subject, items, _now()),
            )
            row = db.execute(
                "SELECT content_hash, subject, items, frozen_at FROM issues WHERE month = ?",
                (month,),
            ).fetchone()
        return Frozen(*row)

    def render(self, month: str, selection: str) -> Render | None:
        """Return the frozen rendering of `selection`, if there is one."""
        rows = self._rows(
            "SELECT subject, html, text FROM renders WHERE month = ? AND selection = ?",
            (month, selection),
        )
        return Render(*rows[0]) if rows else None

    def keep_render(self, month: str, selection: str, render: Render) -> Render:
        """Freeze a rendering; return the one kept (an earlier one wins)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO renders VALUES (?, ?, ?, ?, ?)",
                (month, selection, render.subject, render.html, render.text),
            )
            row = db.execute(
                "SELECT subject, html, text FROM renders WHERE month = ? AND selection = ?",
                (month, selection),
            ).fetchone()
        return Render(*row)

    def forget(self, month: str) -> None:
        """Drop everything recorded for `month`, for a deliberate resend."""
        with self._transaction() as db:
            # Not `accepted`: the relay counts what it took, whatever the ledger forgets.
            for table in ("issues", "renders", "deliveries", "holds"):
                db.execute(f"DELETE FROM {table} WHERE month = ?", (month,))  # noqa: S608

    # -- deliveries ----------------------------------------------------------------------------

    def enrol(self, month: str, rows: Iterable[tuple[str, str, str | None, str]]) -> None:
        """Add (recipient, address, name, selection) rows as pending, keeping existing ones."""
        now = _now()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO deliveries (month, recipient, address, name, selection, "
                "status, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                ((month, r, a, n, s, now) for r, a, n, s in rows),
            )

    def deliveries(self, month: str, statuses: Iterable[str] = STATUSES) -> list[Delivery]:
        """Return the month's rows with the given statuses, in the order they were enrolled."""
        wanted = set(statuses)
        rows = self._rows(
            "SELECT month, recipient, address, name, selection, status, attempts, last_code, "
            "last_reply, updated_at FROM deliveries WHERE month = ? ORDER BY rowid",
            (month,),
        )
        return [Delivery(*row) for row in rows if row[5] in wanted]

    def mark_sending(self, month: str, recipient: str) -> None:
        """Record that DATA is about to go out: committed before the message is sent."""
        self._set(month, recipient, "sending", attempt=True)

    def mark(
        self,
        month: str,
        recipient: str,
        status: str,
        code: int | None = None,
        reply: str | None = None,
    ) -> None:
        """Record a message's outcome: sent (only once the server accepted it), failed, deferred."""
        self._set(month, recipient, status, code=code, reply=reply)

    def record(
        self,
        month: str,
        marks: Iterable[Mark],
        *,
        patience: float | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record several rows' new statuses in one transaction: one commit for them all.

        `patience`: seconds to wait for a lock held by another program (default `busy_timeout`).
        `at`: the moment to record (default now); a row marked `sent` counts against the daily
        limit from then.
        """
        marks = list(marks)
        if not marks:
            return
        now = _stamp_up(at or datetime.now(UTC))
        if len({m.recipient for m in marks}) == len(marks):
            # One statement needs no BEGIN and COMMIT around it: in autocommit mode SQLite commits
            # it on its own, as durably, with a third of the calls (a send runs this every round).
            rows = ", ".join(["(?, ?, ?, ?, ?)"] * len(marks))
            values: list[object] = [now]
            for m in marks:
                values += [m.recipient, m.status, 1 if m.attempt else 0, m.code, m.reply]
            values.append(month)
            sql = _MARKS.format(rows=rows)
            with self._lock:
                # Refused for a lock, the statement changed nothing: it is tried again whole.
                self._patiently(lambda: self._db.execute(sql, values), patience)
        else:  # the same row twice: in order, in one transaction
            with self._transaction(patience) as db:
                db.executemany(
                    _MARK,
                    [
                        (m.status, 1 if m.attempt else 0, m.code, m.reply, now, month, m.recipient)
                        for m in marks
                    ],
                )

    def _set(
        self,
        month: str,
        recipient: str,
        status: str,
        *,
        attempt: bool = False,
        code: int | None = None,
        reply: str | None = None,
    ) -> None:
        self.record(month, [Mark(recipient, status, attempt, code, reply)])

    # -- the daily limit -----------------------------------------------------------------------

    def accepted_since(self, since: datetime) -> int:
        """Return how many messages servers accepted after `since`, of every month."""
        rows = self._rows("SELECT COUNT(*) FROM accepted WHERE at > ?", (stamp(since),))
        return int(rows[0][0])

    def accepted_at(self, since: datetime, position: int) -> datetime | None:
        """Return when the `position`-th message accepted after `since` was (1: the oldest)."""
        rows = self._rows(
            "SELECT at FROM accepted WHERE at > ? ORDER BY at LIMIT 1 OFFSET ?",
            (stamp(since), position - 1),
        )
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def forget_accepted(self, before: datetime) -> None:
        """Drop the log of messages accepted before `before`: no window reaches back so far."""
        with self._transaction() as db:
            db.execute("DELETE FROM accepted WHERE at < ?", (stamp(before),))

    def hold(self, month: str, held: int, until: datetime | None) -> None:
        """Record that `held` of `month`'s recipients wait for the daily limit until `until`.

        Nothing held (0, or no `until`) clears the month's hold.
        """
        with self._transaction() as db:
            if held and until is not None:
                db.execute(
                    "INSERT OR REPLACE INTO holds VALUES (?, ?, ?)", (month, held, stamp(until))
                )
            else:
                db.execute("DELETE FROM holds WHERE month = ?", (month,))

    def holds(self) -> dict[str, tuple[int, str]]:
        """Return, by month, how many recipients the daily limit holds and until when (UTC)."""
        rows = self._rows("SELECT month, held, until FROM holds ORDER BY month DESC")
        return {month: (held, until) for month, held, until in rows}

    # -- runs and status -----------------------------------------------------------------------

    def start_run(self, month: str, transport: str, started_by: str) -> int:
        """Record the start of a send; return its id."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (month, started_at, transport, started_by) VALUES (?, ?, ?, ?)",
                (month, _now(), transport, started_by),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run: int, sent: int, failed: int, deferred: int, already: int) -> None:
        """Record how a send ended."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, sent = ?, failed = ?, deferred = ?, already = ? "
                "WHERE id = ?",
                (_now(), sent, failed, deferred, already, run),
            )

    def runs(self, month: str | None = None, limit: int = 20) -> list[Run]:
        """Return the newest sends (of `month`, or of every month), newest first."""
        rows = self._rows(
            "SELECT id, month, started_at, finished_at, transport, started_by, sent, failed, "
            "deferred, already FROM runs WHERE ? IS NULL OR month = ? ORDER BY id DESC LIMIT ?",
            (month, month, limit),
        )
        return [Run(*row) for row in rows]

    # -- suppressions (one-click unsubscribe) --------------------------------------------------

    def suppress(self, address: str, source: str) -> bool:
        """Record that `address` must get no more digests; return False if it already was."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO suppressions VALUES (?, ?, ?)",
                (address.strip().lower(), _now(), source),
            )
            return cursor.rowcount == 1

    def suppressed(self) -> set[str]:
        """Return every suppressed address, lower-cased."""
        rows = self._rows("SELECT address FROM suppressions")
        return {row[0] for row in rows}

    def record_logout(self, session: str, now: datetime, until: datetime) -> None:
        """Record that the console session `session` ended: refused until `until`, its expiry."""
        with self._transaction() as db:
            db.execute("DELETE FROM logouts WHERE until < ?", (stamp(now),))  # expired anyway
            db.execute("INSERT OR REPLACE INTO logouts VALUES (?, ?)", (session, stamp(until)))

    def logouts(self, now: datetime) -> set[str]:
        """Return the console sessions logged out that would otherwise still be valid at `now`."""
        rows = self._rows("SELECT session FROM logouts WHERE until >= ?", (stamp(now),))
        return {row[0] for row in rows}

    def record_decision(self, at: str, month: str, decision: str, detail: str = "") -> None:
        """Record what the scheduler decided for a month, for `digest status` and restarts."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO decisions (at, month, decision, detail) VALUES (?, ?, ?, ?)",
                (at, month, decision, detail),
            )

    def last_decision(self) -> tuple[str, str, str, str] | None:
        """Return the newest (at, month, decision, detail), if the scheduler ever decided."""
        rows = self._rows(
            "SELECT at, month, decision, detail FROM decisions ORDER BY id DESC LIMIT 1"
        )
        return (rows[0][0], rows[0][1], rows[0][2], rows[0][3]) if rows else None

    def settled(self, month: str) -> str | None:
        """Return why `month` needs nothing more (all delivered or failed, or skipped), or None."""
        skipped = self._rows(
            "SELECT decision FROM decisions WHERE month = ? AND decision LIKE 'skipped: no %' "
            "ORDER BY id DESC LIMIT 1",
            (month,),
        )
        if skipped:
            return str(skipped[0][0])
        rows = self.deliveries(month)
        gone = self.suppressed()  # unsubscribed mid-month: nothing more is owed to them
        if rows and all(row.status in ("sent", "failed") or row.recipient in gone for row in rows):
            return "already sent"
        return None

    def months(self) -> list[MonthStatus]:
        """Return every month with deliveries, newest first, with counts by status."""
        rows = self._rows(
            "SELECT month, status, COUNT(*), MIN(updated_at), MAX(updated_at) FROM deliveries "
            # Someone who unsubscribed mid-month is no longer waiting for anything.
            "WHERE status IN ('sent', 'failed') "
            "OR recipient NOT IN (SELECT address FROM suppressions) "
            "GROUP BY month, status ORDER BY month DESC"
        )
        by_month: dict[str, MonthStatus] = {}
        for month, status, count, first, last in rows:
            entry = by_month.setdefault(
                month, MonthStatus(month, dict.fromkeys(STATUSES, 0), first, last)
            )
            entry.counts[status] = count
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
    send never leaves a stale lock behind.
    """

    def __init__(self, ledger_path: Path, month: str) -> None:
        self.month = month
        self.path = _lock_path(ledger_path, month)
        self._handle: int | None = None

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
        os.ftruncate(handle, 0)
        description = f"pid {os.getpid()} on {socket.gethostname()}, {holder}, since {_now()}"
        os.pwrite(handle, description.encode(), 0)
        self._handle = handle

    def release(self) -> None:
        """Let the next sender in."""
        if self._handle is not None:
            os.ftruncate(self._handle, 0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> SendLock:
        return self

    @staticmethod
    def held(ledger_path: Path) -> list[tuple[str, str]]:
        """Return (month, holder) for every month being sent now, newest month first."""
        found = []
        for path in sorted(ledger_path.parent.glob("send-*.lock"), reverse=True):
            month = path.name.removeprefix("send-").removesuffix(".lock")
            holder = SendLock.holder(ledger_path, month)
            if holder:
                found.append((month, holder))
        return found

    @staticmethod
    def holder(ledger_path: Path, month: str) -> str | None:
        """Return who is sending `month` now, as the lock file says, or None; never takes it.

        A holder that exits releases the lock and empties the file; one that was killed leaves its
        description behind, so a holder on this machine whose process is gone counts as none.
        """
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


def _lock_path(ledger_path: Path, month: str) -> Path:
    return ledger_path.parent / f"send-{month}.lock"
