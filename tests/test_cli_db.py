"""`digest db` end to end: status, upgrading a PostgreSQL database, copies verified by counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import Result

from digest.send import store
from digest.send.ledger import SCHEMA_VERSION, Ledger, Mark, Status
from digest.send.store import Store
from pgserver import PostgreSQL

NOV = "2025-11"
NOW = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
STATE = Path(".digest/state.sqlite3")


def fill(ledger: Ledger) -> None:
    """Write a little of everything: deliveries in an order, a run, an edit, subscribers, a
    bounce."""
    ledger.enrol(NOV, [(a, a, None, "*") for a in ("c@example.org", "a@example.org", "b@x.org")])
    ledger.record(NOV, [Mark("a@example.org", Status.SENT, attempt=True)])
    ledger.open_send(NOV, "a test", NOW)
    ledger.start_run(NOV, "smtp://127.0.0.1:25", "a test")
    ledger.record_edit("item-1", "staff", NOW, "edit", "diff", None, "{}", "v1")
    Store(ledger).change(lambda rows: store.unsubscribe(rows, "gone@example.org", "one-click"), NOW)
    report = store.Bounce("<dsn-1@mx.example>", "b@x.org", NOV, store.BounceKind.HARD, "5.1.1")
    Store(ledger).record_bounce(report, store.BounceRules(), NOW)


def test_status_of_a_first_run_makes_nothing(run: Callable[..., Result], tmp_path: Path) -> None:
    """Looking at the schema before anything was sent creates no database."""
    done = run("db", "status")
    assert (done.exit_code, done.stderr) == (0, "")
    assert done.stdout == (
        f"State database: {STATE} (sqlite)\n"
        f"Schema: none yet; the first run makes it at version {SCHEMA_VERSION}.\n"
    )
    assert not (tmp_path / STATE).exists()


def test_an_older_postgresql_database_is_upgraded_by_the_command_only(
    run: Callable[..., Result], postgresql: PostgreSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command but `digest db upgrade` refuses an older database; that one upgrades it."""
    url = postgresql.database()
    Ledger(Path("unused"), url=url).close()
    with psycopg.connect(url, autocommit=True) as db:  # as version 3 left it
        db.execute("DROP TABLE edits")
        db.execute("DROP TABLE sends")
        db.execute("ALTER TABLE deliveries DROP COLUMN claimer, DROP COLUMN lease_until")
        db.execute("UPDATE digest_schema SET version = 3")
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    looked = run("db", "status")
    assert looked.stdout == (
        f"State database: {url} (postgresql)\n"
        f"Schema: version 3 of {SCHEMA_VERSION}; `digest db upgrade` applies 3 migrations:\n"
        "  4  the editor's history: edits\n"
        "  5  bounces and complaints: bounces\n"
        "  6  several senders: claims with leases, shared sends\n"
    )
    refused = run("status")
    assert refused.exit_code == 1
    assert "run `digest db upgrade`" in refused.stderr
    done = run("db", "upgrade")
    assert (done.exit_code, done.stdout) == (
        0,
        f"{url}: upgraded from schema version 3 to {SCHEMA_VERSION}.\n",
    )
    again = run("db", "upgrade")
    assert again.stdout == f"{url}: schema version {SCHEMA_VERSION}, up to date; nothing to do.\n"
    assert run("status").exit_code == 0


def test_a_copy_to_postgresql_keeps_every_row_and_is_counted(
    run: Callable[..., Result], tmp_path: Path, postgresql: PostgreSQL
) -> None:
    """Moving from SQLite loses nothing: counts printed, order and numbering carried over."""
    with Ledger(tmp_path / STATE) as ledger:
        fill(ledger)
    url = postgresql.database()
    done = run("db", "copy", "--to", url)
    assert (done.exit_code, done.stderr) == (0, "")
    counted = {"deliveries": "3 rows", "edits": "1 row", "runs": "1 row", "bounces": "1 row"}
    counted |= {"sends": "1 row"}
    counted |= {"subscriber_events": "2 rows", "subscribers": "2 rows"}
    tables = ["bounces", "copies", "decisions", "deliveries", "edits", "holds", "issues", "logouts"]
    tables += ["renders", "runs", "sends", "subscriber_events", "subscribers"]
    assert done.stdout == "".join(
        f"  {table:<17}  {counted.get(table, '0 rows')}\n" for table in tables
    ) + ("Copied 13 tables (11 rows), every count the same on both sides.\n")
    with Ledger(Path("unused"), url=url) as moved:
        assert [row.recipient for row in moved.deliveries(NOV)] == [
            "c@example.org",
            "a@example.org",
            "b@x.org",
        ]
        assert [row.status for row in moved.deliveries(NOV)][1] == Status.SENT
        assert moved.open_sends() == [NOV]  # a send in progress goes on after the move
        assert moved.suppressed() == {"gone@example.org", "b@x.org"}
        assert [b.report_id for b in Store(moved).bounces_of("b@x.org")] == ["<dsn-1@mx.example>"]
        assert moved.start_run(NOV, "smtp://127.0.0.1:25", "next") == 2  # numbering goes on
        assert moved.record_edit("item-1", "staff", NOW, "edit", "d", "{}", "{}", "v2") == 2


def test_a_copy_into_a_database_that_holds_tables_is_refused(
    run: Callable[..., Result], tmp_path: Path, postgresql: PostgreSQL
) -> None:
    """A second copy (or a wrong URL) never overwrites or mixes into what is there."""
    with Ledger(tmp_path / STATE) as ledger:
        fill(ledger)
    url = postgresql.database()
    assert run("db", "copy", "--to", url).exit_code == 0
    again = run("db", "copy", "--to", url)
    assert again.exit_code == 1
    assert again.stderr.startswith(f"--to {url}: is not empty (it holds bounces, copies, ")
    with Ledger(Path("unused"), url=url) as moved:
        assert len(moved.deliveries(NOV)) == 3


def test_a_copy_back_to_sqlite_and_onto_itself(
    run: Callable[..., Result],
    tmp_path: Path,
    postgresql: PostgreSQL,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL copies to a new SQLite file too; the state database itself is never a target."""
    url = postgresql.database()
    with Ledger(Path("unused"), url=url) as ledger:
        fill(ledger)
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    itself = run("db", "copy", "--to", url)
    assert (itself.exit_code, itself.stderr) == (1, f"--to {url} is the state database itself\n")
    done = run("db", "copy", "--to", "sqlite:///back.sqlite3")
    assert done.exit_code == 0, done.stderr
    with Ledger(tmp_path / "back.sqlite3") as back:
        assert back.deliveries(NOV)[0].recipient == "c@example.org"
        assert back.edits()[0].version == "v1"


def test_a_bad_target_url_is_refused_without_its_password(run: Callable[..., Result]) -> None:
    """A typo in --to is named (password hidden), and nothing is copied."""
    done = run("db", "copy", "--to", "postgres://u:hunter2@/db")
    assert done.exit_code == 1
    assert done.stderr.startswith("--to postgres://u@/db is not a database URL")
    assert "hunter2" not in done.stderr
