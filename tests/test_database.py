"""The state database on PostgreSQL or SQLite: versions checked at start, URLs, errors, copies."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from conftest import free_port
from digest.app import settings as settings_module
from digest.cli import cli
from digest.errors import DeliveryError, DigestError, LedgerBusyError, SendBusyError
from digest.send import migrations
from digest.send.database import WRITE_LOCK, to_postgresql
from digest.send.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger, Mark, SendLock, Status
from pgserver import PASSWORD, PostgreSQL

NOV = "2025-11"
ROOT = Path(__file__).resolve().parent.parent


def stamp_postgresql(url: str, version: int) -> None:
    """Set the version PostgreSQL's `digest_schema` records, as another digest would have."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE digest_schema SET version = %s", (version,))


def test_a_new_postgresql_database_is_made_at_the_current_schema(postgresql: PostgreSQL) -> None:
    """A first run on an empty PostgreSQL database just works: every table is there."""
    url = postgresql.database()
    with Ledger(Path("unused"), url=url) as ledger:
        assert ledger.engine == "postgresql"
        assert migrations.version(ledger.database) == SCHEMA_VERSION
        assert {"deliveries", "subscribers", "edits", "holds"} <= ledger.database.tables()


def test_an_older_postgresql_database_is_refused_untouched(postgresql: PostgreSQL) -> None:
    """A shared database behind the code names `digest db upgrade` and is left as it was."""
    url = postgresql.database()
    Ledger(Path("unused"), url=url).close()
    stamp_postgresql(url, SCHEMA_VERSION - 1)
    with pytest.raises(DeliveryError) as raised:
        Ledger(Path("unused"), url=url)
    assert str(raised.value) == (
        f"{url}: the state database is at schema {SCHEMA_VERSION - 1} and this digest needs "
        f"{SCHEMA_VERSION}; nothing was changed. Back it up (pg_dump), stop every digest that "
        "uses it, then run `digest db upgrade`"
    )
    with psycopg.connect(url) as db:
        assert db.execute("SELECT version FROM digest_schema").fetchall() == [(SCHEMA_VERSION - 1,)]


def test_a_newer_postgresql_database_is_refused(postgresql: PostgreSQL) -> None:
    """An older digest never writes into a shared database whose schema it does not know."""
    url = postgresql.database()
    Ledger(Path("unused"), url=url).close()
    stamp_postgresql(url, SCHEMA_VERSION + 1)
    with pytest.raises(DeliveryError) as raised:
        Ledger(Path("unused"), url=url, upgrade=True)
    assert str(raised.value) == (
        f"{url}: written by a newer digest (schema {SCHEMA_VERSION + 1}); upgrade digest"
    )


def test_another_programs_postgresql_database_is_refused(postgresql: PostgreSQL) -> None:
    """A URL naming some other program's database never has digest's tables added to it."""
    url = postgresql.database()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE parts (name TEXT)")
    with pytest.raises(DeliveryError, match="it holds other tables: parts"):
        Ledger(Path("unused"), url=url, upgrade=True)


def test_a_version_4_sqlite_file_is_adopted_at_its_version(tmp_path: Path) -> None:
    """A ledger made before the migrations keeps its rows and is not migrated again."""
    path = tmp_path / "state.sqlite3"
    with Ledger(path) as ledger:
        ledger.enrol(NOV, [("a@example.org", "a@example.org", None, "*")])
        ledger.record(NOV, [Mark("a@example.org", Status.SENT, attempt=True)])
    # As the ledger of the session before the migrations left it: version 4, no bounces table.
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE bounces")
    db.execute("PRAGMA user_version = 4")
    db.close()
    with Ledger(path) as ledger:
        assert migrations.version(ledger.database) == SCHEMA_VERSION
        assert "bounces" in ledger.database.tables()  # only migration 5 ran
        assert [row.status for row in ledger.deliveries(NOV)] == [Status.SENT]


