"""Logging in and out: the password and its length, the login guard, lockouts and CSRF tokens.

One shared password, compared as SHA-256 digests with `hmac.compare_digest`; sessions live in
signed cookies; every form carries a CSRF token. After logging in, staff go back only to a console
page rebuilt from the app's own routes, never to the text of `next`. Wrong passwords are counted
per client and for the shared password as a whole (see `state.Console`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Flask, current_app, redirect, render_template, request, session, url_for
from itsdangerous import BadData, URLSafeSerializer
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter
from werkzeug.wrappers import Response

from digest.console import present
from digest.console.web import console
from digest.errors import DigestError
from digest.send import unsubscribe

PUBLIC_ENDPOINTS = {
    "login", "static", "unsubscribe_page", "unsubscribe_post",
    # The subscriber's own pages (console.signup): the signed link is the credential.
    "subscribe_page", "subscribe_post", "confirm_page", "confirm_post", "preferences_page",
    "preferences_post",
}  # fmt: skip
# The console sends email to the whole list: a password short enough to guess in an afternoon
# (even at MAX_ACCOUNT_FAILURES guesses per LOCKOUT) must not guard it.
MIN_PASSWORD_LENGTH = 12
# The cookie that marks a browser which has logged in: it opens nothing, it only lets the browser
# try the password while strangers are refused, and counts its wrong passwords apart.
KNOWN_BROWSER_COOKIE = "digest_known_browser"
KNOWN_BROWSER_LIFETIME = timedelta(days=180)


def check_password(password: str) -> str:
    """Return the console password if it may guard the list; raise DigestError saying why not.

    Spaces around it do not count towards its length: a password of spaces is no password.
    """
    if not password:
        raise DigestError(
            "DIGEST_CONSOLE_PASSWORD is not set: the console sends email to the whole list and "
            "refuses to start without a password; set DIGEST_CONSOLE_PASSWORD to a long passphrase"
        )
    length = len(password.strip())
    if length < MIN_PASSWORD_LENGTH:
        raise DigestError(
            f"DIGEST_CONSOLE_PASSWORD is too short ({length} characters, not counting spaces "
            "around it): the console sends email to the whole list, so its password must have at "
            f"least {MIN_PASSWORD_LENGTH}; set DIGEST_CONSOLE_PASSWORD to a long passphrase, such "
            "as four random words"
        )
    return password


def register(app: Flask) -> None:
    """Add the login and logout pages, the login guard and the CSRF check to `app`."""
    app.before_request(guard)
    app.before_request(check_csrf)
    app.add_url_rule("/login", view_func=login, methods=["GET", "POST"])
    app.add_url_rule("/logout", view_func=logout, methods=["POST"])
    app.add_template_global(csrf_token)


def guard() -> Response | None:
    """Send anyone not logged in (or logged out since) to the login page."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    if not session.get("user") or session.get("sid") in console().logged_out:
        session.clear()
        if request.method == "GET":
            return redirect(url_for("login", next=request.full_path.rstrip("?")), 303)
        return redirect(url_for("login"), 303)
    return None


def check_csrf() -> None:
    """Refuse a form posted without this session's CSRF token (the unsubscribe button aside)."""
    if request.method != "POST" or request.endpoint in ("unsubscribe_post", None):
        return
    given = request.form.get("csrf_token", "")
    wanted = session.get("csrf", "")
    if not given or not wanted or not hmac.compare_digest(given, wanted):
        raise present.Refusal(
            403,
            "This form has expired",
            "The form's security token is missing or old: reload the page and retry.",
        )


def csrf_token() -> str:
    """Return this session's CSRF token, making one on first use."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def _browsers() -> URLSafeSerializer:
    return URLSafeSerializer(unsubscribe.derive(console().config.secret_key, "known browser"))


def known_browser(now: datetime) -> str | None:
    """Return the id of this browser if it has logged in here before (and lately)."""
    try:
        found = _browsers().loads(request.cookies.get(KNOWN_BROWSER_COOKIE, ""))
        until = datetime.fromisoformat(found["until"])
        return str(found["id"]) if now < until else None
    except (BadData, KeyError, TypeError, ValueError):
        return None


def _refusal(client: str, now: datetime, *, known: bool, right: bool, named: bool) -> str | None:
    """Check and count one login attempt in one step; return why it is refused, if it is."""
    state = console()
    with state.guesses:  # checked and counted together: parallel guesses all count
        if state.locked_out(client, now):
            return "Too many wrong passwords: wait ten minutes, then try again."
        if not known and state.strangers_refused(now):
            return (
                "Too many wrong passwords from browsers that have not logged in here before: "
                "for now only browsers that have may log in. Wait ten minutes, or use such a "
                "browser."
            )
        if named and not right:
            state.count_failure(client, now, known=known)
    return None


def login() -> Response | str | tuple[str, int]:
    """Show the login form; log in whoever gives a name and the password."""
    routes = current_app.url_map.bind_to_environ(request.environ)
    wanted = safe_next(request.values.get("next", ""), routes)
    if request.method == "GET":
        return render_template("login.html", next=wanted, error=None)
    config = console().config
    now = config.clock()
    known = known_browser(now)
    client = f"browser {known}" if known else f"address {request.remote_addr or 'unknown'}"
    name = " ".join(request.form.get("name", "").split())[:80]
    expected = hashlib.sha256(config.password.encode("utf-8")).digest()
    given = hashlib.sha256(request.form.get("password", "").encode("utf-8")).digest()
    right = hmac.compare_digest(given, expected)
    refusal = _refusal(client, now, known=known is not None, right=right, named=bool(name))
    if refusal:
        return render_template("login.html", next=wanted, error=refusal), 429
    if not right or not name:
        error = "Wrong password." if name else "Say who you are: your name is recorded."
        return render_template("login.html", next=wanted, error=error), 401
    session.clear()  # a fresh session (and CSRF token) on every login
    session.permanent = True
    session["user"] = name
    session["sid"] = secrets.token_urlsafe(18)
    response = redirect(wanted or url_for("dashboard"), 303)
    until = (now + KNOWN_BROWSER_LIFETIME).isoformat()
    response.set_cookie(
        KNOWN_BROWSER_COOKIE,
        _browsers().dumps({"id": known or secrets.token_urlsafe(12), "until": until}),
        max_age=KNOWN_BROWSER_LIFETIME,
        path=url_for("login"),
        secure=config.https,
        httponly=True,
        samesite="Lax",
    )
    return response


def logout() -> Response:
    """End this session for good and go back to the login page."""
    if session.get("sid"):
        console().log_out(str(session["sid"]))
    session.clear()
    return redirect(url_for("login"), 303)


def safe_next(target: str, adapter: MapAdapter) -> str:
    """Return the staff page `target` names, rebuilt from the console's routes; "" for any other.

    The text given never reaches the Location header: a path that matches a GET route behind the
    login is built again from the route and its values (quoted by Werkzeug; the query, which no
    page reads, is dropped). Control, format and space characters are refused before parsing:
    browsers and urllib drop tabs and newlines, which made `/<TAB>/evil.example` go off-site.
    """
    if any(unicodedata.category(char)[0] in "CZ" for char in target) or "\\" in target:
        return ""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return ""
    try:
        endpoint, values = adapter.match(parts.path, method="GET")
    except HTTPException:  # no such page, not a GET page, or a redirect to its other spelling
        return ""
    if endpoint in PUBLIC_ENDPOINTS:
        return ""
    return adapter.build(endpoint, values, method="GET")
