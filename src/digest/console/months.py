"""One month's pages: the month and its preview, test copies, the confirmation, the send, its
progress and the month's history."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from digest.app import editing, sending, wording
from digest.console import issues, present
from digest.console.state import open_ledger
from digest.console.web import console, month_of, require_catalogue, who
from digest.errors import CatalogueError, DigestError
from digest.mail import newsletter
from digest.months import Month
from digest.publish.issue_editing import IssueValues
from digest.send.ledger import SendLock

log = logging.getLogger("digest.console")

MAX_TEST_ADDRESSES = 10


def register(app: Flask) -> None:
    """Add the pages of one month to `app`."""
    for rule, view, methods in (
        ("/months/<month>", month_view, ["GET"]),
        ("/months/<month>/preview", preview, ["GET"]),
        ("/months/<month>/issue", save_issue, ["POST"]),
        ("/months/<month>/test", send_test, ["POST"]),
        ("/months/<month>/send", confirm_send, ["GET"]),
        ("/months/<month>/send", start_send, ["POST"]),
        ("/months/<month>/retry", retry, ["POST"]),
        ("/months/<month>/progress", progress, ["GET"]),
        ("/months/<month>/history", history, ["GET"]),
    ):
        app.add_url_rule(rule, view_func=view, methods=methods)


def month_view(month: str) -> str:
    """Show a month's subject, items, issue form, preview, test form and send button."""
    return month_page(month_of(month))


def month_page(
    chosen_month: Month,
    values: IssueValues | None = None,
    positions: Mapping[str, str] | None = None,
    **told: Any,
) -> str:
    """Return the month's page; `values`, `positions` and `told` (errors, other, conflict)
    are the issue form's as typed when a save was refused."""
    config = console().config
    try:
        opened = editing.open_catalogue(config.settings)  # its bytes: the form's version
    except CatalogueError:
        require_catalogue(config.catalogue_path)  # a page that says what is wrong
        raise
    loaded = opened.catalogue
    chosen = newsletter.issue(loaded, chosen_month, config.clock())
    subject = text = None
    if chosen.items and loaded.newsletter is not None:
        rendered = newsletter.Renderer(loaded).render(chosen)
        subject = rendered.subject
        _, text = rendered.personalise(None, loaded.newsletter.unsubscribe)
    return render_template(
        "month.html",
        month=chosen_month,
        issue=chosen,
        subject=subject,
        text=text,
        newsletter=loaded.newsletter,
        transport=config.transport(chosen_month, test=True).describe(),
        outbox=config.writes_files_only(chosen_month),
        job=console().jobs.get(chosen_month),
        look=issues.view(request.args),
        errors=told.get("errors") or {},
        other=told.get("other") or [],
        conflict=told.get("conflict"),
        **issues.form_context(opened, chosen_month, values=values, positions=positions),
    )


def save_issue(month: str) -> Response | tuple[str, int]:
    """Save the month's issue (intro, items in order, subject), then show the month again."""
    config = console().config
    chosen = month_of(month)
    values, positions = issues.values_from(request.form)
    again = functools.partial(month_page, chosen, values, positions)
    bad = issues.position_problems(positions)
    if bad:
        return again(errors=bad), 422
    version = request.form.get("version", "")
    staff = str(session.get("user", "someone"))
    asked = editing.IssueRequest(str(chosen), values, version, staff, console().seen(version))
    try:
        saved = editing.save_issue(config.settings, asked, config.feeds_dir, config.clock())
    except editing.Invalid as exc:
        return again(errors=exc.fields, other=exc.other), 422
    except editing.Conflict as exc:
        return again(conflict=exc), 409
    except CatalogueError as exc:  # the file itself stopped loading meanwhile
        return again(other=[str(p) for p in exc.problems]), 422
    except DigestError as exc:
        return again(other=[str(exc)]), 422
    issues.tell(saved, staff)
    return redirect(url_for("month_view", month=str(chosen)) + "#issue", 303)


def preview(month: str) -> Response:
    """Return the month's HTML digest as a subscriber without a name gets it (sandboxed)."""
    config = console().config
    chosen_month = month_of(month)
    loaded = require_catalogue(config.catalogue_path)
    chosen = newsletter.issue(loaded, chosen_month, config.clock())
    if not chosen.items or loaded.newsletter is None:
        raise present.Refusal(
            404,
            f"No digest for {chosen_month.label}",
            f"There is no digest for {chosen_month.label}.",
        )
    rendered = newsletter.Renderer(loaded).render(chosen)
    page, _ = rendered.personalise(None, loaded.newsletter.unsubscribe)
    g.kind = "preview"
    return Response(
        issues.in_scheme(page, issues.view(request.args)["scheme"]), mimetype="text/html"
    )