def test_an_older_sqlite_file_still_upgrades_itself(tmp_path: Path) -> None:
    """On one machine the file is brought up to date as it opens, as before (documented)."""
    path = tmp_path / "state.sqlite3"
    Ledger(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE edits")
    db.execute("PRAGMA user_version = 3")
    db.close()
    with Ledger(path) as ledger:
        assert migrations.version(ledger.database) == SCHEMA_VERSION
        assert "edits" in ledger.database.tables()


def test_the_migrations_are_numbered_one_by_one() -> None:
    """A migration added out of order would leave some databases without a step."""
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_both_engines_end_with_the_same_tables_and_columns(
    tmp_path: Path, postgresql: PostgreSQL
) -> None:
    """What the code reads exists on both: the same tables, the same columns (PostgreSQL's rowid
    apart, which SQLite has by itself)."""
    with Ledger(tmp_path / "state.sqlite3") as lite, Ledger(
        Path("unused"), url=postgresql.database()
    ) as pg:  # fmt: skip
        tables = lite.database.tables()
        assert pg.database.tables() - {migrations.VERSION_TABLE} == tables
        for table in tables:
            expected = lite.database.columns(table) + (["rowid"] if table == "deliveries" else [])
            assert sorted(pg.database.columns(table)) == sorted(expected), table


def test_placeholders_become_psycopgs_and_literals_keep_theirs() -> None:
    """`?` outside quotes becomes `%s` and every `%` is doubled, so LIKE 'x%' means the same."""
    assert to_postgresql("SELECT '?%' FROM t WHERE a = ? AND b LIKE 'smtp://%'") == (
        "SELECT '?%%' FROM t WHERE a = %s AND b LIKE 'smtp://%%'"
    )


def test_a_wrong_password_is_reported_without_the_password(postgresql: PostgreSQL) -> None:
    """The error names the database and what to check, and never prints the password."""
    url = postgresql.url(user="secret").replace("secret@", "secret:not-the-password@")
    with pytest.raises(DeliveryError) as raised:
        Ledger(Path("unused"), url=url)
    message = str(raised.value)
    assert message.startswith(f"postgresql://secret@127.0.0.1:{postgresql.port}/postgres: cannot")
    assert "password authentication failed" in message
    assert "not-the-password" not in message
    assert "check DIGEST_DATABASE_URL" in message


def test_the_right_password_in_the_url_opens(postgresql: PostgreSQL) -> None:
    """A password in the URL (quoted: it holds ':' and '@') is what PostgreSQL is given."""
    quoted = PASSWORD.replace(":", "%3A").replace("@", "%40")
    url = postgresql.url(user="secret").replace("secret@", f"secret:{quoted}@")
    with Ledger(Path("unused"), url=url) as ledger:
        assert ledger.where == f"postgresql://secret@127.0.0.1:{postgresql.port}/postgres"


def test_an_unreachable_server_is_reported() -> None:
    """Nothing listening: the error names the URL (no password) and says to check the server."""
    free_closed_port = free_port()  # nothing listens on it
    url = f"postgresql://digest:hunter2@127.0.0.1:{free_closed_port}/digest"
    with pytest.raises(DeliveryError) as raised:
        Ledger(Path("unused"), url=url)
    message = str(raised.value)
    assert message.startswith(f"postgresql://digest@127.0.0.1:{free_closed_port}/digest: cannot")
    assert "hunter2" not in message
    assert "that the server runs" in message


@pytest.mark.parametrize(
    "value",
    ["mysql://u:pw@host/db", "postgresql://", "postgresql://host", "sqlite:///", "state.sqlite3"],
)
def test_a_database_url_that_is_no_database_is_refused(tmp_path: Path, value: str) -> None:
    """A typo in DIGEST_DATABASE_URL stops at start, named, and never shows a password."""
    with pytest.raises(
        DigestError, match=r"^DIGEST_DATABASE_URL .* is not a database URL"
    ) as raised:
        settings_module.load(tmp_path / "items.yaml", {"DIGEST_DATABASE_URL": value})
    assert "pw" not in str(raised.value)


def test_an_sqlite_url_names_the_file_beside_the_catalogue(tmp_path: Path) -> None:
    """sqlite:///PATH is relative to the catalogue's folder; sqlite:////PATH is absolute."""
    env = {"DIGEST_DATABASE_URL": "sqlite:///data/state.sqlite3"}
    loaded = settings_module.load(tmp_path / "items.yaml", env)
    assert (loaded.state_path, loaded.database_url) == (tmp_path / "data/state.sqlite3", None)
    env = {"DIGEST_DATABASE_URL": "sqlite:////srv/x.sqlite3"}
    assert settings_module.load(tmp_path / "items.yaml", env).state_path == Path("/srv/x.sqlite3")
    env = {"DIGEST_DATABASE_URL": "postgresql://digest@db.internal:5433/digest"}
    loaded = settings_module.load(tmp_path / "items.yaml", env)
    assert loaded.database_url == "postgresql://digest@db.internal:5433/digest"


def test_a_write_lock_held_elsewhere_is_waited_for_then_refused_by_url(
    postgresql: PostgreSQL,
) -> None:
    """Another digest's transaction on the shared database is waited for, said, then named."""
    url = postgresql.database()
    told: list[tuple[Path, float]] = []
    ledger = Ledger(
        Path("state.sqlite3"), url=url, busy_timeout=1, on_busy=lambda *s: told.append(s)
    )
    other = psycopg.connect(url)  # not autocommit: the lock stays until the rollback
    try:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        with pytest.raises(LedgerBusyError) as raised:
            ledger.enrol(NOV, [("a@example.org", "a@example.org", None, "*")])
        assert raised.value.path == url
        assert str(raised.value) == (
            f"the state database {url} stayed locked by another session for 1 second: end "
            "whatever holds its write lock or its rows (a psql session with a transaction open, "
            "say: pg_locks and pg_stat_activity show which), then try again"
        )
        assert told == [(url, 1)]
        other.rollback()
        ledger.enrol(NOV, [("a@example.org", "a@example.org", None, "*")])
        assert len(ledger.deliveries(NOV)) == 1
    finally:
        other.close()
        ledger.close()


def test_a_row_locked_by_another_program_is_waited_for_too(postgresql: PostgreSQL) -> None:
    """A single statement blocked by someone's open transaction gives up as on SQLite."""
    url = postgresql.database()
    ledger = Ledger(Path("state.sqlite3"), url=url, busy_timeout=1)
    ledger.enrol(NOV, [("a@example.org", "a@example.org", None, "*")])
    other = psycopg.connect(url)
    try:
        other.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(LedgerBusyError):
            ledger.record(NOV, [Mark("a@example.org", Status.SENDING, attempt=True)])
        other.rollback()
        ledger.record(NOV, [Mark("a@example.org", Status.SENDING, attempt=True)])
        assert ledger.deliveries(NOV)[0].status is Status.SENDING
    finally:
        other.close()
        ledger.close()


def test_an_sqlite_run_never_imports_psycopg(tmp_path: Path) -> None:
    """The default engine pays nothing for PostgreSQL at start (psycopg takes about 0.2 s)."""
    script = (
        "import sys, pathlib\n"
        "from digest.cli import cli\n"
        "from digest.app import sending, settings\n"
        "loaded = settings.load(pathlib.Path(sys.argv[1]) / 'items.yaml', {})\n"
        "loaded.ledger().close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'alembic')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"
    assert (tmp_path / ".digest" / "state.sqlite3").exists()


def test_a_month_is_sent_from_one_machine_at_a_time(tmp_path: Path, postgresql: PostgreSQL) -> None:
    """Two machines sharing the database (each its own lock folder) never send one month at once."""
    url = postgresql.database()
    here = Ledger(tmp_path / "here" / "state.sqlite3", url=url)
    there = Ledger(tmp_path / "there" / "state.sqlite3", url=url)
    try:
        first = SendLock(here.path, NOV, here)
        first.acquire("digest send by alice")
        with pytest.raises(SendBusyError) as raised:
            SendLock(there.path, NOV, there).acquire("digest send by bob")
        assert re.fullmatch(
            rf"another send of {NOV} is running on another machine that shares the state "
            rf"database {re.escape(url)} \(pid {os.getpid()} on {re.escape(socket.gethostname())}, "
            r"digest send by alice, since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\); wait for it to "
            r"finish, or stop it, then run this again",
            str(raised.value),
        ), raised.value
        with SendLock(there.path, "2025-12", there) as december:  # another month goes ahead
            december.acquire("digest send by bob")
        first.release()
        with SendLock(there.path, NOV, there) as second:
            second.acquire("digest send by bob")
        first.acquire("digest send by alice")
        here.close()  # a killed sender's connection ends: PostgreSQL lets go of its lock
        with psycopg.connect(url, autocommit=True) as waiter:  # once its server process has gone
            waiter.execute("SET lock_timeout = '20s'")
            waiter.execute("SELECT pg_advisory_lock(%s, 202511)", (0x64696773,))
            waiter.execute("SELECT pg_advisory_unlock(%s, 202511)", (0x64696773,))
        with SendLock(there.path, NOV, there) as third:
            third.acquire("digest send by bob")
    finally:
        there.close()


def test_who_sends_is_read_from_the_database_on_every_host(
    tmp_path: Path, postgresql: PostgreSQL
) -> None:
    """Another host's send has no lock file here: the database names it, until it stops or dies."""
    url = postgresql.database()
    here = Ledger(tmp_path / "here" / "state.sqlite3", url=url)
    there = Ledger(tmp_path / "there" / "state.sqlite3", url=url)
    try:
        assert SendLock.held(there.path, there) == []
        lock = SendLock(here.path, NOV, here)
        lock.acquire("digest schedule")
        holder = SendLock.holder(there.path, NOV, there)
        assert holder is not None
        assert re.fullmatch(
            rf"pid {os.getpid()} on {re.escape(socket.gethostname())}, digest schedule, since "
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00",
            holder,
        ), holder
        assert SendLock.held(there.path, there) == [(NOV, holder)]
        assert SendLock.holder(there.path, NOV) is None  # this host's lock files know nothing
        assert SendLock.holder(there.path, "2025-12", there) is None
        lock.release()
        assert SendLock.held(there.path, there) == []
        lock.acquire("digest schedule")
        here.close()  # killed: its session ends, and so does its lock
        deadline = time.monotonic() + 15
        while SendLock.holder(there.path, NOV, there) is not None:
            assert time.monotonic() < deadline, "the dead sender still counts"
            time.sleep(0.01)  # the server ending the session: nothing to await
    finally:
        here.close()
        there.close()


def test_status_names_a_send_running_on_another_host(
    tmp_path: Path, postgresql: PostgreSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`digest status` on one host says which month another host is sending, and who sends it."""
    url = postgresql.database()
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    elsewhere = Ledger(tmp_path / "other-host" / "state.sqlite3", url=url)
    try:
        with SendLock(elsewhere.path, NOV, elsewhere) as lock:
            lock.acquire("digest send")
            result = CliRunner().invoke(cli, ["status"], catch_exceptions=False)
        after = CliRunner().invoke(cli, ["status"], catch_exceptions=False)
    finally:
        elsewhere.close()
    assert result.exit_code == 0, result.output
    assert re.search(
        rf"^Sending now: {NOV}, by pid {os.getpid()} on {re.escape(socket.gethostname())}, "
        r"digest send, since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\.$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout
    assert "Sending now" not in after.stdout


def test_a_send_waiting_for_postgresql_says_so_in_its_terms(
    tmp_path: Path, postgresql: PostgreSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send held up by a session on the server names the database and psql, not sqlite3."""
    url = postgresql.database()
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    monkeypatch.setenv("DIGEST_LEDGER_WAIT", "1")
    monkeypatch.delenv("DIGEST_SMTP_URL", raising=False)
    Ledger(tmp_path / "unused", url=url).close()
    other = psycopg.connect(url)  # not autocommit: the lock stays until the rollback
    try:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        result = CliRunner().invoke(cli, ["send", "--month", NOV, "--yes"], catch_exceptions=False)
    finally:
        other.rollback()
        other.close()
    assert result.exit_code == 1
    assert result.stderr == (
        f"The state database {url} is locked by another session (a psql session with a "
        "transaction open, say: pg_locks shows which); waiting up to 1 second for it.\n"
        f"the state database {url} stayed locked by another session for 1 second: end whatever "
        "holds its write lock or its rows (a psql session with a transaction open, say: pg_locks "
        "and pg_stat_activity show which), then try again\n"
    )
    assert "sqlite3" not in result.output


def test_the_state_option_says_what_it_is_on_both_engines() -> None:
    """--state's help no longer claims the state is always SQLite."""
    result = CliRunner().invoke(cli, ["status", "--help"], terminal_width=200)
    assert (
        "The state database as an SQLite file; when DIGEST_DATABASE_URL names PostgreSQL the "
        "state is there, and this file's folder keeps only this machine's send locks."
    ) in " ".join(result.stdout.split())


def test_a_digest_that_looked_while_another_made_the_schema_opens_it(
    postgresql: PostgreSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts' first runs on an empty database: the one that looked (no schema yet) while the
    other made it opens the schema as made. It used to look again outside the lock, find tables
    at "schema 0" and refuse the database as older than itself (it failed so in CI: a worker
    started beside `digest send` on a fresh database)."""
    url = postgresql.database()
    looked = Ledger._version
    first: list[int] = []

    def another_makes_it_between(self: Ledger) -> int:
        found = looked(self)
        if not first:
            first.append(found)
            Ledger(Path("unused"), url=url).close()  # the other host's first run, just then
        return found

    monkeypatch.setattr(Ledger, "_version", another_makes_it_between)
    with Ledger(Path("unused"), url=url) as ledger:
        assert migrations.version(ledger.database) == SCHEMA_VERSION
    assert first == [0]
