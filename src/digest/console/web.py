"""What the console's pages share: the console behind a request, the month in the URL, the
catalogue, who is asking and how times read."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from flask import Flask, current_app, request, session

from digest.console import present
from digest.console.state import Console
from digest.errors import CatalogueError, Problem
from digest.months import Month
from digest.publish import catalogue as catalogues
from digest.publish.catalogue import Catalogue


def console_of(app: Flask) -> Console:
    """Return the Console state behind `app`."""
    found: Console = app.extensions["digest_console"]
    return found


def console() -> Console:
    """Return the Console state behind the request being answered."""
    return console_of(current_app)


def who() -> str:
    """Return who is asking, as sends record it: "Ada (from 192.0.2.1)"."""
    return f"{session.get('user', 'someone')} (from {request.remote_addr or 'unknown'})"


def month_of(text: str) -> Month:
    """Return the month a URL names; a page that names none is not found."""
    try:
        return Month.parse(text)
    except ValueError:
        raise present.Refusal(
            404, present.TITLES[404], f"{text!r} is not a month: months are written YYYY-MM."
        ) from None


def load(path: Path) -> tuple[Catalogue | None, list[Problem]]:
    """Return the catalogue, or None and every problem that stops it loading."""
    try:
        return catalogues.load(path), []
    except CatalogueError as exc:
        return None, list(exc.problems)


def require_catalogue(path: Path) -> Catalogue:
    """Return the catalogue; a page that needs it says so when it does not load."""
    loaded, problems = load(path)
    if loaded is None:
        first = str(problems[0]) if problems else f"{path} does not load"
        raise present.Refusal(
            409,
            "The catalogue has errors",
            f"Fix them first (the dashboard lists every one): {first}",
        )
    return loaded


def local(moment: datetime | str) -> str:
    """Return a time (a ledger stamp or a datetime) in the publication's zone, for people."""
    return present.local_time(moment, console().zone())
