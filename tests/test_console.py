"""The staff console through Flask's test client: login, CSRF, headers, sends, unsubscribe."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from subprocess import Popen
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit
from zoneinfo import ZoneInfo

import lxml.html
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from conftest import SmtpServer, free_port
from digest import console
from digest.cli import cli
from digest.months import Month
from digest.send import unsubscribe
from digest.send.ledger import Ledger, SendLock
from helpers import NOW
from pgserver import PostgreSQL

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"  # noqa: S105 -- the tests' own
SECRET = "s" * 40
MONTH = "2025-11"
PUBLIC_ENDPOINTS = {
    "login", "static", "unsubscribe_page", "unsubscribe_post", *console.signup.ENDPOINTS,
}  # fmt: skip
# The bundled November readers (smith.john's categories have no November items).
READERS = 11
Spawn = Callable[..., Popen[str]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled catalogue, subscriber list and feeds in tmp_path, the working directory."""
    for name in ("DIGEST_SMTP_URL", "DIGEST_SMTP_PASSWORD", "DIGEST_STATE", "DIGEST_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_config(project: Path, **changes: object) -> console.Config:
    config = console.Config(
        # Relative, as people type them: the project is the working directory.
        catalogue_path=Path("items.yaml"),
        state_path=Path(".digest/state.sqlite3"),
        feeds_dir=Path("feeds"),
        password=PASSWORD,
        secret_key=SECRET,
        clock=lambda: NOW,
    )
    return replace(config, **changes)  # type: ignore[arg-type]


@pytest.fixture
def app(project: Path) -> Iterator[Flask]:
    """The console over the project, sending to outbox/."""
    made = console.create_app(make_config(project))
    yield made
    console.wait_for_jobs(made)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def log_in(client: FlaskClient, password: str = PASSWORD, name: str = "Ada") -> int:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"csrf_token": token, "name": name, "password": password, "next": ""}
    )
    return response.status_code


@pytest.fixture
def staff(app: Flask) -> FlaskClient:
    """A client logged in as Ada."""
    client = app.test_client()
    assert log_in(client) == 303
    return client


def token_of(client: FlaskClient, path: str = "/") -> str:
    return csrf_of(client.get(path).get_data(as_text=True))


def staff_urls(app: Flask) -> list[tuple[str, str]]:
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        path = rule.rule.replace("<month>", MONTH).replace("<path:name>", "all.atom.xml")
        path = path.replace("<item_id>", "medical-school-preparations").replace("<int:number>", "1")
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            urls.append((method, path))
    return urls


def test_every_staff_route_needs_a_login(app: Flask) -> None:
    """Nobody who has not logged in sees a staff page or starts anything."""
    client = app.test_client()
    urls = staff_urls(app)
    assert ("POST", f"/months/{MONTH}/send") in urls
    assert ("GET", "/feeds/<path:name>".replace("<path:name>", "all.atom.xml")) in urls
    for method, path in urls:
        response = client.open(path, method=method)
        assert response.status_code == 303, (method, path)
        assert response.headers["Location"].startswith("/login"), (method, path)
    assert not Path(".digest").exists()


def test_post_without_csrf_token_is_refused(staff: FlaskClient) -> None:
    """A page on another site cannot make a logged-in browser send the digest."""
    for data in ({}, {"csrf_token": "forged"}):
        response = staff.post(f"/months/{MONTH}/send", data=data)
        assert response.status_code == 403
        assert "security token" in response.get_data(as_text=True)
    assert staff.post("/logout").status_code == 403
    assert not Path("outbox").exists()
    assert not Path(".digest").exists()


def test_logout_ends_the_session_for_every_copy_of_its_cookie(project: Path, app: Flask) -> None:
    """A cookie copied before logging out opens nothing afterwards, nor after a restart."""
    client = app.test_client()
    log_in(client)
    cookie = client.get_cookie("digest_console")
    assert cookie is not None
    copy = app.test_client()
    copy.set_cookie("digest_console", cookie.value)
    assert copy.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": token_of(client)}).status_code == 303
    refused = copy.get("/")
    assert refused.status_code == 303
    assert refused.headers["Location"].startswith("/login")
    restarted = console.create_app(make_config(project)).test_client()
    restarted.set_cookie("digest_console", cookie.value)
    assert restarted.get("/").status_code == 303
    # Logging in again gives a new session, which works.
    assert log_in(copy) == 303
    assert copy.get("/").status_code == 200


def test_login_without_csrf_token_is_refused(app: Flask) -> None:
    """Another site cannot log a browser in to the console behind the staff's back."""
    client = app.test_client()
    response = client.post("/login", data={"name": "Eve", "password": PASSWORD})
    assert response.status_code == 403


def test_wrong_password_is_refused(app: Flask) -> None:
    """A wrong password opens nothing and says so."""
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"csrf_token": token, "name": "Eve", "password": "x"})
    assert response.status_code == 401
    assert "Wrong password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 303


def test_repeated_wrong_passwords_lock_the_client_out(app: Flask) -> None:
    """Guessing the password by trying many is stopped, even when the right one comes at last."""
    client = app.test_client()
    for _ in range(console.MAX_FAILURES):
        assert log_in(client, "guess") == 401
    assert log_in(client) == 429


class Clock:
    """The console's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def browser_at(app: Flask, address: str = "127.0.0.1", forwarded: str | None = None) -> FlaskClient:
    """A browser with no cookies yet, connecting from `address` (with X-Forwarded-For if given)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    if forwarded is not None:
        client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded
    return client


def try_password(client: FlaskClient, password: str = PASSWORD) -> tuple[int, str]:
    """Log in with `password`; return the status and the page's text."""
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"csrf_token": token, "name": "Ada", "password": password}
    )
    return response.status_code, response.get_data(as_text=True)


def log_out(client: FlaskClient) -> None:
    assert client.post("/logout", data={"csrf_token": token_of(client)}).status_code == 303


def test_forwarded_for_is_ignored_without_a_trusted_proxy(project: Path) -> None:
    """Without DIGEST_TRUSTED_PROXIES, a guesser cannot dodge the lockout with a made-up header."""
    app = console.create_app(make_config(project))
    for n in range(console.MAX_FAILURES):
        assert log_in(browser_at(app, forwarded=f"192.0.2.{n}"), "guess") == 401
    assert log_in(browser_at(app, forwarded="192.0.2.200")) == 429


def test_behind_one_trusted_proxy_each_forwarded_client_is_counted_alone(project: Path) -> None:
    """Behind the proxy, one guesser's lockout does not shut out the staff, and sends say who."""
    app = console.create_app(make_config(project, trusted_proxies=1))
    # The guesser makes up earlier entries; the proxy appends the address it saw, 192.0.2.1.
    for n in range(console.MAX_FAILURES):
        assert log_in(browser_at(app, forwarded=f"198.51.100.{n}, 192.0.2.1"), "guess") == 401
    assert log_in(browser_at(app, forwarded="198.51.100.99, 192.0.2.1")) == 429
    staff = browser_at(app, forwarded="192.0.2.2")
    assert log_in(staff) == 303
    assert start_send(staff) == 303
    console.wait_for_jobs(app)
    history = staff.get(f"/months/{MONTH}/history").get_data(as_text=True)
    assert "digest serve, started by Ada (from 192.0.2.2)" in history


