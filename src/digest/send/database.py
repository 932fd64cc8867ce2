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
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from digest.errors import DeliveryError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
# The advisory lock every writing transaction takes on PostgreSQL: "digest" in ASCII.
WRITE_LOCK = 0x646967657374
# How long one try for a lock lasts before the caller hears of it (and tries again, or gives up).
SLICE = 0.5


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

    def begin(self) -> None:
        """Begin a writing transaction holding the write lock, or raise an error `busy` knows."""
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

    def begin(self) -> None:
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
    """A PostgreSQL database through psycopg 3, in autocommit mode."""

    engine = POSTGRESQL

    def __init__(self, url: str, wait: float) -> None:
        import psycopg

        self.shown = shown(url)
        self._errors = psycopg.errors
        self.errors = (psycopg.Error,)
        try:
            self.connection = psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, round(wait * 10))
            )
            # A statement waits this long for a lock, then refuses (busy): the caller tries again.
            self.connection.execute(
                "SELECT set_config('lock_timeout', %s, false)", (f"{max(1, round(wait * 1000))}ms",)
            )
        except psycopg.Error as exc:
            raise DeliveryError(
                f"{self.shown}: cannot connect to the state database "
                f"({_first_line(exc, url)}); check DIGEST_DATABASE_URL (user, host, port and "
                "database), the password (in the URL or PGPASSWORD) and that the server runs"
            ) from None

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        """Run one statement; return its cursor."""
        return self.connection.execute(to_postgresql(sql), tuple(parameters))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once for each row of parameters."""
        with self.connection.cursor() as cursor:
            cursor.executemany(to_postgresql(sql), [tuple(row) for row in rows])

    def begin(self) -> None:
        """BEGIN, then the write lock, waiting at most `lock_timeout` (`wait` at connect)."""
        self.connection.execute("BEGIN")
        try:
            self.connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        except BaseException:
            self.connection.execute("ROLLBACK")
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
        """Close the connection."""
        self.connection.close()


def connect(path: Path, url: str | None = None, *, wait: float = SLICE) -> Database:
    """Open the state database: PostgreSQL when `url` names one, else the SQLite file `path`.

    `wait`: seconds one try for a lock lasts (SQLite's busy timeout; the connect timeout is ten
    times it on PostgreSQL, at least a second). Raise DeliveryError naming the database (without
    its password) when it cannot be opened.
    """
    if url is not None and is_postgresql(url):
        return PostgreSQLDatabase(url, wait)
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
