"""One thin connection layer under the state database: SQLite (a file) or PostgreSQL (psycopg 3).

`connect(url)` opens either; the ledger and the subscriber store then run the same SQL text on
both, written with `?` placeholders (psycopg's `%s` is made from them here, and a `%` in a literal
is doubled, so `LIKE 'smtp://%'` means the same on both). The connection is in autocommit mode: a
statement outside `begin`/`commit` commits on its own.

`begin` starts a writing transaction and takes the database's one write lock at once, as SQLite's
BEGIN IMMEDIATE does; on PostgreSQL that lock is a transaction-level advisory lock, so exactly one
writer at a time, whatever host it runs on, reads the rows it then writes (the store decides
from what it read). A statement refused because another program holds a lock raises an error
`busy` recognises, on both engines, and changed nothing: the caller may try again.

Every message about the database shows `shown`: the path, or the URL without its password.
psycopg is imported only when a PostgreSQL URL is opened.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from digest.errors import DatabaseLostError, DeliveryError, LockLostError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
# The advisory lock every writing transaction takes on PostgreSQL: "digest" in ASCII.
WRITE_LOCK = 0x646967657374
# How long one try for a lock lasts before the caller hears of it (and tries again, or gives up).
SLICE = 0.5
# How long a lost PostgreSQL connection is tried again before the caller hears of it: a restart
# takes seconds, a managed server's failover a minute or two.
RECONNECT_FOR = 120.0
_FIRST_PAUSE, _LONGEST_PAUSE = 0.1, 2.0
# TCP keepalives on every connection, both ends, unless the URL sets them: a peer that vanished
# (a dead host, a cut network) is noticed within about half a minute (idle 10 s, then 3 probes 5 s
# apart; or 30 s of data unacknowledged). The server then ends the session and releases its locks
# (a standby scheduler takes over); the client hears, and connects again.
CLIENT_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
}

# The session holding a two-key advisory lock of this database, if any.
_LOCK_HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
    "AND classid::bigint = %s AND objid::bigint = %s "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)

log = logging.getLogger("digest.database")
T = TypeVar("T")
P = ParamSpec("P")
# How many times a transaction is run again after the connection was lost in it (each time the
# connection was made again, so a database that keeps failing is reported by the reconnect).
_RERUNS = 3


class Cursor(Protocol):
    """What a statement returns on either engine."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def is_postgresql(url: str | None) -> bool:
    """Return whether `url` names a PostgreSQL database (postgresql:// or postgres://)."""
    return url is not None and urlsplit(url).scheme in ("postgresql", "postgres")