def test_a_shared_proxy_address_does_not_lock_out_browsers_that_logged_in_before(
    project: Path,
) -> None:
    """Behind a proxy not named in the settings, ten wrong guesses do not lock out the staff."""
    app = console.create_app(make_config(project))
    staff = browser_at(app)
    assert log_in(staff) == 303
    log_out(staff)
    for _ in range(console.MAX_FAILURES):
        assert log_in(browser_at(app), "guess") == 401
    assert log_in(browser_at(app)) == 429  # a browser new to the console waits
    assert log_in(staff) == 303


def test_guesses_from_many_addresses_refuse_only_browsers_new_to_the_console(
    project: Path,
) -> None:
    """Guessing from many addresses soon stops, and staff who logged in before still get in."""
    clock = Clock()
    app = console.create_app(make_config(project, clock=clock))
    staff = browser_at(app, "127.0.0.2")
    assert log_in(staff) == 303
    log_out(staff)
    for n in range(console.MAX_ACCOUNT_FAILURES - 1):
        assert log_in(browser_at(app, f"127.0.1.{n}"), "guess") == 401
    assert log_in(browser_at(app, "127.0.2.1")) == 303  # below the limit, anyone may try
    assert log_in(browser_at(app, "127.0.1.250"), "guess") == 401
    status, page = try_password(browser_at(app, "127.0.2.2"))
    assert status == 429
    assert "only browsers that have may log in. Wait ten minutes" in page
    assert log_in(staff) == 303
    log_out(staff)
    clock.now += console.LOCKOUT
    assert log_in(browser_at(app, "127.0.2.2")) == 303
    # A browser's mark lasts KNOWN_BROWSER_LIFETIME from its last login, then it is new again.
    clock.now = NOW + console.KNOWN_BROWSER_LIFETIME
    for n in range(console.MAX_ACCOUNT_FAILURES):
        assert log_in(browser_at(app, f"127.0.3.{n}"), "guess") == 401
    assert log_in(staff) == 429


def test_a_browser_that_logged_in_before_has_its_own_limit(project: Path) -> None:
    """A stolen or forged browser mark gives a guesser no more tries than an address has."""
    clock = Clock()
    app = console.create_app(make_config(project, clock=clock))
    staff = browser_at(app)
    assert log_in(staff) == 303
    log_out(staff)
    for _ in range(console.MAX_FAILURES):
        assert log_in(staff, "guess") == 401
    assert log_in(staff) == 429
    assert log_in(browser_at(app)) == 303  # its failures were its own, not its address's
    mark = staff.get_cookie(console.KNOWN_BROWSER_COOKIE, path="/login")
    assert mark is not None
    for forged in ("forged", mark.value[:-2] + "xx", mark.value.replace(".", "A.", 1)):
        guesser = browser_at(app, "127.0.0.5")
        guesser.set_cookie(console.KNOWN_BROWSER_COOKIE, forged, path="/login")
        for _ in range(console.MAX_FAILURES):
            assert log_in(guesser, "guess") == 401
        assert log_in(browser_at(app, "127.0.0.5")) == 429  # counted as its address
        clock.now += console.LOCKOUT
    assert log_in(staff) == 303


def test_login_leads_back_to_the_page_asked_for_but_never_off_site(app: Flask) -> None:
    """After logging in, staff land where they were going; a crafted link cannot send them away."""
    client = app.test_client()
    assert client.get(f"/months/{MONTH}").headers["Location"] == f"/login?next=/months/{MONTH}"
    token = csrf_of(client.get("/login").get_data(as_text=True))
    for target, landing in ((f"/months/{MONTH}", f"/months/{MONTH}"), ("//evil.example", "/")):
        response = client.post(
            "/login",
            data={"csrf_token": token, "name": "Ada", "password": PASSWORD, "next": target},
        )
        assert response.headers["Location"] == landing
        token = token_of(client)


HOSTILE_NEXT = [
    # Werkzeug's redirect drops tabs and newlines: `//evil.example`, or a 500 on CR and LF.
    "/%09/evil.example",
    "/%0d/evil.example",
    "/%0a/evil.example",
    "/%0d%0aSet-Cookie:%20digest_console=forged",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "/%5cevil.example",
    "/%2f%2fevil.example",
    "/%252f%252fevil.example",
    "https://evil.example",
    "https:evil.example",
    "javascript:alert(1)",
    "%20/x",
    "/%00",
    "/%0b/evil.example",
    "/%7f/evil.example",
    "/login?next=//evil.example",
    "/static/console.css",
    "/month/2025-11",
    # Unicode: no-break and ideographic spaces, NEL, line separator, right-to-left override,
    # fullwidth and division slashes and backslash, all of which some parser maps or drops.
    "/%C2%A0/evil.example",
    "/%E3%80%80/evil.example",
    "/%C2%85/evil.example",
    "/%E2%80%A8/evil.example",
    "/%E2%80%AE/evil.example",
    "/%EF%BC%8F%EF%BC%8Fevil.example",
    "%EF%BC%8F%EF%BC%8Fevil.example",
    "/%E2%88%95evil.example",
    "/%EF%BC%BCevil.example",
]


