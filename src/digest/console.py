"""The staff console (`digest serve`): preview, test and send a month's digest from a browser.

A Flask application over the same code the CLI runs: `catalogue.load`, `newsletter`,
`delivery.prepare`/`send_month` (same month lock, same ledger), `transport.choose`. It returns
responses and never prints or exits; `cli.py` reads the environment, builds the `Config` and runs
the server. It never starts the scheduler.

Security: every staff page needs a login (one shared password, compared as SHA-256 digests with
`hmac.compare_digest`), sessions live in signed cookies (`HttpOnly`, `SameSite=Lax`, `Secure` when
the public URL is https), every form carries a CSRF token, and every response carries a CSP
without inline scripts; the digest preview is the only page that may be framed (same origin only),
and it is served with a CSP `sandbox`. After logging in, staff go back only to a console page
rebuilt from the app's own routes, never to the text of `next`.

Wrong passwords are counted per client and for the shared password as a whole (see `Console`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Flask,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from itsdangerous import BadData, URLSafeSerializer
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import MapAdapter
from werkzeug.wrappers import Response

from digest.app.settings import Settings
from digest.errors import CatalogueError, DigestError, Problem
from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue as catalogues
from digest.publish.catalogue import Catalogue
from digest.send import delivery, schedule, subscribers, transport, unsubscribe
from digest.send.ledger import Ledger, SendLock

log = logging.getLogger("digest.console")

# Pages of the console: scripts only from our own origin (there are none inline), no plugins, no
# framing, forms post only to us.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
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
FEED_TYPES = {
    ".atom.xml": "application/atom+xml",
    ".rss.xml": "application/rss+xml",
    ".json": "application/feed+json",
    ".html": "text/html",
}
PUBLIC_ENDPOINTS = {"login", "static", "unsubscribe_page", "unsubscribe_post"}
MAX_TEST_ADDRESSES = 10
# After this many wrong passwords within LOCKOUT from one client (a browser that has logged in
# before, or else an address), that client waits until the oldest is LOCKOUT old.
MAX_FAILURES = 10
LOCKOUT = timedelta(minutes=10)
# After this many wrong passwords within LOCKOUT from browsers that never logged in, however many
# addresses they come from, only browsers that have logged in before may try (see `Console`).
MAX_ACCOUNT_FAILURES = 50
# The cookie that marks a browser which has logged in: it opens nothing, it only lets the browser
# try the password while strangers are refused, and counts its wrong passwords apart.
KNOWN_BROWSER_COOKIE = "digest_known_browser"
KNOWN_BROWSER_LIFETIME = timedelta(days=180)


@dataclass(frozen=True)
class Config:
    """Everything the console needs, read from the command line and environment by cli.py."""

    catalogue_path: Path
    state_path: Path
    feeds_dir: Path
    password: str = field(repr=False)
    secret_key: str = field(repr=False)
    clock: Callable[[], datetime]
    public_url: str | None = None
    smtp_url: str | None = field(default=None, repr=False)
    smtp_password: str | None = field(default=None, repr=False)
    session_lifetime: timedelta = timedelta(hours=12)
    # How many reverse proxies in front append to X-Forwarded-For; 0 ignores the header.
    trusted_proxies: int = 0
    outbox: Path = Path("outbox")

    @classmethod
    def of(cls, settings: Settings, feeds_dir: Path, clock: Callable[[], datetime]) -> Config:
        """Return the console's configuration from the installation's settings, checked."""
        if not settings.console_password:
            raise DigestError(
                "DIGEST_CONSOLE_PASSWORD is not set: the console sends email to the whole list "
                "and refuses to start without a password; set DIGEST_CONSOLE_PASSWORD to a long "
                "passphrase"
            )
        if settings.secret_key or settings.public_url:
            secret = settings.secret("The console needs a secret key:")
        else:
            # Nothing signed with it outlives this process (no unsubscribe links go out without
            # DIGEST_PUBLIC_URL), so a key made now is safe; only logins end with a restart.
            secret = secrets.token_urlsafe(32)
        return cls(
            catalogue_path=settings.catalogue_path,
            state_path=settings.state_path,
            feeds_dir=feeds_dir,
            password=settings.console_password,
            secret_key=secret,
            clock=clock,
            public_url=settings.public_url,
            smtp_url=settings.smtp_url,
            smtp_password=settings.smtp_password,
            trusted_proxies=settings.trusted_proxies,
            outbox=settings.outbox,
        )

    @property
    def https(self) -> bool:
        """Return whether staff reach the console over https (its cookies are then `Secure`)."""
        return self.public_url is not None and urlsplit(self.public_url).scheme == "https"

    def transport(self, month: Month, *, test: bool = False) -> transport.Transport:
        """Return where this console's messages go (the same choice as the CLI's)."""
        return transport.choose(
            self.smtp_url, self.smtp_password, str(month), test=test, outbox=self.outbox
        )

    @property
    def links(self) -> unsubscribe.Links:
        """Return the unsubscribe token maker of this installation."""
        return unsubscribe.Links(self.secret_key, self.public_url)

    def one_click(self) -> Callable[[str], str] | None:
        """Return the one-click URL maker for emails, when the console is reachable publicly."""
        return self.links.url if self.public_url else None


@dataclass
class Job:
    """A send of one month started from the console, running in a background thread."""

    month: Month
    started_by: str
    transport: str
    started_at: datetime
    state: str = "starting"  # starting, sending, done, failed
    total: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    already: int = 0
    message: str = ""
    problems: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Return whether the send has not finished yet."""
        return self.state in ("starting", "sending")

    @property
    def done(self) -> int:
        """Return how many recipients this run has dealt with so far."""
        return self.sent + self.failed + self.deferred

    def record(self, outcome: delivery.Outcome) -> None:
        """Count one recipient's outcome (called from the sending thread)."""
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        if outcome.status != "sent":
            code = f"{outcome.code} " if outcome.code else ""
            self.problems.append(f"{outcome.status}: {outcome.address}: {code}{outcome.reply}")


