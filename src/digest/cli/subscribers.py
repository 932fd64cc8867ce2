"""`digest subscribers`: the store: import the directory, list, add, remove, resubscribe, export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import digest.cli as root
from digest.app.wording import plural
from digest.cli.group import _settings, catalogue_option, state_option

if TYPE_CHECKING:
    from digest.send.store import Change, Subscription

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")


@click.group()
def subscribers() -> None:
    """Manage the subscriber store: who gets the digest, and what each person chose.

    The directory (`subscribers.csv`) is imported into the store; an import never overrides a
    person's own choice (categories, unsubscribe, pause).

    \b
    Example:
        digest subscribers import subscribers.csv --dry-run
    """


@subscribers.command("import")
@catalogue_option
@state_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-n", "--dry-run", is_flag=True, help="Show what the import would change; change nothing."
)
def import_(catalogue_path: Path, state_path: Path | None, file: Path, dry_run: bool) -> None:
    """Import FILE, the directory's `email,name[,categories]` CSV, into the store.

    New addresses are added; listed ones are updated (names, and categories the person has not
    chosen themselves); an address missing from FILE leaves the directory, and nothing else of
    its row changes. An unsubscribed, bounced or complained address stays so. A bad row stops
    the import with its line number, and nothing is changed.

    \b
    Example:
        digest subscribers import subscribers.csv --dry-run
    """
    from digest.app import subscribing

    settings = _settings(catalogue_path, state_path)
    done = subscribing.import_file(settings, file, root._now(), dry_run=dry_run)
    plan = done.plan
    for change in plan.of("added"):
        click.echo(f"add     {change.after.email}{_named(change.after)}")
    for change in plan.of("updated"):
        click.echo(f"update  {change.after.email}: {_changed(change)}")
    for change in plan.of("ended"):
        click.echo(f"end     {change.after.email}: no longer in the directory")
    for row in plan.kept:
        click.echo(f"keep    {row.email}: {row.status}, as they chose; the import leaves it so")
    click.echo(subscribing.import_summary(plan, applied=done.applied))


@subscribers.command("list")
@catalogue_option
@state_option
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default=None,
    show_default=False,
    help="List only the rows with this status.  [default: every row]",
)
@click.option(
    "--format",
    "shape",
    type=click.Choice(("table", "csv")),
    default="table",
    help="A table for people, or CSV (header email,name,status,categories,source,directory).",
)
def list_(catalogue_path: Path, state_path: Path | None, status: str | None, shape: str) -> None:
    """List the store's rows by address: status, categories, source, directory membership.

    \b
    Example:
        digest subscribers list --status active --format csv
    """
    from digest.app import subscribing

    rows = subscribing.subscriptions(_settings(catalogue_path, state_path), status)
    if shape == "csv":
        click.echo(subscribing.as_csv(rows), nl=False)
        return
    if not rows:
        click.echo("No subscribers" + (f" with status {status}." if status else " yet."))
        return
    table = [list(subscribing.LIST_COLUMNS)]
    table += [[_cell(row, column) for column in subscribing.LIST_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    click.echo(f"{plural(len(rows), 'row')}.")


@subscribers.command()
@catalogue_option
@state_option
@click.argument("email")
@click.option("--name", default=None, help="The person's name, for the To header.")
@click.option(
    "--categories",
    default=None,
    show_default=False,
    help="Category slugs separated by ';', to send only those.  [default: every category]",
)
def add(
    catalogue_path: Path,
    state_path: Path | None,
    email: str,
    name: str | None,
    categories: str | None,
) -> None:
    """Add EMAIL to the list, active, as a staff member (you, by your login name).

    An address whose owner unsubscribed (or that bounced or complained) is refused: only they
    can come back, from a digest's preferences link or the sign-up form.

    \b
    Example:
        digest subscribers add chan.taiman@example.org --name "Chan Tai Man" --categories visit
    """
    from digest.app import subscribing

    chosen = None if categories is None else [s.strip() for s in categories.split(";") if s.strip()]
    settings = _settings(catalogue_path, state_path)
    row = subscribing.add(settings, email, name, chosen, _staff(), root._now())
    if row is None:
        click.echo(f"{email.strip()} is on the list already; nothing changed.")
        return
    every = ";".join(sorted(row.categories)) if row.categories else "every category"
    click.echo(f"Added {row.email}{_named(row)}: active, {every}.")


@subscribers.command()
@catalogue_option
@state_option
@click.argument("email")
def remove(catalogue_path: Path, state_path: Path | None, email: str) -> None:
    """Unsubscribe EMAIL, as a staff member; its row and history stay.

    Because the row stays, no later import of the directory brings the address back.

    \b
    Example:
        digest subscribers remove chan.taiman@example.org
    """
    from digest.app import subscribing

    settings = _settings(catalogue_path, state_path)
    row = subscribing.remove(settings, email, _staff(), root._now())
    if row is None:
        click.echo(f"{email.strip()} is off the list already; nothing changed.")
        return
    click.echo(f"Unsubscribed {row.email}; no import adds it again.")


@subscribers.command()
@catalogue_option
@state_option
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    show_default=False,
    help="The CSV file to write.  [default: standard output]",
)
def export(catalogue_path: Path, state_path: Path | None, output: Path | None) -> None:
    """Write every row of the store as CSV, consent record and all.

    \b
    Example:
        digest subscribers export -o subscribers-export.csv
    """
    from digest.app import subscribing

    settings = _settings(catalogue_path, state_path)
    text = subscribing.export(settings)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(output), exc.strerror or str(exc)) from exc
    click.echo(f"Wrote {plural(text.count(chr(10)) - 1, 'row')} to {output}.")


def _cell(row: Subscription, column: str) -> str:
    from digest.app.subscribing import cell
    from digest.send.store import SubscriberStatus

    if column == "categories" and row.categories is None:
        return "all"
    if column == "status" and row.status is SubscriberStatus.ACTIVE and not row.listed:
        # "active" alone would read as "gets the digest": this row is kept, but sent nothing.
        return "active (left the directory: gets no digest)"
    return cell(row, column) or "-"


def _named(row: Subscription) -> str:
    return f" ({row.name})" if row.name else ""


def _changed(change: Change) -> str:
    """Return what an update changes, for people: "name: 'A' -> 'B'; directory: no -> yes"."""
    words = {"in_directory": "directory", "email": "address as written"}

    def show(name: str, value: Any) -> str:
        if name == "in_directory":
            return "yes" if value else "no"
        if name == "categories":
            return "every category" if value is None else str(value)
        return repr(value)

    return "; ".join(
        f"{words.get(name, name)}: {show(name, old)} -> {show(name, new)}"
        for name, (old, new) in change.diff().items()
    )


@subscribers.command()
@catalogue_option
@state_option
@click.argument("email")
@click.option(
    "--reason",
    required=True,
    help="Why the address may be mailed again (kept in its history), like 'new mailbox, asked "
    "by phone'.",
)
def resubscribe(catalogue_path: Path, state_path: Path | None, email: str, reason: str) -> None:
    """Put EMAIL back on the list, as a staff member, with a reason its history keeps.

    For an address that bounced, complained or unsubscribed: it overrides the mail system's
    verdict or the person's own choice, so a reason is required.

    \b
    Example:
        digest subscribers resubscribe chan.taiman@example.org --reason "mailbox restored"
    """
    from digest.app import subscribing

    settings = _settings(catalogue_path, state_path)
    row = subscribing.resubscribe(settings, email, _staff(), reason, root._now())
    if row is None:
        click.echo(f"{email.strip()} is on the list already; nothing changed.")
        return
    click.echo(f"Resubscribed {row.email}: {row.status} again; its history keeps why.")


def _staff() -> str:
    """Return who runs the command: their login name, as staff actions record it."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"