def shown(url: str) -> str:
    """Return `url` as messages show it: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, parts.query, ""))


@functools.lru_cache(maxsize=512)
def to_postgresql(sql: str) -> str:
    """Return `sql` with psycopg's placeholders: `?` becomes `%s` and `%` becomes `%%`.

    A `?` inside a quoted literal or identifier stays as it is.
    """
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append("%%" if char == "%" else char)
    return "".join(out)


class Database:
    """One open connection to the state database, SQLite or PostgreSQL."""

    engine: str
    shown: str  # the path or URL as messages show it (no password)
    errors: tuple[type[Exception], ...]  # what the library raises for anything that goes wrong

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        """Run one statement; return its cursor."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once for each row of parameters."""
        raise NotImplementedError

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Insert `rows` (values of `columns`, in order) into `table`, in the order given.

        `table` and `columns` are names from the code, never from input. For bulk writes (an
        enrolment, an import), inside a transaction (`begin`): a COPY is not idempotent, so one
        cut off is rolled back and run again whole. SQLite runs one INSERT per row, PostgreSQL
        one COPY for them all.
        """
        names = ", ".join(columns)
        marks = ", ".join("?" * len(columns))
        self.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)  # noqa: S608

    def analyze(self, table: str) -> None:
        """Bring the planner's statistics of `table` up to date after a bulk write.

        PostgreSQL plans from them (stale, it would plan a lookup by key as a scan of the
        month); SQLite plans from its indexes alone, so there it does nothing.
        """

    def begin(self, *, lock: bool = True) -> None:
        """Begin a writing transaction holding the write lock, or raise an error `busy` knows.

        `lock=False`: on PostgreSQL, without the write lock (for a statement that locks the rows
        it writes itself, as a claim does); SQLite has only the one lock.
        """
        raise NotImplementedError

    def commit(self) -> None:
        """Commit the transaction `begin` began."""
        self.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back the transaction `begin` began."""
        self.execute("ROLLBACK")

    def busy(self, error: BaseException) -> bool:
        """Return whether `error` is a refusal for a lock another program holds."""
        raise NotImplementedError

    def renumber(self) -> None:
        """After rows were copied in with their numbers: let the next insert number after them."""

    def tables(self) -> set[str]:
        """Return the names of the tables in the database (its current schema)."""
        raise NotImplementedError

    def columns(self, table: str) -> list[str]:
        """Return the columns of `table`, in order."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError


class SQLiteDatabase(Database):
    """A file (or `:memory:`), in autocommit mode; `begin` is BEGIN IMMEDIATE."""

    engine = SQLITE

    def __init__(self, path: Path, wait: float) -> None:
        self.shown = str(path)
        self.errors = (sqlite3.Error,)
        self.connection = sqlite3.connect(
            path, timeout=wait, isolation_level=None, check_same_thread=False
        )

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        """Run one statement; return its cursor."""
        return self.connection.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once for each row of parameters."""
        self.connection.executemany(sql, rows)

    def begin(self, *, lock: bool = True) -> None:
        """BEGIN IMMEDIATE: the write lock at once, or a busy error within `timeout`."""
        self.connection.execute("BEGIN IMMEDIATE")

    def busy(self, error: BaseException) -> bool:
        """Return whether SQLite refused for a lock (SQLITE_BUSY, SQLITE_LOCKED)."""
        return isinstance(error, sqlite3.OperationalError) and (
            error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        )

    def tables(self) -> set[str]:
        """Return the names of the tables in the file (SQLite's own, sqlite_sequence, apart)."""
        rows = self.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\'"
        ).fetchall()
        return {row[0] for row in rows}

    def columns(self, table: str) -> list[str]:
        """Return the columns of `table`, in order."""
        rows = self.execute("SELECT name FROM pragma_table_info(?)", (table,)).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        """Close the file."""
        self.connection.close()


