"""Pages that are not the console's own: one-click unsubscribe (no login: the token is the
credential, RFC 8058) and the built feeds, shown to staff for a local look."""

from __future__ import annotations

import logging

from flask import Flask, g, render_template, send_from_directory
from werkzeug.wrappers import Response

from digest.console import present
from digest.console.web import console
from digest.send.ledger import Ledger

log = logging.getLogger("digest.console")

FEED_TYPES = {
    ".atom.xml": "application/atom+xml",
    ".rss.xml": "application/rss+xml",
    ".json": "application/feed+json",
    ".html": "text/html",
    ".ics": "text/calendar",
}


def register(app: Flask) -> None:
    """Add the feeds and the unsubscribe pages to `app`."""
    app.add_url_rule("/feeds/", view_func=feeds, methods=["GET"])
    app.add_url_rule("/feeds/<path:name>", view_func=feeds, methods=["GET"])
    app.add_url_rule("/unsubscribe/<token>", view_func=unsubscribe_page, methods=["GET"])
    app.add_url_rule("/unsubscribe/<token>", view_func=unsubscribe_post, methods=["POST"])


def feeds(name: str = "index.html") -> Response:
    """Return a built feed or page from the feeds folder, with its own content type."""
    g.kind = "feeds"
    mimetype = next((kind for suffix, kind in FEED_TYPES.items() if name.endswith(suffix)), None)
    if mimetype is None:
        raise present.Refusal(404, present.TITLES[404], f"There is no feed or page {name!r}.")
    directory = console().config.feeds_dir.resolve()
    response = send_from_directory(
        directory, name, mimetype=mimetype, conditional=True, etag=True, max_age=0
    )
    response.headers["Content-Type"] = f"{mimetype}; charset=utf-8"
    return response


def unsubscribe_page(token: str) -> tuple[str, int]:
    """Ask the reader to confirm: a link scanner's GET unsubscribes nobody."""
    address = console().config.links.address(token)
    if address is None:
        return render_template("unsubscribe.html", address=None, done=False), 400
    # The one link every digest carries leads to the reader's preferences too: a pause or fewer
    # categories may be what they wanted.
    from digest.app import signup

    config = console().config
    mine = signup.preferences_token(config.settings, address, config.clock())
    return render_template(
        "unsubscribe.html", address=address, done=False, token=token, preferences=mine
    ), 200


def unsubscribe_post(token: str) -> tuple[str, int]:
    """Record that the token's address gets no more digests."""
    config = console().config
    address = config.links.address(token)
    if address is None:
        return render_template("unsubscribe.html", address=None, done=False), 400
    ledger = Ledger(config.state_path, url=config.database_url)
    try:
        ledger.suppress(address, "one-click")
    finally:
        ledger.close()
    log.info("unsubscribed with one click: %s", address)
    return render_template("unsubscribe.html", address=address, done=True), 200
