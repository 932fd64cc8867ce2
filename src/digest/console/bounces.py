"""Bounces and complaints for staff: what came back lately, each month's rates, and (on a
person's page) one address's bounce history.

The figures are `digest status`'s (`digest.app.sending.status`), the rows the store's, so the
terminal and the console say the same; staff put a bounced address back from the person's page,
with a reason.
"""

from __future__ import annotations

from flask import Flask, render_template

from digest.app import sending, subscribing, wording
from digest.console.web import console

# How many of the newest bounces and complaints the page lists.
RECENT = 100
# What each kind of report is called on the pages.
KINDS = {"hard": "hard bounce", "soft": "soft bounce", "complaint": "complaint (marked as spam)"}


def register(app: Flask) -> None:
    """Add the bounces page to `app`."""
    app.add_url_rule("/bounces", view_func=listing, endpoint="bounces_listing", methods=["GET"])


def listing() -> str:
    """Show each month's bounce and complaint rates, with warnings, and the newest reports."""
    config = console().config
    found = subscribing.recent_bounces(config.settings, RECENT)
    months = sending.status(config.settings, config.clock()).bounces
    rows = [
        (m, wording.rate(m.bounced, m.sent), wording.rate(m.complained, m.sent))
        for m in months
        if m.sent or m.bounced or m.complained
    ]
    warnings = [warning for m in months for warning in m.warnings]
    return render_template(
        "bounces.html", bounces=found, months=rows, warnings=warnings, limit=RECENT, kinds=KINDS
    )