class PostgreSQLDatabase(Database):
    """A PostgreSQL database through psycopg 3, in autocommit mode, that reconnects.

    A connection lost (a restart of the server, a failover, a cut network) is made again, for up
    to `reconnect_for` seconds, and the session is set up as before: its settings, and the
    session locks it held (`session_lock`), taken again; one another session took meanwhile ends
    in LockLostError. Then:

    - a statement outside a transaction is run again (each such statement is idempotent: a read,
      a lock, or a write that gives the same rows applied twice);
    - inside a transaction, the server rolled it back: DatabaseLostError(written=False), and the
      caller runs the transaction again (`Ledger._write`);
    - a COMMIT whose answer was lost is the ambiguous case: the transaction's id, taken with the
      write lock, is looked up (`pg_xact_status`), so the caller hears "committed" (nothing to
      do) or DatabaseLostError(written=False), never a guess.
    """

    engine = POSTGRESQL

    def __init__(
        self, url: str, wait: float, reconnect_for: float = RECONNECT_FOR, name: str = ""
    ) -> None:
        import psycopg

        self._psycopg = psycopg
        self._url = url
        self.shown = shown(url)
        self._errors = psycopg.errors
        self.errors = (psycopg.Error,)
        self.wait = wait
        self.reconnect_for = reconnect_for
        # Re-applied to every new connection: a statement waits this long for a lock, then
        # refuses (busy) and the caller tries again; the server's keepalives end the session
        # (and so release its locks) within about half a minute of this client vanishing.
        self._session = {"lock_timeout": f"{max(1, round(wait * 1000))}ms", **SERVER_KEEPALIVES}
        if name:
            self._session["application_name"] = name[:63]
        self._locks: dict[tuple[int, int], str] = {}  # session locks held, and what they guard
        self._xid: str | None = None  # the open transaction's id, once it holds the write lock
        self._open = False  # whether a transaction is open
        try:
            self.connection = self._connect()
        except psycopg.Error as exc:
            raise DeliveryError(
                f"{self.shown}: cannot connect to the state database "
                f"({_first_line(exc, url)}); check DIGEST_DATABASE_URL (user, host, port and "
                "database), the password (in the URL or PGPASSWORD) and that the server runs"
            ) from None

    def _connect(self) -> Any:
        """Open a connection (keepalives on, unless the URL says otherwise) and set it up."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params: dict[str, Any] = {**CLIENT_KEEPALIVES, **conninfo_to_dict(self._url)}
        params["connect_timeout"] = max(1, round(self.wait * 10))
        connection = self._psycopg.connect(make_conninfo(**params), autocommit=True)
        try:
            names = list(self._session)
            calls = ", ".join("set_config(%s, %s, false)" for _ in names)
            values = [part for name in names for part in (name, self._session[name])]
            connection.execute(f"SELECT {calls}", values)  # one round trip for all
        except BaseException:
            connection.close()
            raise
        self._pid = connection.info.backend_pid  # the server process of this session
        return connection

    def set_name(self, name: str) -> None:
        """Name this session for other sessions to see (pg_stat_activity.application_name)."""
        self._session["application_name"] = name[:63]
        self.execute("SELECT set_config('application_name', ?, false)", (name[:63],))

    def _lost(self, error: BaseException) -> bool:
        """Return whether `error` came with the connection gone (not a refusal on a live one)."""
        return isinstance(error, self._psycopg.Error) and bool(self.connection.closed)

    def _run(self, work: Callable[[], T]) -> T:
        """Return `work()`; after a lost connection: reconnect and run it again, or raise."""
        try:
            return work()
        except self._psycopg.Error as exc:
            if not self._lost(exc):
                raise
            opened = self._open
            self._open, self._xid = False, None
            self.reconnect(exc)
            if opened:
                raise DatabaseLostError(self.shown, written=False) from exc
        return work()

    def reconnect(self, cause: BaseException) -> None:
        """Connect again (for up to `reconnect_for` seconds) and take the session locks again.

        Raise DeliveryError naming the database when it cannot be reached in that time, and
        LockLostError when another session took one of the locks meanwhile.
        """
        psycopg = self._psycopg
        why = _first_line(cause, self._url)
        log.warning(
            "%s: lost the connection to the state database (%s); connecting again, for up to "
            "%s", self.shown, why, _seconds(self.reconnect_for),
        )  # fmt: skip
        started = time.monotonic()
        deadline = started + self.reconnect_for
        pause = _FIRST_PAUSE
        old = self._pid  # the session that held our locks
        while True:
            try:
                self.connection = self._connect()
                break
            except psycopg.Error as exc:
                if time.monotonic() + pause > deadline:
                    raise DeliveryError(
                        f"{self.shown}: lost the connection to the state database ({why}) and "
                        f"could not connect again within {_seconds(self.reconnect_for)} "
                        f"({_first_line(exc, self._url)}); what was recorded before stays "
                        "recorded: check that the server runs and can be reached, then run "
                        "this again"
                    ) from None
                time.sleep(pause)  # the server is restarting: nothing to wait on but time
                pause = min(pause * 2, _LONGEST_PAUSE)
        self._retake(deadline, old)
        log.warning("%s: connected again after %.1f s", self.shown, time.monotonic() - started)

    def _retake(self, deadline: float, old: int) -> None:
        """Take the session locks again, waiting while the old session (`old`, its server pid)
        still holds one (the server has not noticed yet that it is gone), not while another
        does."""
        for (first, second), what in list(self._locks.items()):
            pause = _FIRST_PAUSE
            while not self._try_lock(first, second):
                holder = self.connection.execute(_LOCK_HOLDER, (first, second)).fetchone()
                taken = holder is not None and holder[0] != old
                if taken or time.monotonic() + pause > deadline:
                    del self._locks[(first, second)]  # not ours now: never taken again
                    raise LockLostError(
                        f"{self.shown}: while the connection to the state database was lost, "
                        f"another process took {what}; this one stops there, and the other "
                        "goes on"
                    )
                time.sleep(pause)  # the server has not yet ended the old session
                pause = min(pause * 2, _LONGEST_PAUSE)

    def _try_lock(self, first: int, second: int) -> bool:
        row = self.connection.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (first, second)
        ).fetchone()
        return bool(row[0])

    def session_lock(self, first: int, second: int, what: str) -> bool:
        """Take the session advisory lock (first, second) if free; keep it across reconnects.

        `what` names it for the error if another session takes it while the connection is lost.
        """
        if self._run(lambda: self._try_lock(first, second)):
            self._locks[(first, second)] = what
            return True
        return False

    def session_unlock(self, first: int, second: int) -> None:
        """Release `session_lock`'s lock."""
        self._locks.pop((first, second), None)
        self.execute("SELECT pg_advisory_unlock(?, ?)", (first, second))

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        """Run one statement; return its cursor."""
        statement, values = to_postgresql(sql), tuple(parameters)
        return self._run(lambda: self.connection.execute(statement, values))  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once for each row of parameters."""
        statement, values = to_postgresql(sql), [tuple(row) for row in rows]

        def work() -> None:
            with self.connection.cursor() as cursor:
                cursor.executemany(statement, values)

        self._run(work)

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Insert `rows` into `table` by one COPY: one statement, rows streamed, not parsed."""
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        values = [tuple(row) for row in rows]
        if not values:
            return

        def work() -> None:
            with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
                for row in values:
                    copy.write_row(row)

        self._run(work)

    def analyze(self, table: str) -> None:
        """ANALYZE `table`; skipped, with a note in the log, when another session holds it
        (autovacuum is analysing it, say): the statistics are then being brought up to date."""
        try:
            self.execute(f"ANALYZE {table}")
        except self._psycopg.Error as exc:
            if not self.busy(exc):
                raise
            log.info("%s: ANALYZE %s skipped: %s", self.shown, table, _first_line(exc, self._url))

    def begin(self, *, lock: bool = True) -> None:
        """BEGIN, then the write lock (unless `lock` is False), waiting at most `lock_timeout`
        (`wait` at connect).

        The transaction's id is kept, so that a COMMIT whose answer is lost can be looked up.
        """
        self._run(lambda: self.connection.execute("BEGIN"))
        self._open = True
        locking = "pg_advisory_xact_lock(%s)" if lock else "%s"
        try:
            row = self.connection.execute(
                f"SELECT {locking}, pg_current_xact_id()::text", (WRITE_LOCK,)
            ).fetchone()
        except self._psycopg.Error as exc:
            self._open = False
            if not self._lost(exc):
                self.connection.execute("ROLLBACK")
                raise
            self.reconnect(exc)  # nothing was written yet: begin again
            self.begin(lock=lock)
            return
        self._xid = str(row[1])

    def commit(self) -> None:
        """Commit; a lost answer is looked up by the transaction's id once connected again."""
        xid, self._xid, self._open = self._xid, None, False
        try:
            self.connection.execute("COMMIT")
        except self._psycopg.Error as exc:
            if not self._lost(exc):
                raise
            self.reconnect(exc)
            if xid is None or not self._committed(xid):
                raise DatabaseLostError(self.shown, written=False) from exc
            log.warning("%s: the commit whose answer was lost had been made", self.shown)

    def _committed(self, xid: str) -> bool:
        """Return whether transaction `xid` committed (waiting while the server still runs it)."""
        deadline = time.monotonic() + self.reconnect_for
        while True:
            row = self.execute("SELECT pg_xact_status(CAST(? AS xid8))", (xid,)).fetchone()
            if row[0] != "in progress" or time.monotonic() > deadline:
                return bool(row[0] == "committed")
            time.sleep(_FIRST_PAUSE)  # the old session is still finishing it

    def rollback(self) -> None:
        """Roll back; nothing to do when the connection was lost (the server rolled it back)."""
        opened, self._open, self._xid = self._open, False, None
        if opened and not self.connection.closed:
            try:
                self.connection.execute("ROLLBACK")
            except self._psycopg.Error as exc:
                if not self._lost(exc):
                    raise

    def busy(self, error: BaseException) -> bool:
        """Return whether PostgreSQL refused for a lock, a deadlock or a serialization conflict."""
        errors = self._errors
        return isinstance(
            error,
            errors.LockNotAvailable | errors.DeadlockDetected | errors.SerializationFailure,
        )

    def tables(self) -> set[str]:
        """Return the names of the tables in the connection's current schema."""
        rows = self.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        return {row[0] for row in rows}

    def renumber(self) -> None:
        """Move each identity column's sequence past the largest number the table holds."""
        identities = self.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_identity = 'YES'"
        ).fetchall()
        for table, column in identities:
            self.execute(
                f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({column}), 0) + 1, "  # noqa: S608
                f"false) FROM {table}",
                (table, column),
            )

    def columns(self, table: str) -> list[str]:
        """Return the columns of `table`, in order."""
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        """Close the connection (its session locks go with it)."""
        self._locks.clear()
        self.connection.close()


