"""The dashboard: the catalogue's state, the subscribers, the next run, the months and sends."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, render_template

from digest.app.settings import Settings
from digest.console import present
from digest.console.state import Job, open_ledger
from digest.console.web import console, load
from digest.errors import CatalogueError
from digest.months import Month
from digest.publish.catalogue import Catalogue
from digest.send import schedule, subscribers
from digest.send.ledger import Ledger, MonthStatus, SendLock
from digest.send.store import Store


def register(app: Flask) -> None:
    """Add the dashboard to `app`."""
    app.add_url_rule("/", view_func=dashboard, methods=["GET"])


def dashboard() -> str:
    """Show the catalogue's state, who gets the digest, when it goes next and what was sent."""
    config = console().config
    now = config.clock()
    loaded, problems = load(config.catalogue_path)
    context: dict[str, Any] = {"problems": problems, "catalogue": loaded, "now": now}
    context["listed"], context["list_problems"], context["list_name"] = None, [], None
    context["next_run"] = None
    context["months"] = []
    jobs = [job for job in console().jobs.values() if job.running]
    ledger = open_ledger(config.state_path, config.database_url)
    try:
        context["runs"] = ledger.runs(limit=10) if ledger else []
        context["ended"] = Store(ledger).ended() if ledger else {}
        sent = {m.month: m for m in ledger.months()} if ledger else {}
        context["elsewhere"] = sends_elsewhere(config.state_path, jobs, ledger)
    finally:
        if ledger is not None:
            ledger.close()
    context["bounce_warnings"] = bounce_warnings(config.settings, now)
    context["jobs"] = jobs
    if loaded is not None:
        sending = {job.month for job in jobs} | {month for month, _ in context["elsewhere"]}
        context["counts"] = loaded.counts(now)
        context["months"] = _months(loaded, sent, sending, now)
        context.update(_newsletter(loaded, now))
    return render_template("dashboard.html", **context)


def bounce_warnings(settings: Settings, now: datetime) -> list[str]:
    """Return the warnings of months whose bounce or complaint rate is above what providers take."""
    from digest.app.sending import status

    return [warning for month in status(settings, now).bounces for warning in month.warnings]


def _months(
    loaded: Catalogue, sent: dict[str, MonthStatus], sending: set[Month], now: datetime
) -> list[tuple[Month, int, MonthStatus | None, present.Verdict]]:
    """Return the months with published items, newest first, each with where its send stands."""
    tz = loaded.publication.tz
    per_month: dict[Month, int] = {}
    for item in loaded.published(now):
        month = Month.of(item.date, tz)
        per_month[month] = per_month.get(month, 0) + 1
    return [
        (
            month,
            count,
            sent.get(str(month)),
            present.of_month(sent.get(str(month)), sending=month in sending),
        )
        for month, count in sorted(per_month.items(), reverse=True)
    ]


def _newsletter(loaded: Catalogue, now: datetime) -> dict[str, Any]:
    """Return the subscriber list (or its problems) and the next scheduled run."""
    found: dict[str, Any] = {}
    if loaded.newsletter is None:
        return found
    try:
        found["listed"], found["list_name"] = subscribers.of_catalogue(loaded)
    except CatalogueError as exc:
        found["list_problems"] = list(exc.problems)
    tz = loaded.publication.tz
    upcoming = schedule.next_runs(loaded.newsletter.schedule, tz, now, 1)
    if upcoming:
        found["next_run"] = (upcoming[0], schedule.month_of_run(upcoming[0], tz))
    return found


def sends_elsewhere(
    state_path: Path, jobs: list[Job], ledger: Ledger | None = None
) -> list[tuple[Month, str]]:
    """Return the months being sent now by `digest send` or the scheduler, with who sends them
    (on PostgreSQL, from any host sharing the database)."""
    ours = {str(job.month) for job in jobs}
    found = []
    for month, holder in SendLock.held(state_path, ledger):
        with contextlib.suppress(ValueError):  # a file there that digest did not name
            if month not in ours:
                found.append((Month.parse(month), holder))
    return found
