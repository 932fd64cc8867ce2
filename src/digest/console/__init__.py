"""The staff console (`digest serve`): preview, test and send a month's digest from a browser.

A Flask application over the same code the CLI runs: `catalogue.load`, `newsletter`,
`delivery.prepare`/`send_month` (same month lock, same ledger), `transport.choose`. It returns
responses and never prints or exits; `cli.py` reads the environment, builds the `Config` and runs
the server. It never starts the scheduler.

The pages live by group: `auth` (login, logout, lockout, CSRF), `dashboard`, `items` (the
announcements: list, form, live preview, history, revert), `months` (a month,
its issue form, its preview, test copies, the confirmation, the send, its progress and history;
the issue form's reading and telling is `issues`'s) and `public`
(one-click unsubscribe, the built feeds); `state` holds the settings and the sends, `present`
how times, outcomes and errors read.

Security: every staff page needs a login (see `auth`), sessions live in signed cookies
(`HttpOnly`, `SameSite=Lax`, `Secure` when the public URL is https), every form carries a CSRF
token, and every response carries a CSP without inline scripts; the digest preview is the only
page that may be framed (same origin only), and it is served with a CSP `sandbox`.
"""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask, g, render_template, request, session
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from digest.app import wording
from digest.console import (
    auth,
    bounces,
    dashboard,
    items,
    months,
    present,
    public,
    signup,
    subscribers,
)
from digest.console.auth import (
    KNOWN_BROWSER_COOKIE,
    KNOWN_BROWSER_LIFETIME,
    MIN_PASSWORD_LENGTH,
    check_password,
)
from digest.console.state import (
    LOCKOUT,
    MAX_ACCOUNT_FAILURES,
    MAX_FAILURES,
    Config,
    Console,
    Job,
)
from digest.console.web import console_of, local
from digest.send import delivery, unsubscribe

__all__ = [
    "KNOWN_BROWSER_COOKIE",
    "KNOWN_BROWSER_LIFETIME",
    "LOCKOUT",
    "MAX_ACCOUNT_FAILURES",
    "MAX_FAILURES",
    "MIN_PASSWORD_LENGTH",
    "Config",
    "Console",
    "Job",
    "check_password",
    "console_of",
    "create_app",
    "delivery",
    "wait_for_jobs",
]

# Pages of the console: scripts only from our own origin (there are none inline), no plugins, no
# framing, forms post only to us; the editor's live preview fetches from us alone.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# The digest preview: the email's own inline styles and remote images, nothing else; `sandbox`
# gives it an opaque origin, so even a script that slipped past the sanitizer could not run or
# reach the console's cookies. Only the console itself may frame it.
PREVIEW_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'self'"
)
# The built feeds and pages, shown for a local look: their own styles, no scripts.
FEEDS_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "frame-ancestors 'none'"
)
# The templates and the style sheet, beside this package.
HERE = Path(__file__).resolve().parent.parent


def create_app(config: Config) -> Flask:
    """Return the console application for `config`."""
    app = Flask(
        __name__,
        root_path=str(HERE),
        template_folder="templates/console",
        static_folder="static",
        static_url_path="/static",
    )
    app.config.update(
        SECRET_KEY=unsubscribe.derive(config.secret_key, "session"),
        SESSION_COOKIE_NAME="digest_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Over https only, when staff reach the console that way: a plain-http request (a
        # mistyped link, a network that strips TLS) never carries the session.
        SESSION_COOKIE_SECURE=config.https,
        PERMANENT_SESSION_LIFETIME=config.session_lifetime,
        # The editor's form carries a body of up to 100,000 characters (the catalogue's limit),
        # which percent-encoded CJK text makes about 900 KB.
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
    )
    if config.trusted_proxies:
        # Only X-Forwarded-For, and only the entries the named proxies appended: the client's
        # address for counting wrong passwords and for the ledger. Nothing else is taken from
        # the proxy's headers.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.trusted_proxies, x_proto=0
        )
    app.extensions["digest_console"] = Console(config)
    app.after_request(headers)
    app.register_error_handler(HTTPException, error_page)
    app.context_processor(lambda: {"user": session.get("user")})
    app.add_template_global(local, "local")
    app.add_template_global(wording.off_the_list, "off_the_list")
    app.add_template_global(present.of_run, "run_verdict")
    app.add_template_filter(present.commands, "commands")
    for pages in (auth, bounces, dashboard, items, months, public, signup, subscribers):
        pages.register(app)
    return app


def headers(response: Response) -> Response:
    """Add the security headers: the CSP of the kind of page, no framing, no caching."""
    kind = g.get("kind", "page")
    response.headers["X-Content-Type-Options"] = "nosniff"
    # no-referrer: an unsubscribe URL carries its token, and no page needs to be told.
    response.headers["Referrer-Policy"] = "no-referrer"
    if kind == "preview":
        response.headers["Content-Security-Policy"] = PREVIEW_CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
    else:
        response.headers["Content-Security-Policy"] = FEEDS_CSP if kind == "feeds" else PAGE_CSP
        response.headers["X-Frame-Options"] = "DENY"
    if kind != "feeds" and request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def error_page(exc: HTTPException) -> tuple[str, int]:
    """Return an error page titled with what happened, under the status it comes with."""
    return render_template("error.html", error=exc, title=present.title_of(exc)), exc.code or 500


def wait_for_jobs(app: Flask, timeout: float = 30.0) -> None:
    """Wait until no send started from `app` is running (for tests and shutdown)."""
    deadline = time.monotonic() + timeout
    for job in list(console_of(app).jobs.values()):
        if job.thread is not None:
            job.thread.join(max(0.0, deadline - time.monotonic()))