def again_if_lost(method: Callable[P, T]) -> Callable[P, T]:
    """Run a method again when the connection was lost before its transaction committed.

    For the ledger's and the store's methods that write in one transaction and take plain values
    (never an iterator, which the first call would have used up): the server rolled the
    transaction back, the connection was made again (`PostgreSQLDatabase`), and the method runs
    afresh, reading what it reads anew. A commit made before the connection went is not run
    twice: `commit` looks it up and reports success.
    """

    @functools.wraps(method)
    def again(*args: P.args, **kwargs: P.kwargs) -> T:
        for _ in range(_RERUNS):
            try:
                return method(*args, **kwargs)
            except DatabaseLostError as exc:
                if exc.written is not False:
                    raise
        return method(*args, **kwargs)

    return again


def connect(
    path: Path,
    url: str | None = None,
    *,
    wait: float = SLICE,
    reconnect_for: float = RECONNECT_FOR,
    name: str = "",
) -> Database:
    """Open the state database: PostgreSQL when `url` names one, else the SQLite file `path`.

    `wait`: seconds one try for a lock lasts (SQLite's busy timeout; the connect timeout is ten
    times it on PostgreSQL, at least a second). `reconnect_for`: seconds a lost PostgreSQL
    connection is tried again; `name`: the session's application_name there. Raise
    DeliveryError naming the database (without its password) when it cannot be opened.
    """
    if url is not None and is_postgresql(url):
        return PostgreSQLDatabase(url, wait, reconnect_for, name)
    try:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteDatabase(path, wait)
    except (sqlite3.Error, OSError) as exc:  # OSError: its directory cannot be made
        raise DeliveryError(f"{path}: cannot open the delivery ledger: {exc}") from exc


def sqlite_path(url: str) -> Path:
    """Return the file a `sqlite:///PATH` URL names (`sqlite:////srv/x` is absolute)."""
    return Path(unquote(url.removeprefix("sqlite:///")))


def _first_line(error: BaseException, url: str) -> str:
    """Return the first line of a library's message, the password removed if it was quoted."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def _seconds(value: float) -> str:
    return f"{value:g} second{'' if value == 1 else 's'}"