class Console:
    """The console's state: its configuration, the sends it started and recent wrong passwords.

    Wrong passwords are counted per client: a browser that logged in before (it carries a signed
    known-browser cookie) is counted by itself, any other by its address. MAX_FAILURES within
    LOCKOUT lock that client alone. There is one account, the shared password (the name is free
    text, so it is no account: counting per name would let an attacker lock out "Ada" by name and
    guess freely under other names). For it, wrong passwords from strangers (browsers that never
    logged in) are counted together: at MAX_ACCOUNT_FAILURES within LOCKOUT, strangers are refused
    without their password being checked, whatever their address, until the count falls back.
    Browsers that have logged in before still log in, so an attacker with many addresses gets at
    most MAX_ACCOUNT_FAILURES guesses per LOCKOUT and still cannot lock the staff out; behind a
    proxy whose address every client shares, the staff's browsers keep working too.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.jobs: dict[Month, Job] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.failures: dict[str, list[datetime]] = {}
        self.stranger_failures: list[datetime] = []
        # Held while a login is checked and counted, so that parallel guesses all count.
        self.guesses = threading.Lock()
        self.retry_policy: delivery.RetryPolicy | None = None  # None: delivery's default
        # Sessions logged out before they expired: a copy of the cookie opens nothing. Kept in the
        # ledger too, so that a restart with the same key does not bring them back.
        ledger = _open_ledger(config.state_path)
        try:
            self.logged_out = ledger.logouts(config.clock()) if ledger else set()
        finally:
            if ledger is not None:
                ledger.close()

    def log_out(self, session_id: str) -> None:
        """End `session_id` for good, here and in the ledger."""
        self.logged_out.add(session_id)
        ledger = Ledger(self.config.state_path)
        try:
            now = self.config.clock()
            ledger.record_logout(session_id, now, now + self.config.session_lifetime)
        finally:
            ledger.close()

    def start(self, month: Month, started_by: str) -> Job:
        """Start sending `month` in the background; raise DigestError if it cannot start now."""
        with self.lock:
            running = self.jobs.get(month)
            if running is not None and running.running:
                raise DigestError(
                    f"A send of {month.label} is already running, started by "
                    f"{running.started_by} at {_local_time(running.started_at)}; "
                    "wait for it to finish."
                )
            # A send from the CLI or the scheduler holds the same lock: say so now, not later.
            probe = SendLock(self.config.state_path, str(month))
            probe.acquire(f"digest serve, checked by {started_by}")
            probe.release()
            chosen = self.config.transport(month)
            job = Job(month, started_by, chosen.describe(), self.config.clock())
            job.thread = threading.Thread(
                target=self._run, args=(job, chosen), name=f"send-{month}", daemon=True
            )
            self.jobs[month] = job
            job.thread.start()
            return job

    def _run(self, job: Job, chosen: transport.Transport) -> None:
        config = self.config
        ledger: Ledger | None = None
        try:
            catalogue = catalogues.load(config.catalogue_path)
            listed, _ = subscribers.of_catalogue(catalogue)
            ledger = Ledger(config.state_path)

            def confirm(plan: delivery.Send) -> bool:
                job.total = len(plan.todo)
                job.already = plan.already
                job.state = "sending"
                return True  # the person confirmed on the page before this thread started

            result = delivery.send_month(
                catalogue,
                listed,
                job.month,
                ledger,
                chosen,
                now=config.clock(),
                clock=config.clock,
                holder=f"digest serve, started by {job.started_by}",
                confirm=confirm,
                progress=job.record,
                stop=self.stop,
                policy=self.retry_policy,
                unsubscribe=config.one_click(),
            )
        except DigestError as exc:
            job.message = str(exc)
            job.state = "failed"
            return
        except Exception as exc:  # a bug: the page must say so rather than spin for ever
            log.exception("the send of %s failed", job.month)
            job.message = f"The send stopped on an unexpected error: {exc!r}"
            job.state = "failed"
            return
        finally:
            if ledger is not None:
                ledger.close()
        label = job.month.label
        if result.kind == "already sent":
            job.message = f"{label} was already sent to everyone: nothing to send."
        elif result.kind == "no readers":
            job.message = f"No subscriber has items in {label}: nothing to send."
        elif result.kind == "no items":
            job.message = f"No items in {label}: nothing to send."
        elif result.summary is not None:
            summary = result.summary
            job.message = (
                f"{label}: sent {summary.sent}, already sent {summary.already}, deferred "
                f"{summary.deferred}, failed {summary.failed} (via {job.transport})."
            )
            if summary.held and summary.held_until is not None:
                job.message += (
                    f" {summary.held} held by the relay's daily limit: they can go from "
                    f"{_local_time(summary.held_until)}; send again then."
                )
        job.state = "done"

    def shutdown(self, timeout: float = 60.0) -> list[Month]:
        """Stop running sends after their message in flight, wait for them; return their months."""
        running = [job for job in self.jobs.values() if job.running]
        self.stop.set()
        for job in running:
            if job.thread is not None:
                job.thread.join(timeout)
        return [job.month for job in running]

    def locked_out(self, client: str, now: datetime) -> bool:
        """Return whether `client` has guessed wrong too often lately."""
        recent = [t for t in self.failures.pop(client, []) if now - t < LOCKOUT]
        if recent:
            self.failures[client] = recent
        return len(recent) >= MAX_FAILURES

    def strangers_refused(self, now: datetime) -> bool:
        """Return whether browsers that never logged in have guessed wrong too often lately."""
        self.stranger_failures = [t for t in self.stranger_failures if now - t < LOCKOUT]
        return len(self.stranger_failures) >= MAX_ACCOUNT_FAILURES

    def count_failure(self, client: str, now: datetime, *, known: bool) -> None:
        """Count a wrong password from `client` (`known`: a browser that has logged in before)."""
        self.failures.setdefault(client, []).append(now)
        if not known:
            self.stranger_failures.append(now)
            if len(self.stranger_failures) == MAX_ACCOUNT_FAILURES:
                log.warning(
                    "%d wrong passwords from browsers that never logged in within %d minutes: "
                    "until they age out, only browsers that have logged in before may try",
                    MAX_ACCOUNT_FAILURES,
                    LOCKOUT.seconds // 60,
                )
        if len(self.failures[client]) == MAX_FAILURES:
            log.warning(
                "%d wrong passwords within %d minutes from %s: refused until they age out",
                MAX_FAILURES,
                LOCKOUT.seconds // 60,
                client,
            )
        if len(self.failures) > 1000:  # many addresses: forget those whose failures aged out
            for other in list(self.failures):
                self.locked_out(other, now)


def create_app(config: Config) -> Flask:
    """Return the console application for `config`."""
    app = Flask(
        __name__,
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
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if config.trusted_proxies:
        # Only X-Forwarded-For, and only the entries the named proxies appended: the client's
        # address for counting wrong passwords and for the ledger. Nothing else is taken from
        # the proxy's headers.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.trusted_proxies, x_proto=0
        )
    console = Console(config)
    app.extensions["digest_console"] = console
    expected = hashlib.sha256(config.password.encode("utf-8")).digest()
    browsers = URLSafeSerializer(unsubscribe.derive(config.secret_key, "known browser"))

    def known_browser(now: datetime) -> str | None:
        """Return the id of this browser if it has logged in here before (and lately)."""
        try:
            found = browsers.loads(request.cookies.get(KNOWN_BROWSER_COOKIE, ""))
            until = datetime.fromisoformat(found["until"])
            return str(found["id"]) if now < until else None
        except (BadData, KeyError, TypeError, ValueError):
            return None

    @app.before_request
    def guard() -> Response | None:
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return None
        if not session.get("user") or session.get("sid") in console.logged_out:
            session.clear()
            if request.method == "GET":
                return redirect(url_for("login", next=request.full_path.rstrip("?")), 303)
            return redirect(url_for("login"), 303)
        return None

    @app.before_request
    def csrf() -> None:
        if request.method != "POST" or request.endpoint in ("unsubscribe_post", None):
            return
        given = request.form.get("csrf_token", "")
        wanted = session.get("csrf", "")
        if not given or not wanted or not hmac.compare_digest(given, wanted):
            abort(403, "The form's security token is missing or old: reload the page and retry.")

    @app.context_processor
    def helpers() -> dict[str, Any]:
        return {"csrf_token": _csrf_token, "user": session.get("user"), "local": _local_time}

    @app.after_request
    def headers(response: Response) -> Response:
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

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        return render_template("error.html", error=exc), exc.code or 500

    # -- login -------------------------------------------------------------------------------

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response | str | tuple[str, int]:
        routes = app.url_map.bind_to_environ(request.environ)
        wanted = _safe_next(request.values.get("next", ""), routes)
        if request.method == "GET":
            return render_template("login.html", next=wanted, error=None)
        now = config.clock()
        known = known_browser(now)
        client = f"browser {known}" if known else f"address {request.remote_addr or 'unknown'}"
        name = " ".join(request.form.get("name", "").split())[:80]
        given = hashlib.sha256(request.form.get("password", "").encode("utf-8")).digest()
        right = hmac.compare_digest(given, expected)
        with console.guesses:  # checked and counted in one step: parallel guesses all count
            refusal = None
            if console.locked_out(client, now):
                refusal = "Too many wrong passwords: wait ten minutes, then try again."
            elif not known and console.strangers_refused(now):
                refusal = (
                    "Too many wrong passwords from browsers that have not logged in here before: "
                    "for now only browsers that have may log in. Wait ten minutes, or use such a "
                    "browser."
                )
            elif name and not right:
                console.count_failure(client, now, known=known is not None)
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
            browsers.dumps({"id": known or secrets.token_urlsafe(12), "until": until}),
            max_age=KNOWN_BROWSER_LIFETIME,
            path=url_for("login"),
            secure=config.https,
            httponly=True,
            samesite="Lax",
        )
        return response

    @app.post("/logout")
    def logout() -> Response:
        if session.get("sid"):
            console.log_out(str(session["sid"]))
        session.clear()
        return redirect(url_for("login"), 303)

    # -- dashboard ---------------------------------------------------------------------------

    @app.get("/")
    def dashboard() -> str:
        now = config.clock()
        loaded, problems = _load(config.catalogue_path)
        context: dict[str, Any] = {"problems": problems, "catalogue": loaded, "now": now}
        context["listed"], context["list_problems"], context["list_name"] = None, [], None
        context["next_run"] = None
        context["months"] = []
        ledger = _open_ledger(config.state_path)
        try:
            context["runs"] = ledger.runs(limit=10) if ledger else []
            context["suppressed"] = len(ledger.suppressed()) if ledger else 0
            sent = {m.month: m for m in ledger.months()} if ledger else {}
        finally:
            if ledger is not None:
                ledger.close()
        if loaded is not None:
            context["counts"] = loaded.counts(now)
            tz = loaded.publication.tz
            per_month: dict[Month, int] = {}
            for item in loaded.published(now):
                month = Month.of(item.date, tz)
                per_month[month] = per_month.get(month, 0) + 1
            context["months"] = [
                (month, count, sent.get(str(month)))
                for month, count in sorted(per_month.items(), reverse=True)
            ]
            if loaded.newsletter is not None:
                try:
                    listed, shown = subscribers.of_catalogue(loaded)
                    context["listed"], context["list_name"] = listed, shown
                except CatalogueError as exc:
                    context["list_problems"] = list(exc.problems)
                upcoming = schedule.next_runs(loaded.newsletter.schedule, tz, now, 1)
                if upcoming:
                    context["next_run"] = (upcoming[0], schedule.month_of_run(upcoming[0], tz))
        context["jobs"] = [job for job in console.jobs.values() if job.running]
        context["elsewhere"] = _sends_elsewhere(config.state_path, context["jobs"])
        return render_template("dashboard.html", **context)

    # -- one month ---------------------------------------------------------------------------

    @app.get("/months/<month>")
    def month_view(month: str) -> str:
        chosen_month = _month(month)
        loaded = _require_catalogue(config.catalogue_path)
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
            job=console.jobs.get(chosen_month),
        )

    @app.get("/months/<month>/preview")
    def preview(month: str) -> Response:
        chosen_month = _month(month)
        loaded = _require_catalogue(config.catalogue_path)
        chosen = newsletter.issue(loaded, chosen_month, config.clock())
        if not chosen.items or loaded.newsletter is None:
            abort(404, f"There is no digest for {chosen_month.label}.")
        rendered = newsletter.Renderer(loaded).render(chosen)
        page, _ = rendered.personalise(None, loaded.newsletter.unsubscribe)
        g.kind = "preview"
        return Response(page, mimetype="text/html")

    @app.post("/months/<month>/test")
    def send_test(month: str) -> Response:
        chosen_month = _month(month)
        back = redirect(url_for("month_view", month=str(chosen_month)), 303)
        raw = request.form.get("addresses", "")
        try:
            addresses = _addresses(raw)
        except ValueError as exc:
            flash(str(exc), "error")
            return back
        loaded = _require_catalogue(config.catalogue_path)
        chosen = newsletter.issue(loaded, chosen_month, config.clock())
        if not chosen.items:
            flash(f"No items in {chosen_month.label}: nothing to send.", "error")
            return back
        try:
            via = config.transport(chosen_month, test=True)
            failures = delivery.send_tests(
                loaded, chosen, addresses, via, config.clock(), config.one_click()
            )
        except DigestError as exc:
            flash(f"Not sent: {exc}", "error")
            return back
        sent = len(addresses) - len(failures)
        copies = "1 test copy" if sent == 1 else f"{sent} test copies"
        log.info("%s sent %s of %s via %s", session["user"], copies, chosen_month, via.describe())
        flash(
            f"Sent {copies} of {chosen_month.label} to "
            f"{', '.join(a for a in addresses if not any(f.startswith(a + ':') for f in failures))}"
            f" ([TEST] in the subject, not recorded) via {via.describe()}.",
            "ok" if sent else "error",
        )
        for failure in failures:
            flash(f"Not sent: {failure}", "error")
        return back

    @app.get("/months/<month>/send")
    def confirm_send(month: str) -> str | tuple[str, int]:
        return _confirmation(_month(month))

    def _confirmation(chosen_month: Month, refusal: str | None = None) -> tuple[str, int]:
        loaded = _require_catalogue(config.catalogue_path)
        plan = error = None
        suppressed = 0
        try:
            listed, _ = subscribers.of_catalogue(loaded)
            ledger = Ledger(config.state_path)
            try:
                suppressed = len(ledger.suppressed())
                plan = delivery.prepare(
                    loaded, listed, chosen_month, ledger, config.clock(), write=False
                )
            finally:
                ledger.close()
        except DigestError as exc:
            error = str(exc)
        page = render_template(
            "confirm.html",
            month=chosen_month,
            plan=plan,
            error=error,
            refusal=refusal,
            suppressed=suppressed,
            transport=config.transport(chosen_month).describe(),
            job=console.jobs.get(chosen_month),
        )
        return page, 409 if refusal else 200

    @app.post("/months/<month>/send")
    def start_send(month: str) -> Response | tuple[str, int]:
        chosen_month = _month(month)
        try:
            job = console.start(chosen_month, _who())
        except DigestError as exc:
            return _confirmation(chosen_month, str(exc))
        log.info("%s started sending %s via %s", job.started_by, chosen_month, job.transport)
        return redirect(url_for("progress", month=str(chosen_month)), 303)

    @app.post("/months/<month>/retry")
    def retry(month: str) -> Response | tuple[str, int]:
        # The same send: it goes through every row not yet sent, deferred ones included.
        return start_send(month)

    @app.get("/months/<month>/progress")
    def progress(month: str) -> Response | str:
        chosen_month = _month(month)
        job = console.jobs.get(chosen_month)
        if job is None:
            return redirect(url_for("history", month=str(chosen_month)), 303)
        return render_template("progress.html", month=chosen_month, job=job)

    @app.get("/months/<month>/history")
    def history(month: str) -> str:
        chosen_month = _month(month)
        key = str(chosen_month)
        ledger = _open_ledger(config.state_path)
        try:
            months = ledger.months() if ledger else []
            counts = next((m.counts for m in months if m.month == key), None)
            runs = ledger.runs(key) if ledger else []
            problems = ledger.deliveries(key, ("failed", "deferred")) if ledger else []
            gone = ledger.suppressed() if ledger else set()
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
        job = console.jobs.get(chosen_month)
        # A send from `digest send` or the scheduler: the ledger's counts are its progress.
        elsewhere = None if job and job.running else SendLock.holder(config.state_path, key)
        return render_template(
            "history.html",
            month=chosen_month,
            counts=counts,
            runs=runs,
            problems=problems,
            waiting=len(waiting),
            job=job,
            elsewhere=elsewhere,
        )

    # -- the built feeds, for a local look -----------------------------------------------------

    @app.get("/feeds/")
    @app.get("/feeds/<path:name>")
    def feeds(name: str = "index.html") -> Response:
        g.kind = "feeds"
        mimetype = next(
            (kind for suffix, kind in FEED_TYPES.items() if name.endswith(suffix)), None
        )
        if mimetype is None:
            abort(404)
        directory = config.feeds_dir.resolve()
        response = send_from_directory(
            directory, name, mimetype=mimetype, conditional=True, etag=True, max_age=0
        )
        response.headers["Content-Type"] = f"{mimetype}; charset=utf-8"
        return response

    # -- one-click unsubscribe (RFC 8058): no login, the token is the credential ------------------

    @app.get("/unsubscribe/<token>")
    def unsubscribe_page(token: str) -> tuple[str, int]:
        address = config.links.address(token)
        if address is None:
            return render_template("unsubscribe.html", address=None, done=False), 400
        return render_template("unsubscribe.html", address=address, done=False, token=token), 200

    @app.post("/unsubscribe/<token>")
    def unsubscribe_post(token: str) -> tuple[str, int]:
        address = config.links.address(token)
        if address is None:
            return render_template("unsubscribe.html", address=None, done=False), 400
        ledger = Ledger(config.state_path)
        try:
            ledger.suppress(address, "one-click")
        finally:
            ledger.close()
        log.info("unsubscribed with one click: %s", address)
        return render_template("unsubscribe.html", address=address, done=True), 200

    return app


def _sends_elsewhere(state_path: Path, jobs: list[Job]) -> list[tuple[Month, str]]:
    """Return the months being sent now by `digest send` or the scheduler, with who sends them."""
    ours = {str(job.month) for job in jobs}
    found = []
    for month, holder in SendLock.held(state_path):
        with contextlib.suppress(ValueError):  # a file there that digest did not name
            if month not in ours:
                found.append((Month.parse(month), holder))
    return found


def console_of(app: Flask) -> Console:
    """Return the Console state behind `app`."""
    found: Console = app.extensions["digest_console"]
    return found


def _csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def _who() -> str:
    return f"{session.get('user', 'someone')} (from {request.remote_addr or 'unknown'})"


def _safe_next(target: str, adapter: MapAdapter) -> str:
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


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError:
        abort(404)


def _load(path: Path) -> tuple[Catalogue | None, list[Problem]]:
    try:
        return catalogues.load(path), []
    except CatalogueError as exc:
        return None, list(exc.problems)


def _require_catalogue(path: Path) -> Catalogue:
    loaded, problems = _load(path)
    if loaded is None:
        first = str(problems[0]) if problems else f"{path} does not load"
        abort(409, f"The catalogue has errors; fix them first (see the dashboard): {first}")
    return loaded


def _open_ledger(path: Path) -> Ledger | None:
    """Open the ledger if it exists: looking at the console never creates one."""
    return Ledger(path) if path.exists() else None


def _addresses(raw: str) -> tuple[str, ...]:
    """Read the test form's addresses (separated by commas, semicolons or white space)."""
    from email_validator import EmailNotValidError, validate_email

    found = [part for part in re.split(r"[\s,;]+", raw) if part]
    if not found:
        raise ValueError("Give at least one address to send the test copy to.")
    if len(found) > MAX_TEST_ADDRESSES:
        raise ValueError(f"At most {MAX_TEST_ADDRESSES} test addresses at a time.")
    checked = []
    for value in found:
        try:
            checked.append(validate_email(value, check_deliverability=False).normalized)
        except EmailNotValidError as exc:
            raise ValueError(f"{value!r} is not an email address: {exc}") from exc
    return tuple(dict.fromkeys(checked))


def _local_time(moment: datetime | str) -> str:
    """Return a time as people read it: 2025-12-01 09:00 UTC (ledger stamps are UTC)."""
    if isinstance(moment, str):
        return moment.replace("T", " ")[:16] + " UTC"
    if moment.utcoffset() == timedelta(0):
        return f"{moment:%Y-%m-%d %H:%M} UTC"
    offset = moment.isoformat(timespec="minutes")[-6:]
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()} ({offset})"


def wait_for_jobs(app: Flask, timeout: float = 30.0) -> None:
    """Wait until no send started from `app` is running (for tests and shutdown)."""
    deadline = time.monotonic() + timeout
    for job in list(console_of(app).jobs.values()):
        if job.thread is not None:
            job.thread.join(max(0.0, deadline - time.monotonic()))