def send_test(month: str) -> Response:
    """Send [TEST] copies to the addresses given; record nothing."""
    config = console().config
    chosen_month = month_of(month)
    back = redirect(url_for("month_view", month=str(chosen_month)), 303)
    try:
        addresses = parse_addresses(request.form.get("addresses", ""))
    except ValueError as exc:
        flash(str(exc), "error")
        return back
    require_catalogue(config.catalogue_path)
    try:
        copies = sending.send_tests(config.settings, chosen_month, addresses, config.clock())
    except DigestError as exc:
        flash(f"Not sent: {exc}", "error")
        return back
    if not copies.items:
        flash(f"No items in {chosen_month.label}: nothing to send.", "error")
        return back
    told = wording.plural(len(copies.sent), "test copy")
    log.info("%s sent %s of %s via %s", session["user"], told, chosen_month, copies.transport)
    flash(
        f"Sent {told} of {chosen_month.label} to {', '.join(copies.sent)} ([TEST] in the "
        f"subject, not recorded) via {copies.transport}.",
        "ok" if copies.sent else "error",
    )
    for failure in copies.failures:
        flash(f"Not sent: {failure}", "error")
    return back


def confirm_send(month: str) -> tuple[str, int]:
    """Show what a send of the month would do, and the button that starts it."""
    return confirmation(month_of(month))


def confirmation(chosen_month: Month, refusal: str | None = None) -> tuple[str, int]:
    """Return the confirmation page (409 with `refusal` when a send could not start)."""
    config = console().config
    require_catalogue(config.catalogue_path)
    planned = error = None
    try:
        planned = sending.plan(config.settings, chosen_month, config.clock())
    except DigestError as exc:
        error = str(exc)
    page = render_template(
        "confirm.html",
        month=chosen_month,
        plan=planned.plan if planned else None,
        error=error,
        refusal=refusal,
        suppressed=planned.suppressed if planned else 0,
        transport=config.transport(chosen_month).describe(),
        outbox=config.writes_files_only(chosen_month),
        job=console().jobs.get(chosen_month),
    )
    return page, 409 if refusal else 200


def start_send(month: str) -> Response | tuple[str, int]:
    """Start sending the month in the background and go to its progress page."""
    chosen_month = month_of(month)
    try:
        job = console().start(chosen_month, who())
    except DigestError as exc:
        return confirmation(chosen_month, str(exc))
    log.info("%s started sending %s via %s", job.started_by, chosen_month, job.transport)
    return redirect(url_for("progress", month=str(chosen_month)), 303)


def retry(month: str) -> Response | tuple[str, int]:
    """Send the month again: every row not yet sent, deferred ones included."""
    return start_send(month)


def progress(month: str) -> Response | str:
    """Show how the console's send of the month is going, or how it ended."""
    chosen_month = month_of(month)
    job = console().jobs.get(chosen_month)
    if job is None:
        return redirect(url_for("history", month=str(chosen_month)), 303)
    return render_template("progress.html", month=chosen_month, job=job)


def history(month: str) -> str:
    """Show every send of the month, who was not reached and why, and "Retry deferred"."""
    config = console().config
    chosen_month = month_of(month)
    key = str(chosen_month)
    ledger = open_ledger(config.state_path, config.database_url)
    try:
        status = next((m for m in ledger.months() if m.month == key), None) if ledger else None
        runs = ledger.runs(key) if ledger else []
        problems = ledger.deliveries(key, ("failed", "deferred")) if ledger else []
        gone = ledger.suppressed() if ledger else set()
        # A send from `digest send` or the scheduler, on any host: the ledger's counts are its
        # progress.
        holder = SendLock.holder(config.state_path, key, ledger)
        waiting = [
            row
            for row in (
                ledger.deliveries(key, ("pending", "sending", "deferred")) if ledger else []
            )
            if row.recipient not in gone  # unsubscribed meanwhile: never sent, not waiting
        ]
    finally:
        if ledger is not None:
            ledger.close()
    job = console().jobs.get(chosen_month)
    elsewhere = None if job and job.running else holder
    return render_template(
        "history.html",
        month=chosen_month,
        counts=status.counts if status else None,
        verdict=present.of_month(status, sending=bool(elsewhere or (job and job.running))),
        runs=runs,
        problems=problems,
        waiting=len(waiting),
        job=job,
        elsewhere=elsewhere,
    )


def parse_addresses(raw: str) -> tuple[str, ...]:
    """Read the test form's addresses (separated by commas, semicolons or white space)."""
    found = [part for part in re.split(r"[\s,;]+", raw) if part]
    if not found:
        raise ValueError("Give at least one address to send the test copy to.")
    if len(found) > MAX_TEST_ADDRESSES:
        raise ValueError(f"At most {MAX_TEST_ADDRESSES} test addresses at a time.")
    return sending.addresses(found)