def log_in_next(client: FlaskClient, raw: str) -> tuple[str, str]:
    """Follow a login link carrying `next=raw`; return the form's hidden next and the Location."""
    page = client.get(f"/login?next={raw}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    hidden = re.search(r'name="next" value="([^"]*)"', html)
    assert hidden is not None
    response = client.post(
        "/login",
        data={"csrf_token": csrf_of(html), "name": "Ada", "password": PASSWORD, "next": hidden[1]},
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    return hidden[1], response.headers["Location"]


def assert_stays_on_the_console(client: FlaskClient, location: str) -> None:
    """Assert that `location` is a console page, wherever a browser or urllib would resolve it."""
    parts = urlsplit(location)
    assert not parts.scheme, location
    assert not parts.netloc, location
    assert parts.path.startswith("/"), location
    assert not parts.path.startswith(("//", "/\\")), location
    assert all(" " < char < "\x7f" for char in location), location  # nothing left to drop or map
    assert urlsplit(urljoin("https://digest.example.edu/login", location)).netloc == (
        "digest.example.edu"
    )
    assert client.get(location).status_code == 200, location


@pytest.mark.parametrize("raw", HOSTILE_NEXT)
def test_login_never_leads_off_site_whatever_next_says(app: Flask, raw: str) -> None:
    """A crafted login link cannot send staff to another site after they log in, nor fail."""
    client = app.test_client()
    hidden, location = log_in_next(client, raw)
    assert_stays_on_the_console(client, location)
    assert location == "/"
    assert hidden == ""
    # The same value posted with the form (the hidden field edited) gets the same answer.
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={"csrf_token": token, "name": "Ada", "password": PASSWORD, "next": unquote(raw)},
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize(
    "raw",
    ["/", f"/months/{MONTH}", f"/months/{MONTH}/history", "/feeds/all.atom.xml", "/feeds/"],
)
def test_login_leads_back_to_any_staff_page(app: Flask, raw: str) -> None:
    """Staff who followed a link to a console page land on it once they have logged in."""
    client = app.test_client()
    hidden, location = log_in_next(client, quote(raw))
    assert hidden == location == raw
    assert_stays_on_the_console(client, location)


@pytest.mark.parametrize(
    ("public_url", "secure"),
    [(None, False), ("http://digest.example.edu/", False), ("https://digest.example.edu/", True)],
)
def test_cookies_travel_over_https_only_when_the_console_is_reached_by_https(
    project: Path, public_url: str | None, secure: bool
) -> None:
    """Behind https, a plain-http request (a typed link, a stripped connection) leaks no login."""
    app = console.create_app(make_config(project, public_url=public_url))
    client = app.test_client()
    page = client.get("/login")
    token = csrf_of(page.get_data(as_text=True))
    response = client.post(
        "/login", data={"csrf_token": token, "name": "Ada", "password": PASSWORD}
    )
    assert response.status_code == 303
    logout = client.post("/logout", data={"csrf_token": token_of(client)})
    cookies = [
        *page.headers.getlist("Set-Cookie"),
        *response.headers.getlist("Set-Cookie"),
        *logout.headers.getlist("Set-Cookie"),
    ]
    assert {cookie.split("=")[0] for cookie in cookies} >= {"digest_console"}
    for cookie in cookies:
        attributes = [part.strip() for part in cookie.split(";")[1:]]
        assert ("Secure" in attributes) is secure, cookie
        assert "HttpOnly" in attributes, cookie
        assert "SameSite=Lax" in attributes, cookie


def test_session_cookie_is_http_only_and_same_site(app: Flask) -> None:
    """The session cookie is out of reach of scripts and not sent along with other sites' posts."""
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"csrf_token": token, "name": "Ada", "password": PASSWORD}
    )
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_security_headers(staff: FlaskClient) -> None:
    """Pages cannot be framed or run inline scripts; only the sandboxed preview may be framed."""
    page = staff.get("/")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "<script" not in page.get_data(as_text=True)
    preview = staff.get(f"/months/{MONTH}/preview")
    assert preview.status_code == 200
    assert preview.headers["Content-Security-Policy"].startswith("sandbox;")
    assert "frame-ancestors 'self'" in preview.headers["Content-Security-Policy"]
    assert preview.headers["X-Frame-Options"] == "SAMEORIGIN"
    month = staff.get(f"/months/{MONTH}").get_data(as_text=True)
    assert re.search(r"<iframe [^>]*sandbox[ >]", month)


def test_dashboard_shows_catalogue_subscribers_and_next_run(staff: FlaskClient) -> None:
    """Staff see at a glance whether the catalogue is valid, who gets it, and when it goes next."""
    text = staff.get("/").get_data(as_text=True)
    assert "items.yaml is valid: 18 items" in text
    assert '<strong id="subscriber-count">12</strong> subscribers' in text
    assert (
        "Next scheduled run: <strong>2026-01-01 09:00 HKT (+08:00)</strong>, for December 2025"
        in (text)
    )
    assert f'href="/months/{MONTH}">November 2025</a>' in text
    assert "Nothing sent yet." in text


def test_dashboard_lists_catalogue_errors_with_their_lines(
    project: Path, staff: FlaskClient
) -> None:
    """An editor who broke items.yaml sees every mistake and its line, escaped, on the dashboard."""
    source = (project / "items.yaml").read_text(encoding="utf-8")
    broken = source.replace("date: 2025-11-19", "date: 2025-13-19 <b>", 1)
    (project / "items.yaml").write_text(broken, encoding="utf-8")
    line = broken.splitlines().index("    date: 2025-13-19 <b>") + 1
    text = staff.get("/").get_data(as_text=True)
    assert "The catalogue has 1 error" in text
    assert f"<td>items.yaml</td><td>{line}</td><td><code>items[0].date</code></td>" in text
    assert "&lt;b&gt;" in text
    assert staff.get(f"/months/{MONTH}").status_code == 409


def test_script_title_shows_as_text(project: Path, staff: FlaskClient) -> None:
    """A title carrying <script> shows as text in the console, never runs."""
    source = (project / "items.yaml").read_text(encoding="utf-8")
    hostile = '"<script>alert(1)</script> Medical School"'
    (project / "items.yaml").write_text(
        source.replace('"HKUST Commences Preparations for New Medical School"', hostile, 1),
        encoding="utf-8",
    )
    for path in (f"/months/{MONTH}", f"/months/{MONTH}/preview"):
        text = staff.get(path).get_data(as_text=True)
        assert "&lt;script&gt;alert(1)&lt;/script&gt; Medical School" in text, path
        assert "<script>" not in text, path


def test_month_view_shows_every_item_and_the_text_version(staff: FlaskClient) -> None:
    """Staff see every item of the month, the subject and the text version before sending."""
    text = staff.get(f"/months/{MONTH}").get_data(as_text=True)
    assert "HKUST Commences Preparations for New Medical School" in text
    assert "Talk by Dr. William Mobley" in text
    assert "HKUST &amp; GPTX Forge Collaboration" in text
    assert "3 items in 3 categories" in text
    assert "INSTITUTIONAL ADVANCEMENT\n=========================" in text


def test_confirmation_shows_the_plan(staff: FlaskClient) -> None:
    """Before a send, staff see subject, items, recipients and transport; nothing is sent."""
    text = staff.get(f"/months/{MONTH}/send").get_data(as_text=True)
    assert "What&#39;s Happening — November 2025" in text
    assert '<td id="plan-items">3</td>' in text
    assert f'<td id="plan-recipients">{READERS} to send;' in text
    assert '<td id="plan-transport">outbox/</td>' in text
    assert f"Send November 2025 to {READERS} subscribers" in text
    assert not Path("outbox").exists()
    ledger = Ledger(Path(".digest/state.sqlite3"))
    assert ledger.months() == []
    assert ledger.frozen(MONTH) is None
    ledger.close()


@pytest.fixture
def smtp_app(project: Path, smtp_server: SmtpServer) -> Iterator[Flask]:
    """The console sending to the recording SMTP server, with a public URL for unsubscribing."""
    made = console.create_app(
        make_config(project, smtp_url=smtp_server.url, public_url="https://digest.example.edu/")
    )
    yield made
    console.wait_for_jobs(made)


@pytest.fixture
def smtp_staff(smtp_app: Flask) -> FlaskClient:
    """A client of the SMTP-sending console, logged in as Ada."""
    client = smtp_app.test_client()
    assert log_in(client) == 303
    return client


def start_send(client: FlaskClient) -> int:
    token = token_of(client, f"/months/{MONTH}/send")
    return client.post(f"/months/{MONTH}/send", data={"csrf_token": token}).status_code


def test_send_goes_through_the_ledger_and_records_who(
    smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """A send from the console reaches every reader once and the history says who started it."""
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    assert len(smtp_server.recorder.by_recipient()) == READERS
    progress = smtp_staff.get(f"/months/{MONTH}/progress").get_data(as_text=True)
    assert f"November 2025: sent {READERS}, already sent 0, deferred 0, failed 0" in progress
    history = smtp_staff.get(f"/months/{MONTH}/history").get_data(as_text=True)
    assert f"sent {READERS}, failed 0, deferred 0, pending 0" in history
    assert "digest serve, started by Ada (from 127.0.0.1)" in history
    # The same lock and ledger as the CLI: sending again sends nothing.
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    assert len(smtp_server.recorder.messages) == READERS
    again = smtp_staff.get(f"/months/{MONTH}/progress").get_data(as_text=True)
    assert "November 2025 was already sent to everyone: nothing to send." in again


def test_second_send_while_one_runs_is_refused(
    smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """Two staff pressing Send at once never send the digest twice: the second is told why."""
    smtp_server.recorder.delay = 0.2
    assert start_send(smtp_staff) == 303
    token = token_of(smtp_staff, f"/months/{MONTH}/send")
    second = smtp_staff.post(f"/months/{MONTH}/send", data={"csrf_token": token})
    assert second.status_code == 409
    text = second.get_data(as_text=True)
    assert "Not started: A send of November 2025 is already running, started by Ada" in text
    console.wait_for_jobs(smtp_app)
    assert sorted(len(m) for m in smtp_server.recorder.by_recipient().values()) == [1] * READERS


def test_send_refused_while_the_cli_holds_the_lock(project: Path, smtp_staff: FlaskClient) -> None:
    """A send from the console waits for one from the command line instead of interleaving."""
    from digest.send.ledger import SendLock

    lock = SendLock(project / ".digest" / "state.sqlite3", MONTH)
    lock.acquire("digest send by someone")
    try:
        token = token_of(smtp_staff, f"/months/{MONTH}/send")
        refused = smtp_staff.post(f"/months/{MONTH}/send", data={"csrf_token": token})
    finally:
        lock.release()
    assert refused.status_code == 409
    assert "another send of 2025-11 is running" in refused.get_data(as_text=True)


_HOLD = """
import sys, time
from pathlib import Path
from digest.send.ledger import SendLock
SendLock(Path(sys.argv[1]), sys.argv[2]).acquire("digest send, by a tester")
print("holding", flush=True)
time.sleep(60)
"""


def test_a_send_from_the_command_line_shows_with_its_progress(
    project: Path, staff: FlaskClient
) -> None:
    """Staff see a send the CLI or the scheduler is making, until its process is gone."""
    state = project / ".digest" / "state.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(state), MONTH], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"
        history = staff.get(f"/months/{MONTH}/history").get_data(as_text=True)
        dashboard = staff.get("/").get_data(as_text=True)
    finally:
        holder.kill()
        holder.wait()
    assert f"Sending now, outside this console (pid {holder.pid} on " in history
    assert ", digest send, by a tester, since " in history
    assert '<meta http-equiv="refresh" content="2">' in history
    assert "Sending November 2025 outside this console (pid" in dashboard
    # Killed, it could not empty the lock file: its dead process no longer counts as a send.
    assert "digest send, by a tester" in (state.parent / f"send-{MONTH}.lock").read_text()
    after = staff.get(f"/months/{MONTH}/history").get_data(as_text=True)
    assert "Sending now" not in after
    assert 'http-equiv="refresh"' not in after
    assert "outside this console" not in staff.get("/").get_data(as_text=True)


def test_a_finished_send_leaves_no_holder(project: Path) -> None:
    """A lock taken and released names nobody; a lock file never written names nobody."""
    state = project / ".digest" / "state.sqlite3"
    assert SendLock.holder(state, MONTH) is None
    lock = SendLock(state, MONTH)
    lock.acquire("digest send, by a tester")
    assert "digest send, by a tester" in (SendLock.holder(state, MONTH) or "")
    lock.release()
    assert SendLock.holder(state, MONTH) is None


def test_test_copy_goes_only_to_the_address_given(
    smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """A test send reaches only the tester, marked [TEST], and records nothing."""
    token = token_of(smtp_staff, f"/months/{MONTH}")
    response = smtp_staff.post(
        f"/months/{MONTH}/test",
        data={"csrf_token": token, "addresses": "tester@example.org"},
        follow_redirects=True,
    )
    text = response.get_data(as_text=True)
    assert "Sent 1 test copy of November 2025 to tester@example.org" in text
    [received] = smtp_server.recorder.messages
    assert received.rcpt_tos == ["tester@example.org"]
    assert str(received.message["Subject"]).startswith("[TEST] ")
    assert not Path(".digest").exists()
    token = token_of(smtp_staff, f"/months/{MONTH}")
    bad = smtp_staff.post(
        f"/months/{MONTH}/test",
        data={"csrf_token": token, "addresses": "not an address <script>"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "&#39;not&#39; is not an email address" in bad
    assert len(smtp_server.recorder.messages) == 1


def test_deferred_recipients_show_with_the_reply_and_are_retried(
    smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """A recipient the server put off shows with its reply, and "Retry deferred" delivers it."""
    smtp_server.recorder.refuse["lee.kawai@example.org"] = "550 5.1.1 <b>no such user</b>"
    smtp_server.recorder.refuse_once["chan.taiman@example.org"] = "451 4.3.0 later"
    app_console = console.console_of(smtp_app)
    app_console.retry_policy = console.delivery.RetryPolicy(attempts=1, base_delay=0)
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    history = smtp_staff.get(f"/months/{MONTH}/history").get_data(as_text=True)
    assert "<td>lee.kawai@example.org</td><td>failed</td>" in history
    assert "550 5.1.1 &lt;b&gt;no such user&lt;/b&gt;" in history
    assert "<td>chan.taiman@example.org</td><td>deferred</td>" in history
    assert "451 4.3.0 later" in history
    assert "Retry deferred (1 waiting)" in history
    token = csrf_of(history)
    assert smtp_staff.post(f"/months/{MONTH}/retry", data={"csrf_token": token}).status_code == 303
    console.wait_for_jobs(smtp_app)
    assert "chan.taiman@example.org" in smtp_server.recorder.by_recipient()
    after = smtp_staff.get(f"/months/{MONTH}/history").get_data(as_text=True)
    assert f"sent {READERS - 1}, failed 1, deferred 0, pending 0" in after
    assert "Retry deferred" not in after


def test_console_send_keeps_to_the_daily_limit_in_the_catalogue(
    project: Path, smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """A send from the console honours items.yaml's daily limit and says how many wait, and
    until when, in the office's time zone."""
    path = project / "items.yaml"
    line = "  subscribers: subscribers.csv\n"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(line, f"{line}  delivery: {{daily_limit: 4}}\n"), encoding="utf-8")

    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)

    assert len(smtp_server.recorder.messages) == 4
    progress = smtp_staff.get(f"/months/{MONTH}/progress").get_data(as_text=True)
    assert (
        "November 2025: sent 4, already sent 0, deferred 0, failed 0 (via "
        f"{smtp_server.url}). 7 held by the relay&#39;s daily limit: they can go from "
        "2026-01-02 08:00 HKT (+08:00); send again then."
    ) in progress


# -- one-click unsubscribe ---------------------------------------------------------------------


def links() -> unsubscribe.Links:
    return unsubscribe.Links(SECRET, "https://digest.example.edu/")


def test_forged_unsubscribe_token_is_refused_and_records_nothing(app: Flask) -> None:
    """Nobody can unsubscribe someone else by making up a link."""
    client = app.test_client()
    genuine = links().token("lee.kawai@example.org")
    other_key = unsubscribe.Links("x" * 40).token("lee.kawai@example.org")
    encoded, _, mac = genuine.partition(".")
    swapped = links().token("chan.taiman@example.org").partition(".")[0] + "." + mac
    for forged in (other_key, swapped, encoded, "lee.kawai@example.org", genuine + "A", "..."):
        assert client.post(f"/unsubscribe/{forged}").status_code == 400, forged
        page = client.get(f"/unsubscribe/{forged}")
        assert page.status_code == 400
        assert "This unsubscribe link is not valid" in page.get_data(as_text=True)
    assert not Path(".digest").exists()


def test_get_on_the_unsubscribe_link_records_nothing(app: Flask) -> None:
    """A link scanner fetching the unsubscribe URL unsubscribes nobody; a person gets a button."""
    client = app.test_client()
    token = links().token("Lee.Kawai@example.org")
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Stop sending the monthly digest to <strong>lee.kawai@example.org</strong>?" in text
    assert f'<form method="post" action="/unsubscribe/{token}">' in text
    assert not Path(".digest").exists()


def test_one_click_unsubscribe_is_honoured_by_the_next_send(
    smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """Whoever unsubscribes with one click (no login, no cookie) gets no further digest."""
    mail_client = smtp_app.test_client()
    token = links().token("lee.kawai@example.org")
    done = mail_client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert "You are unsubscribed" in done.get_data(as_text=True)
    ledger = Ledger(Path(".digest/state.sqlite3"))
    assert ledger.suppressed() == {"lee.kawai@example.org"}
    ledger.close()
    dashboard = smtp_staff.get("/").get_data(as_text=True)
    assert "1 address off the list (1 unsubscribed), never sent again" in dashboard
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    received = smtp_server.recorder.by_recipient()
    assert "lee.kawai@example.org" not in received
    assert len(received) == READERS - 1


def test_the_console_and_one_click_unsubscribe_work_on_either_engine(
    project: Path, smtp_server: SmtpServer, database_url: str | None
) -> None:
    """On PostgreSQL as on SQLite: an unsubscribe is kept, counted, and skipped by the next send."""
    app = console.create_app(
        make_config(
            project,
            smtp_url=smtp_server.url,
            public_url="https://digest.example.edu/",
            database_url=database_url,
        )
    )
    try:
        staff = app.test_client()
        assert log_in(staff) == 303
        token = links().token("lee.kawai@example.org")
        done = app.test_client().post(
            f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
        )
        assert done.status_code == 200
        with Ledger(Path(".digest/state.sqlite3"), url=database_url) as ledger:
            assert ledger.suppressed() == {"lee.kawai@example.org"}
        dashboard = staff.get("/").get_data(as_text=True)
        assert "1 address off the list (1 unsubscribed), never sent again" in dashboard
        assert start_send(staff) == 303
        console.wait_for_jobs(app)
        received = smtp_server.recorder.by_recipient()
        assert "lee.kawai@example.org" not in received
        assert len(received) == READERS - 1
        with Ledger(Path(".digest/state.sqlite3"), url=database_url) as ledger:
            assert ledger.months()[0].counts["sent"] == READERS - 1
    finally:
        console.wait_for_jobs(app)


def test_sent_digest_carries_a_working_one_click_link(
    smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """Mail clients offer one-click unsubscribe; the link in each email unsubscribes its reader."""
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    message: EmailMessage = smtp_server.recorder.by_recipient()["ng.chiho@example.org"][0].message
    header = str(message["List-Unsubscribe"])
    url = links().url("ng.chiho@example.org")
    assert header == f"<{url}>, <mailto:provost@example.edu?subject=unsubscribe>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",))
    assert text is not None
    assert f"Unsubscribe: {url}" in text.get_content()
    path = url.removeprefix("https://digest.example.edu")
    assert smtp_app.test_client().post(path).status_code == 200
    ledger = Ledger(Path(".digest/state.sqlite3"))
    assert ledger.suppressed() == {"ng.chiho@example.org"}
    ledger.close()


def test_tokens_survive_letter_case_and_differ_per_recipient() -> None:
    """One subscriber's link never unsubscribes another, and capitals do not break it."""
    made = links()
    assert made.token("Ng.ChiHo@Example.org") == made.token("ng.chiho@example.org")
    assert made.token("ng.chiho@example.org") != made.token("lee.kawai@example.org")
    assert made.address(made.token("Ng.ChiHo@Example.org")) == "ng.chiho@example.org"


# -- feeds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("all.atom.xml", "application/atom+xml"),
        ("all.rss.xml", "application/rss+xml"),
        ("all.json", "application/feed+json"),
        ("index.html", "text/html"),
        ("archive/2025-11.html", "text/html"),
        ("all.ics", "text/calendar"),
        ("events/aep-fireworks-with-the-provost-2025.ics", "text/calendar"),
    ],
)
def test_feeds_are_served_with_their_types_and_validators(
    staff: FlaskClient, project: Path, name: str, kind: str
) -> None:
    """A local look at the feeds gets the right content types, and a repeat fetch is a 304."""
    response = staff.get(f"/feeds/{name}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == f"{kind}; charset=utf-8"
    assert response.get_data() == (project / "feeds" / name).read_bytes()
    assert response.headers["Content-Security-Policy"].startswith("sandbox;")
    etag = response.headers["ETag"]
    assert response.headers["Last-Modified"]
    again = staff.get(f"/feeds/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_feeds_index_and_nothing_outside(staff: FlaskClient) -> None:
    """/feeds/ shows the feed page, and no path reaches a file outside feeds/."""
    assert staff.get("/feeds/").headers["Content-Type"] == "text/html; charset=utf-8"
    for path in ("/feeds/../items.yaml", "/feeds/%2e%2e/items.yaml", "/feeds/missing.json"):
        assert staff.get(path).status_code == 404, path


# -- the command -------------------------------------------------------------------------------


def test_serve_without_password_exits_1(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting the console without a password is refused, saying why and what to set."""
    monkeypatch.delenv("DIGEST_CONSOLE_PASSWORD", raising=False)
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 1
    assert result.stderr.startswith("DIGEST_CONSOLE_PASSWORD is not set: ")
    assert "refuses to start without a password" in result.stderr


def test_serve_with_public_url_but_no_secret_key_exits_1(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unsubscribe links need a lasting key: without one the console refuses, and says how."""
    monkeypatch.setenv("DIGEST_CONSOLE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://digest.example.edu/")
    for key in ("", "short"):
        monkeypatch.setenv("DIGEST_SECRET_KEY", key)
        result = CliRunner().invoke(cli, ["serve"])
        assert result.exit_code == 1
        assert result.stderr.startswith("The console needs a secret key: DIGEST_SECRET_KEY is ")
        assert "secrets.token_urlsafe(32)" in result.stderr


@pytest.mark.parametrize("value", ["x", "-1", "1.5", "6", "\u0661", "1 2"])
def test_serve_refuses_a_trusted_proxies_value_that_is_no_count(
    project: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A mistyped proxy count stops the console with the fix, rather than trusting any header."""
    monkeypatch.setenv("DIGEST_CONSOLE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DIGEST_TRUSTED_PROXIES", value)
    with socket.create_server(("127.0.0.1", 0)) as taken:  # a serve that got this far would end
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"DIGEST_TRUSTED_PROXIES {value!r} is not a number of proxies: set it to how many "
    )
    assert "or 0 (the default) to ignore X-Forwarded-For" in result.stderr


def start_serve(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[Popen[str], int]:
    """Start `digest serve` on a free loopback port; return it once it says it listens."""
    monkeypatch.setenv("DIGEST_CONSOLE_PASSWORD", PASSWORD)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    proc = spawn("serve", "--host", "127.0.0.1", "--port", str(port))
    assert proc.stdout is not None
    first = proc.stdout.readline()  # printed once the socket is bound
    assert first.startswith(f"Staff console on http://127.0.0.1:{port}/"), first
    return proc, port


def login_over_http(port: int, password: str, forwarded: str) -> tuple[int, list[str]]:
    """Log in to `digest serve` over HTTP as a new browser; return the status and its cookies."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"X-Forwarded-For": forwarded}
        connection.request("GET", "/login", headers=headers)
        page = connection.getresponse()
        cookies = page.headers.get_all("Set-Cookie") or []
        form = urlencode(
            {"csrf_token": csrf_of(page.read().decode()), "name": "Ada", "password": password}
        )
        headers |= {
            "Cookie": "; ".join(cookie.split(";")[0] for cookie in cookies),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        connection.request("POST", "/login", body=form, headers=headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status, cookies + (answer.headers.get_all("Set-Cookie") or [])
    finally:
        connection.close()


def test_serve_counts_forwarded_clients_apart_with_one_trusted_proxy(
    project: Path, monkeypatch: pytest.MonkeyPatch, spawn: Spawn
) -> None:
    """With DIGEST_TRUSTED_PROXIES=1, one guesser behind the proxy does not lock out the rest."""
    proc, port = start_serve(spawn, monkeypatch, DIGEST_TRUSTED_PROXIES="1")
    assert proc.stdout is not None
    # Read through the file object: communicate() would skip what it has already buffered.
    said = [proc.stdout.readline() for _ in range(2)]
    assert "Client addresses come from the last 1 X-Forwarded-For entry " in said[1], said
    for _ in range(console.MAX_FAILURES):
        assert login_over_http(port, "guess", "192.0.2.1")[0] == 401
    assert login_over_http(port, PASSWORD, "192.0.2.1")[0] == 429
    assert login_over_http(port, PASSWORD, "192.0.2.2")[0] == 303
    proc.terminate()
    proc.communicate(timeout=30)


def test_serve_sends_cookies_over_https_only_with_an_https_public_url(
    project: Path, monkeypatch: pytest.MonkeyPatch, spawn: Spawn
) -> None:
    """`digest serve` behind https marks every cookie Secure, so plain http never carries one."""
    _, port = start_serve(
        spawn,
        monkeypatch,
        DIGEST_PUBLIC_URL="https://digest.example.edu/",
        DIGEST_SECRET_KEY=SECRET,
    )
    status, cookies = login_over_http(port, PASSWORD, "192.0.2.1")
    assert status == 303
    assert cookies
    assert all("; Secure;" in cookie for cookie in cookies), cookies


def test_public_url_must_be_https(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsubscribe URL that mail clients would refuse (plain http) is caught before sending."""
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "http://digest.example.edu/")
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    result = CliRunner().invoke(cli, ["send", "--month", MONTH, "--yes"])
    assert result.exit_code == 1
    assert "must be the https:// address" in result.stderr
    assert not Path("outbox").exists()


def test_cli_send_adds_one_click_links_and_status_counts_suppressed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`digest send` honours one-click unsubscribes and carries the links; status counts them."""
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://digest.example.edu")
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    ledger = Ledger(Path(".digest/state.sqlite3"))
    ledger.suppress("Lee.Kawai@example.org", "one-click")
    ledger.close()
    result = CliRunner().invoke(cli, ["send", "--month", MONTH, "--yes"])
    assert result.exit_code == 0, result.output
    assert f"{READERS - 1} messages written to outbox/" in result.stdout
    sent = sorted(p.name for p in Path("outbox").iterdir())
    assert "digest-2025-11-lee.kawai@example.org.eml" not in sent
    eml = Path("outbox/digest-2025-11-ng.chiho@example.org.eml").read_text(encoding="utf-8")
    # Plain, on one line: folded into RFC 2047 encoded words, no mail client would see a URL.
    assert f"\nList-Unsubscribe: <{links().url('ng.chiho@example.org')}>, <mailto:" in eml
    status = CliRunner().invoke(cli, ["status"])
    assert "1 address off the list (1 unsubscribed): never sent again" in status.stdout


def test_the_console_never_starts_the_scheduler(staff: FlaskClient) -> None:
    """Serving the console never sends anything on a timer behind the staff's back."""
    import threading

    staff.get("/")
    names = [thread.name for thread in threading.enumerate()]
    assert not any("APScheduler" in name or "scheduler" in name.lower() for name in names)


def test_public_url_needs_a_long_secret_key(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Links that the console could not check later are never sent in the first place."""
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://digest.example.edu/")
    monkeypatch.setenv("DIGEST_SECRET_KEY", "short")
    result = CliRunner().invoke(cli, ["send", "--month", MONTH, "--yes"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "DIGEST_PUBLIC_URL is set, and DIGEST_SECRET_KEY is shorter than 32 characters: "
    )
    assert not Path("outbox").exists()


def test_dry_run_leaves_out_the_unsubscribed(project: Path) -> None:
    """`digest send --dry-run` lists who a real send would reach: no one who unsubscribed."""
    ledger = Ledger(Path(".digest/state.sqlite3"))
    ledger.suppress("lee.kawai@example.org", "one-click")
    ledger.close()
    result = CliRunner().invoke(cli, ["send", "--month", MONTH, "--dry-run"])
    assert result.exit_code == 0
    assert f"Recipients: {READERS - 1} to send" in result.stdout
    assert "lee.kawai@example.org" not in result.stdout


def test_stopping_the_console_stops_a_send_cleanly(
    smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """Ctrl-C on the console ends a send after its message in flight; nothing is left unknown."""
    smtp_server.recorder.delay = 0.2
    assert start_send(smtp_staff) == 303
    job = console.console_of(smtp_app).jobs[Month(2025, 11)]
    deadline = time.monotonic() + 10
    while job.sent < 1:
        assert time.monotonic() < deadline, "the send did not start"
        time.sleep(0.01)
    assert console.console_of(smtp_app).shutdown() == [Month(2025, 11)]
    assert job.state == "done"
    ledger = Ledger(Path(".digest/state.sqlite3"))
    rows = ledger.deliveries(MONTH)
    ledger.close()
    assert {row.status for row in rows} <= {"sent", "pending"}
    assert sum(row.status == "sent" for row in rows) == len(smtp_server.recorder.messages)
    assert len(smtp_server.recorder.messages) < READERS


def test_a_stray_lock_file_does_not_break_the_dashboard(project: Path, staff: FlaskClient) -> None:
    """A file named like a lock but not by digest is ignored rather than failing the page."""
    state = project / ".digest"
    state.mkdir(exist_ok=True)
    (state / "send-notes.lock").write_text(f"pid {os.getpid()} on {socket.gethostname()}, x, since")
    page = staff.get("/")
    assert page.status_code == 200
    assert "outside this console" not in page.get_data(as_text=True)


# -- what staff read: outcomes, titles, times, warnings (issue 14) ------------------------------


def page_of(response: TestResponse) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(response.get_data(as_text=True))


def text_of(element: lxml.html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def verdicts(page: lxml.html.HtmlElement) -> list[tuple[str, str]]:
    """Return every send's outcome on a page: its state (the colour) and its words."""
    found = []
    for element in page.find_class("verdict"):
        states = set(element.classes) - {"verdict"}
        found.append((" ".join(sorted(states)), text_of(element)))
    return found


def month_row(page: lxml.html.HtmlElement, table_id: str, label: str) -> lxml.html.HtmlElement:
    [row] = [tr for tr in page.get_element_by_id(table_id).iter("tr") if label in text_of(tr)]
    return row


def test_progress_page_says_the_send_has_ended(smtp_app: Flask, smtp_staff: FlaskClient) -> None:
    """Once a send is over, its page stops saying "Sending" and says how it ended."""
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    page = page_of(smtp_staff.get(f"/months/{MONTH}/progress"))
    heading = text_of(page.find(".//h1"))
    title = text_of(page.find(".//title"))
    assert "Sending" not in heading
    assert "Sending" not in title
    assert heading == "November 2025: all sent"
    assert title.startswith("November 2025: all sent")
    assert page.find(".//meta[@http-equiv='refresh']") is None


def test_a_send_with_failures_never_looks_like_success(
    smtp_app: Flask, smtp_staff: FlaskClient, smtp_server: SmtpServer
) -> None:
    """A send that left readers without the digest says so in red on every page, never green."""
    smtp_server.recorder.refuse["lee.kawai@example.org"] = "550 5.1.1 no such user"
    smtp_server.recorder.refuse["chan.taiman@example.org"] = "451 4.3.0 later"
    app_console = console.console_of(smtp_app)
    app_console.retry_policy = console.delivery.RetryPolicy(attempts=1, base_delay=0)
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    progress = page_of(smtp_staff.get(f"/months/{MONTH}/progress"))
    state = progress.get_element_by_id("state")
    assert "ok" not in state.classes
    assert "bad" in state.classes
    assert text_of(state).startswith("Some not delivered ")
    assert "deferred 1, failed 1" in text_of(state)
    assert text_of(progress.find(".//h1")) == "November 2025: some not delivered"
    assert verdicts(progress) == [("bad", "Some not delivered")]
    dashboard = page_of(smtp_staff.get("/"))
    for table in ("months", "runs"):
        row = month_row(dashboard, table, "November 2025" if table == "months" else MONTH)
        assert verdicts(row) == [("bad", "Some not delivered")], table
    history = page_of(smtp_staff.get(f"/months/{MONTH}/history"))
    assert verdicts(history) == [("bad", "Some not delivered")] * 2  # the month, its one send


def test_a_send_that_reached_everyone_says_all_sent_everywhere(
    smtp_app: Flask, smtp_staff: FlaskClient
) -> None:
    """Staff read the same words for a complete send on every page, so a partial one stands out."""
    assert start_send(smtp_staff) == 303
    console.wait_for_jobs(smtp_app)
    assert verdicts(page_of(smtp_staff.get(f"/months/{MONTH}/progress"))) == [("ok", "All sent")]
    dashboard = page_of(smtp_staff.get("/"))
    assert verdicts(month_row(dashboard, "months", "November 2025")) == [("ok", "All sent")]
    assert verdicts(month_row(dashboard, "runs", MONTH)) == [("ok", "All sent")]
    assert verdicts(month_row(dashboard, "months", "October 2025")) == [("none", "Not sent")]
    history = page_of(smtp_staff.get(f"/months/{MONTH}/history"))
    assert verdicts(history) == [("ok", "All sent")] * 2


def test_a_send_to_the_outbox_never_reads_as_sent(app: Flask, staff: FlaskClient) -> None:
    """Without a mail server the send is a rehearsal: no page says the month was sent."""
    assert start_send(staff) == 303
    console.wait_for_jobs(app)
    rehearsed = [("busy", "Rehearsal: written to outbox/ only")]
    progress = page_of(staff.get(f"/months/{MONTH}/progress"))
    assert verdicts(progress) == rehearsed
    assert "a rehearsal, nobody was emailed" in text_of(progress.get_element_by_id("state"))
    dashboard = page_of(staff.get("/"))
    assert verdicts(month_row(dashboard, "months", "November 2025")) == [("none", "Not sent")]
    assert verdicts(month_row(dashboard, "runs", MONTH)) == rehearsed


def test_error_pages_say_what_happened_in_plain_words(project: Path, staff: FlaskClient) -> None:
    """Staff who hit an error read what went wrong, not an HTTP status such as "409 Conflict"."""
    source = (project / "items.yaml").read_text(encoding="utf-8")
    (project / "items.yaml").write_text(source.replace("date: 2025-11-19", "date: x", 1))
    cases = [
        (f"/months/{MONTH}", 409, "The catalogue has errors"),
        (f"/months/{MONTH}/send", 409, "The catalogue has errors"),
        ("/months/2025-13", 404, "Page not found"),
        ("/no/such/page", 404, "Page not found"),
    ]
    for path, status, title in cases:
        response = staff.get(path)
        assert response.status_code == status, path
        page = page_of(response)
        assert text_of(page.find(".//h1")) == title, path
        assert text_of(page.find(".//title")) == f"{title} · Digest console", path
        assert str(status) not in text_of(page.find(".//h1")), path
    (project / "items.yaml").write_text(source)
    expired = staff.post(f"/months/{MONTH}/send", data={"csrf_token": "old"})
    assert expired.status_code == 403
    assert text_of(page_of(expired).find(".//h1")) == "This form has expired"
    assert "reload the page and retry" in expired.get_data(as_text=True)


HKT_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d HKT \(\+08:00\)"


def hong_kong(stamp: str) -> str:
    """Return a ledger stamp (UTC, ISO 8601) as the console should show it in Hong Kong."""
    moment = datetime.fromisoformat(stamp).astimezone(ZoneInfo("Asia/Hong_Kong"))
    return f"{moment:%Y-%m-%d %H:%M} HKT (+08:00)"


def test_every_time_shows_in_the_publications_zone(app: Flask, staff: FlaskClient) -> None:
    """Staff in Hong Kong read every time in Hong Kong time, labelled, never a bare UTC time."""
    assert start_send(staff) == 303
    console.wait_for_jobs(app)
    ledger = Ledger(Path(".digest/state.sqlite3"))
    [run] = ledger.runs(MONTH)
    ledger.close()
    assert run.finished_at is not None
    dashboard_page = page_of(staff.get("/"))
    history_page = page_of(staff.get(f"/months/{MONTH}/history"))
    dashboard, history = text_of(dashboard_page), text_of(history_page)
    progress = text_of(page_of(staff.get(f"/months/{MONTH}/progress")))
    for text in (dashboard, history, progress):
        assert "UTC" not in text
        assert re.search(HKT_TIME, text)
    # The console's clock says 2026-01-01 00:00 UTC: 08:00 in Hong Kong.
    assert "at 2026-01-01 08:00 HKT (+08:00), via outbox/" in progress
    assert "Next scheduled run: 2026-01-01 09:00 HKT (+08:00)" in dashboard
    cells = [text_of(td) for td in month_row(dashboard_page, "runs", MONTH).iter("td")]
    assert cells[:2] == [MONTH, hong_kong(run.started_at)]
    cells = [text_of(td) for td in history_page.get_element_by_id("runs").iter("td")]
    assert cells[:2] == [hong_kong(run.started_at), hong_kong(run.finished_at)]


def test_times_keep_their_zone_while_the_catalogue_is_broken(
    project: Path, app: Flask, staff: FlaskClient
) -> None:
    """An editor's typo does not switch the history's times to another zone; a restart says UTC."""
    assert start_send(staff) == 303
    console.wait_for_jobs(app)
    assert re.search(HKT_TIME, text_of(page_of(staff.get(f"/months/{MONTH}/history"))))
    source = (project / "items.yaml").read_text(encoding="utf-8")
    (project / "items.yaml").write_text(source.replace("date: 2025-11-19", "date: x", 1))
    history = text_of(page_of(staff.get(f"/months/{MONTH}/history")))
    assert re.search(HKT_TIME, history)
    assert "UTC" not in history
    restarted = console.create_app(make_config(project)).test_client()
    assert log_in(restarted) == 303
    history = text_of(page_of(restarted.get(f"/months/{MONTH}/history")))
    assert re.search(r"\d\d:\d\d UTC \(\+00:00\)", history)  # labelled, never a bare time


OUTBOX_WARNING = (
    "No mail server is set (DIGEST_SMTP_URL): this send only writes files to outbox/ — "
    "nobody receives anything."
)


def test_sending_to_the_outbox_is_announced_before_anyone_presses_send(
    staff: FlaskClient, smtp_staff: FlaskClient
) -> None:
    """Staff are warned that a send without a mail server reaches nobody, before they send it."""
    for path in (f"/months/{MONTH}/send", f"/months/{MONTH}"):
        page = page_of(staff.get(path))
        [banner] = page.find_class("outbox-warning")
        assert text_of(banner) == OUTBOX_WARNING, path
        assert banner.get("role") == "alert"
        assert OUTBOX_WARNING not in text_of(page_of(smtp_staff.get(path))), path


@pytest.mark.parametrize("password", ["pw", "eleven char", "  short pw    ", "            "])
def test_serve_refuses_a_short_password(
    project: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    """A password that can be guessed in an afternoon never guards the whole mailing list."""
    monkeypatch.setenv("DIGEST_CONSOLE_PASSWORD", password)
    with socket.create_server(("127.0.0.1", 0)) as taken:  # a serve that got this far would end
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert result.exit_code == 1
    shown = len(password.strip())
    assert result.stderr == (
        f"DIGEST_CONSOLE_PASSWORD is too short ({shown} characters, not counting spaces around "
        "it): the console sends email to the whole list, so its password must have at least 12; "
        "set DIGEST_CONSOLE_PASSWORD to a long passphrase, such as four random words\n"
    )
    assert not Path(".digest").exists()


def test_serve_accepts_a_twelve_character_password(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve characters are enough: the console goes on to start (here, on a port in use)."""
    monkeypatch.setenv("DIGEST_CONSOLE_PASSWORD", "twelve chars")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert result.exit_code == 1
    assert f"Port {port} is in use by another program." in result.stderr
    assert "DIGEST_CONSOLE_PASSWORD" not in result.stderr


def test_a_send_from_another_host_on_postgresql_shows_and_blocks_a_console_send(
    project: Path, postgresql: PostgreSQL, tmp_path: Path
) -> None:
    """On a shared PostgreSQL database the console names a sender on another host, whose lock
    files it cannot see, and refuses to start the same month beside it."""
    url = postgresql.database()
    made = console.create_app(make_config(project, database_url=url))
    client = made.test_client()
    assert log_in(client) == 303
    elsewhere = Ledger(tmp_path / "other-host" / "state.sqlite3", url=url)
    lock = SendLock(elsewhere.path, MONTH, elsewhere)
    lock.acquire("digest send, by bob")
    try:
        history = client.get(f"/months/{MONTH}/history").get_data(as_text=True)
        dashboard = client.get("/").get_data(as_text=True)
        token = token_of(client, f"/months/{MONTH}/send")
        refused = client.post(f"/months/{MONTH}/send", data={"csrf_token": token})
    finally:
        lock.release()
        elsewhere.close()
    holder = f"pid {os.getpid()} on {socket.gethostname()}, digest send, by bob, since "
    assert f"Sending now, outside this console ({holder}" in history
    assert f"Sending November 2025 outside this console ({holder}" in dashboard
    assert refused.status_code == 409
    assert "another send of 2025-11 is running on another machine that shares the state " in (
        refused.get_data(as_text=True)
    )
    assert "outside this console" not in client.get("/").get_data(as_text=True)
    console.wait_for_jobs(made)
