"""The public pages of the subscriber store: sign up, confirm, and a reader's own preferences.

No login: the signed link is the credential (see `digest.send.tokens`), and every form carries
the session's CSRF token like the console's own. A GET never changes anything (link scanners
fetch links): confirming and every change of preferences take a button. A sign-up is answered
with the same page whether or not the address is known; a flood is answered 429.
"""

from __future__ import annotations

import logging

from flask import Flask, g, render_template, request
from werkzeug.datastructures import MultiDict

from digest.app import signup
from digest.console.web import console
from digest.errors import DigestError

log = logging.getLogger("digest.console")
ENDPOINTS = {"subscribe_page", "subscribe_post", "confirm_page", "confirm_post",
             "preferences_page", "preferences_post"}  # fmt: skip
_LIMITER = "digest_signup_limiter"


def register(app: Flask) -> None:
    """Add the sign-up, confirmation and preferences pages to `app`."""
    app.extensions[_LIMITER] = signup.Limiter()
    app.add_url_rule("/subscribe", view_func=subscribe_page, methods=["GET"])
    app.add_url_rule("/subscribe", view_func=subscribe_post, methods=["POST"])
    app.add_url_rule("/confirm/<token>", view_func=confirm_page, methods=["GET"])
    app.add_url_rule("/confirm/<token>", view_func=confirm_post, methods=["POST"])
    app.add_url_rule("/preferences/<token>", view_func=preferences_page, methods=["GET"])
    app.add_url_rule("/preferences/<token>", view_func=preferences_post, methods=["POST"])


def _page(name: str, status: int = 200, **context: object) -> tuple[str, int]:
    g.kind = "public"
    settings = console().config.settings
    return render_template(name, categories=signup.categories(settings), **context), status


def _client() -> str:
    return request.remote_addr or "unknown"


def subscribe_page() -> tuple[str, int]:
    """Show the sign-up form, filled in from the query (the feed page's form comes here)."""
    return _page("subscribe.html", done=False, problem=None, form=request.args)


def subscribe_post() -> tuple[str, int]:
    """Take a sign-up and answer "check your inbox", known address or not."""
    config = console().config
    form = request.form
    fields = {
        "email": form.get("email", ""),
        "name": form.get("name", ""),
        "categories": form.getlist("categories"),
        "honeypot": form.get("website", ""),
    }
    limiter = console_limiter()
    try:
        outcome = signup.sign_up(config.settings, fields, _client(), config.clock(), limiter)
    except ValueError as exc:
        return _page("subscribe.html", 400, done=False, problem=f"Email: {exc}", form=form)
    except DigestError as exc:
        log.warning("sign-up: %s", exc)
        return _page("limited.html", 503, why="The confirmation mail could not be sent now.")
    if outcome is signup.Outcome.TOO_MANY:
        return _page("limited.html", 429, why="Too many sign-ups: try again tomorrow.")
    return _page("subscribe.html", done=True, problem=None, form=MultiDict())


def console_limiter() -> signup.Limiter:
    """Return this server's counts of sign-ups and confirmation mails."""
    from flask import current_app

    limiter: signup.Limiter = current_app.extensions[_LIMITER]
    return limiter


def confirm_page(token: str) -> tuple[str, int]:
    """Show what the link confirms, and a button: nothing changes yet."""
    config = console().config
    asked = signup.pending(config.settings, token, config.clock())
    if asked is None:
        return _page("confirm_signup.html", 400, asked=None, token=token)
    return _page("confirm_signup.html", asked=asked, token=token)


def confirm_post(token: str) -> tuple[str, int]:
    """Confirm the sign-up: the reader is active, and their consent recorded."""
    config = console().config
    settings = config.settings
    kept = signup.confirm(settings, token, _client(), config.clock())
    if kept is None:
        return _page("confirm_signup.html", 400, asked=None, token=token)
    row = signup.preferences(settings, kept, config.clock())
    return _page("preferences.html", row=row, token=kept, said="You are subscribed.")


def preferences_page(token: str) -> tuple[str, int]:
    """Show a reader's choices, with a button for each change."""
    config = console().config
    row = signup.preferences(config.settings, token, config.clock())
    return _page("preferences.html", 200 if row else 400, row=row, token=token, said=None)


def preferences_post(token: str) -> tuple[str, int]:
    """Apply one change of a reader's choices."""
    config = console().config
    form = {
        "action": request.form.get("action", ""),
        "categories": request.form.getlist("categories"),
        "months": request.form.get("months", "0"),
    }
    try:
        row = signup.change(config.settings, token, form, config.clock())
    except ValueError as exc:
        row = signup.preferences(config.settings, token, config.clock())
        return _page("preferences.html", 400, row=row, token=token, said=f"Not changed: {exc}")
    if row is None:
        return _page("preferences.html", 400, row=None, token=token, said=None)
    return _page("preferences.html", row=row, token=token, said="Your choice is saved.")
