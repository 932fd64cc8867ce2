"""`digest db`: the state database's schema (status, upgrade) and a copy into another database.

Each is one function, for the command line (and any other front end): `status` reads and changes
nothing, `upgrade` applies the migrations the database lacks, `copy` moves every table into a new,
empty database at the same version, verified by counting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from digest.app.settings import Settings, parse_database_url
from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.send.database import Database
    from digest.send.ledger import Ledger


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a state database's schema stands."""

    where: str  # the file, or the URL without its password
    engine: str
    current: int | None  # None: the file does not exist yet (the first run makes it)
    head: int  # the version this digest needs
    pending: tuple[tuple[int, str], ...]  # (version, what it adds) of the migrations it lacks


def status(settings: Settings) -> SchemaStatus:
    """Return the schema's version and the migrations it lacks; open nothing that is not there."""
    from digest.send import migrations
    from digest.send.database import SQLITE, connect
    from digest.send.ledger import MIGRATIONS, SCHEMA_VERSION

    if not settings.has_state:
        pending = tuple((m.version, m.title) for m in MIGRATIONS)
        return SchemaStatus(str(settings.state_path), SQLITE, None, SCHEMA_VERSION, pending)
    db = connect(settings.state_path, settings.database_url)
    try:
        current = migrations.version(db)
    finally:
        db.close()
    pending = tuple((m.version, m.title) for m in migrations.pending(MIGRATIONS, current))
    return SchemaStatus(db.shown, db.engine, current, SCHEMA_VERSION, pending)


def upgrade(settings: Settings) -> tuple[SchemaStatus, SchemaStatus]:
    """Apply every migration the database lacks, in one transaction; return before and after."""
    before = status(settings)
    settings.ledger(busy_timeout=settings.ledger_wait, upgrade=True).close()
    return before, status(settings)


def copy(settings: Settings, to: str) -> list[tuple[str, int]]:
    """Copy every table of the state database into the empty database `to`; return the counts.

    `to` is a database URL (postgresql://..., sqlite:///PATH beside the catalogue). In one
    transaction on each side: the source is held still (its write lock), the target is given
    the current schema, every row, and its numbering (identity columns) carried on, then each
    table's rows are counted on both sides; any difference undoes the whole copy.
    """
    from digest.send.database import connect, shown

    url, path = parse_database_url(to, "--to")
    target_path = settings.home / path if path is not None else settings.state_path
    if url is not None:
        same = settings.database_url is not None and shown(url) == shown(settings.database_url)
    else:
        same = settings.database_url is None and (
            target_path.resolve() == settings.state_path.resolve()
        )
    if same:
        raise DigestError(f"--to {shown(url or str(target_path))} is the state database itself")
    with settings.ledger(busy_timeout=settings.ledger_wait) as source:
        new_file = url is None and not target_path.exists()
        target = connect(target_path, url)
        done = False
        try:
            found = target.tables()
            if found:
                raise DigestError(
                    f"--to {target.shown}: is not empty (it holds {', '.join(sorted(found))}); "
                    "copy into a new, empty database, so that nothing in it is overwritten"
                )
            counts = _copy_all(source.database, target, source)
            done = True
        finally:
            target.close()
            if new_file and not done:
                target_path.unlink(missing_ok=True)
    return counts


def _copy_all(db: Database, target: Database, source: Ledger) -> list[tuple[str, int]]:
    """Copy every table under the source's write lock, in one transaction on the target."""
    from digest.send import migrations
    from digest.send.ledger import MIGRATIONS

    with source.transaction():
        try:
            target.begin()
            try:
                migrations.apply(target, MIGRATIONS, 0)
                tables = sorted(db.tables() - {migrations.VERSION_TABLE})
                counts = [(table, _copy_table(db, target, table)) for table in tables]
                target.renumber()
            except BaseException:
                target.rollback()
                raise
            target.commit()
        except target.errors as exc:
            raise DigestError(
                f"--to {target.shown}: the copy failed and was undone ({exc}); nothing was "
                "written there"
            ) from exc
    return counts


def _copy_table(source: Database, target: Database, table: str) -> int:
    """Copy one table's rows, in the order they were made; return how many, counted on both."""
    columns = target.columns(table)
    have = set(source.columns(table)) | ({"rowid"} if source.engine == "sqlite" else set())
    missing = [name for name in columns if name not in have]
    if missing:
        raise DigestError(
            f"{source.shown}: table {table} lacks {', '.join(missing)}; run `digest db upgrade`"
        )
    names = ", ".join(columns)
    order = " ORDER BY rowid" if "rowid" in have else ""
    rows = source.execute(f"SELECT {names} FROM {table}{order}").fetchall()  # noqa: S608
    target.insert(table, columns, rows)  # by COPY onto PostgreSQL
    counted = [
        int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
        for db in (source, target)
    ]
    if counted[0] != counted[1] or counted[0] != len(rows):
        raise DigestError(
            f"{target.shown}: table {table} has {counted[1]} rows after the copy, the source "
            f"{counted[0]}; the copy was undone"
        )
    return counted[0]
