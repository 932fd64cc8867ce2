"""`digest db`: the state database's schema (status, upgrade) and a copy into a new database."""

from __future__ import annotations

from pathlib import Path

import click

from digest.app.wording import plural
from digest.cli.group import _settings, catalogue_option, state_option


@click.group()
def db() -> None:
    """The state database (DIGEST_DATABASE_URL): its schema, and moving it.

    \b
    Example:
        digest db status
    """


@db.command("status")
@catalogue_option
@state_option
def status(catalogue_path: Path, state_path: Path | None) -> None:
    """Show which database is used, its schema's version and the migrations it lacks.

    Reads only: a database that does not exist yet is not made.

    \b
    Example:
        DIGEST_DATABASE_URL=postgresql://digest@db.internal/digest digest db status
    """
    from digest.app import database

    found = database.status(_settings(catalogue_path, state_path))
    click.echo(f"State database: {found.where} ({found.engine})")
    if found.current is None:
        click.echo(f"Schema: none yet; the first run makes it at version {found.head}.")
        return
    if found.current > found.head:
        click.echo(
            f"Schema: version {found.current}, newer than this digest's {found.head}: "
            "upgrade digest."
        )
        return
    if not found.pending:
        click.echo(f"Schema: version {found.current}, up to date.")
        return
    click.echo(
        f"Schema: version {found.current} of {found.head}; `digest db upgrade` applies "
        f"{plural(len(found.pending), 'migration')}:"
    )
    for number, title in found.pending:
        click.echo(f"  {number}  {title}")


@db.command("upgrade")
@catalogue_option
@state_option
def upgrade(catalogue_path: Path, state_path: Path | None) -> None:
    """Apply the migrations the state database lacks, in one transaction.

    Back up the database first (pg_dump, or a copy of the SQLite file) and stop every digest
    that uses it; a failed upgrade changes nothing.

    \b
    Example:
        digest db upgrade
    """
    from digest.app import database

    before, after = database.upgrade(_settings(catalogue_path, state_path))
    if before.current == after.current:
        click.echo(f"{after.where}: schema version {after.current}, up to date; nothing to do.")
    elif before.current is None:
        click.echo(f"{after.where}: made at schema version {after.current}.")
    else:
        click.echo(
            f"{after.where}: upgraded from schema version {before.current} to {after.current}."
        )


@db.command("copy")
@catalogue_option
@state_option
@click.option(
    "--to",
    "to",
    required=True,
    metavar="URL",
    help="The new, empty database to copy into: postgresql://user@host:5432/db (password in the "
    "URL or PGPASSWORD), or sqlite:///PATH.",
)
def copy(catalogue_path: Path, state_path: Path | None, to: str) -> None:
    """Copy every table of the state database into a new, empty database, and count them.

    One transaction: the target gets the same schema version and every row, each table counted
    on both sides, or nothing at all. A target that holds any table is refused. Senders wait
    while it runs; point DIGEST_DATABASE_URL at the target once it is done.

    \b
    Example:
        digest db copy --to postgresql://digest@db.internal:5432/digest
    """
    from digest.app import database

    counts = database.copy(_settings(catalogue_path, state_path), to)
    width = max(len(table) for table, _ in counts)
    for table, rows in counts:
        click.echo(f"  {table:<{width}}  {_rows(rows)}")
    total = sum(rows for _, rows in counts)
    click.echo(
        f"Copied {plural(len(counts), 'table')} ({_rows(total)}), every count the same on both "
        "sides."
    )


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"
