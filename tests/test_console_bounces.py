"""Bounces and complaints in the staff console: each month's rates, the newest reports, a person's
bounce history, and putting a bounced address back with a reason."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, expect

from conftest import serving
from digest import console
from digest.app import subscribing
from digest.console import present
from digest.send.ledger import Ledger, Mark, Status
from digest.send.store import Bounce, BounceKind, BounceRules, Store, SubscriberStatus
from helpers import NOW
from test_console import csrf_of, log_in, make_config

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(".digest/state.sqlite3")
MONTH = "2025-11"
BROWSER_PASSWORD = "a long passphrase for the tests"  # noqa: S105 -- the tests' own


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Path:
    """The bundled catalogue and subscriber list in tmp_path, the working directory; the state
    on the engine of the run."""
    if database_url is not None:
        monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_of(project: Path) -> console.Config:
    """Return the console's configuration over the project, on the engine of the run."""
    return make_config(project, database_url=os.environ.get("DIGEST_DATABASE_URL"))


def state(project: Path) -> Ledger:
    """Return the project's state database, on the engine of the run."""
    return Ledger(project / STATE, url=os.environ.get("DIGEST_DATABASE_URL"))


def sent_month(project: Path, failed: str) -> list[str]:
    """Import the list and record November as sent to every subscriber but `failed`."""
    config = config_of(project)
    subscribing.import_file(config.settings, project / "subscribers.csv", NOW, dry_run=False)
    with state(project) as ledger:
        keys = sorted(Store(ledger).rows())
        ledger.enrol(MONTH, [(key, key, None, "all") for key in keys])
        ledger.record(
            MONTH,
            [Mark(key, Status.FAILED if key == failed else Status.SENT, True) for key in keys],
        )
    return keys


def bounce(project: Path, address: str, kind: BounceKind, detail: str, month: str | None) -> None:
    """Record one report as `digest bounces` does, rules and all."""
    status = "" if kind is BounceKind.COMPLAINT else "5.1.1"  # a feedback report carries none
    report = Bounce(f"<{address}-{kind}@mx.example>", address, month, kind, status, detail)
    with state(project) as ledger:
        Store(ledger).record_bounce(report, BounceRules(), NOW)


@pytest.fixture
def staff(project: Path) -> FlaskClient:
    """Ada, logged in to a console over the bundled project."""
    app: Flask = console.create_app(config_of(project))
    client = app.test_client()
    assert log_in(client) == 303
    return client


def cells(html: str, table: str) -> list[list[str]]:
    """Return the text of each body row of the table with id `table`."""
    body = re.search(rf'<table id="{table}"[^>]*>.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body, html
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    each = re.compile(r"<td[^>]*>(.*?)</td>")
    return [[re.sub(r"<[^>]+>", "", c) for c in each.findall(r)] for r in rows]


def test_bounces_page_shows_rates_warnings_and_the_newest_reports(
    staff: FlaskClient, project: Path
) -> None:
    """Staff see each month's bounce and complaint rates, warned above what providers accept,
    and the newest reports, each linked to the person's page."""
    sent_month(project, failed="ho.kinfai@example.org")
    bounce(project, "lee.kawai@example.org", BounceKind.HARD, "550 5.1.1 user unknown", MONTH)
    bounce(project, "ng.chiho@example.org", BounceKind.COMPLAINT, "", MONTH)
    bounce(project, "wong.siuming@example.org", BounceKind.SOFT, "mailbox full", None)
    page = staff.get("/bounces")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    # 12 on the list, 11 accepted by the relay, 1 refused; 1 bounced later, 1 complained.
    assert cells(html, "bounce-months") == [[MONTH, "11", "1", "1", "9.09 %", "1", "9.09 %"]]
    alerts = re.findall(r'<p class="flash warn" role="alert">(.*?)</p>', html)
    assert [a.split(":")[1].strip() for a in alerts] == [
        "bounce rate 9.09 % is above 2 %",
        "complaint rate 9.09 % is above 0.1 %",
    ]
    # The command to run is set as code, not shown with the terminal's backquotes.
    words = ["digest", "subscribers", "list", "--status", "bounced"]
    command = " ".join(f'<span class="word">{word}</span>' for word in words)
    assert f"<code>{command}</code>" in alerts[0]  # each word kept whole on a phone
    assert "`" not in html
    reports = cells(html, "bounces")
    assert [r[1] for r in reports] == [
        "wong.siuming@example.org",
        "ng.chiho@example.org",
        "lee.kawai@example.org",
    ]
    assert reports[0][2:4] == ["soft bounce", "not tied to a month"]
    assert reports[2][2:] == ["hard bounce", MONTH, "5.1.1", "550 5.1.1 user unknown"]
    assert reports[1][2:5] == ["complaint (marked as spam)", MONTH, ""]  # a report has no code
    assert reports[2][0].endswith("HKT (+08:00)")  # read in the publication's zone
    assert 'href="/subscribers/lee.kawai@example.org"' in html
    dashboard = staff.get("/").get_data(as_text=True)  # where staff look first
    shown = re.findall(r'<p class="flash warn" role="alert">(.*?) — <a href="/bounces">', dashboard)
    assert shown == alerts
    assert "2 addresses off the list (1 bounced, 1 complained), never sent again" in dashboard


def test_bounces_page_before_anything_came_back(staff: FlaskClient) -> None:
    """A console with no state yet says how bounces get here instead of showing empty tables."""
    html = staff.get("/bounces").get_data(as_text=True)
    assert "No bounce or complaint has been recorded" in html
    assert "<p>None yet.</p>" in html
    dashboard = staff.get("/").get_data(as_text=True)
    assert 'href="/bounces"' in dashboard  # in the menu
    assert 'role="alert"' not in dashboard  # and no warning


def test_bounces_page_needs_a_login(project: Path) -> None:
    """Who bounced is staff's to see: the page sends others to the login."""
    client = console.create_app(config_of(project)).test_client()
    response = client.get("/bounces")
    assert response.status_code in (302, 303)
    assert "/login" in response.headers["Location"]


def test_a_report_s_text_is_shown_as_text(staff: FlaskClient, project: Path) -> None:
    """A diagnostic a remote server wrote is shown as its words, never run as markup."""
    sent_month(project, failed="")
    bounce(project, "lee.kawai@example.org", BounceKind.HARD, "<script>alert(1)</script>", MONTH)
    for path in ("/bounces", "/subscribers/lee.kawai@example.org"):
        html = staff.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_bounced_person_comes_back_only_with_a_reason(staff: FlaskClient, project: Path) -> None:
    """A person's page shows their bounces and why they are off the list; staff put them back
    only with a reason, which their history keeps."""
    sent_month(project, failed="")
    bounce(project, "lee.kawai@example.org", BounceKind.HARD, "550 5.1.1 user unknown", MONTH)
    path = "/subscribers/lee.kawai@example.org"
    html = staff.get(path).get_data(as_text=True)
    assert '<td id="status">bounced</td>' in html
    assert "does not take mail" in html
    assert [r[1:] for r in cells(html, "bounces")] == [
        ["hard bounce", MONTH, "5.1.1", "550 5.1.1 user unknown"]
    ]
    refused = staff.post(f"{path}/resubscribe", data={"csrf_token": csrf_of(html), "reason": "  "})
    assert refused.status_code == 303
    shown = staff.get(path).get_data(as_text=True)
    assert "Not subscribed again: a reason is needed" in shown
    assert '<td id="status">bounced</td>' in shown
    back = staff.post(
        f"{path}/resubscribe",
        data={"csrf_token": csrf_of(shown), "reason": "mailbox works again, checked by phone"},
    )
    assert back.status_code == 303
    html = staff.get(path).get_data(as_text=True)
    assert '<td id="status">active</td>' in html
    history = cells(html, "history")
    assert history[-1][1:3] == [
        "staff:Ada",
        "resubscribed by staff: mailbox works again, checked by phone",
    ]
    with state(project) as ledger:
        row = Store(ledger).get("lee.kawai@example.org")
    assert row is not None
    assert row.status is SubscriberStatus.ACTIVE


def test_a_person_without_bounces_says_so(staff: FlaskClient, project: Path) -> None:
    """A person's page says plainly that nothing bounced for them."""
    sent_month(project, failed="")
    html = staff.get("/subscribers/chan.taiman@example.org").get_data(as_text=True)
    assert '<p id="no-bounces">None recorded.</p>' in html


@pytest.mark.parametrize(("width", "label"), [(1200, "desktop"), (390, "phone")])
def test_bounces_page_in_a_browser(
    browser: Browser, project: Path, artifacts: Path, width: int, label: str
) -> None:
    """In Chromium, the bounces page shows its warning and tables without running off the screen,
    and a report's address opens the person's page with their bounce."""
    sent_month(project, failed="ho.kinfai@example.org")
    bounce(project, "lee.kawai@example.org", BounceKind.HARD, "550 5.1.1 user unknown", MONTH)
    bounce(project, "ng.chiho@example.org", BounceKind.COMPLAINT, "", MONTH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {"DIGEST_CONSOLE_PASSWORD": BROWSER_PASSWORD, "DIGEST_SECRET_KEY": "k" * 43}
    if "DIGEST_DATABASE_URL" in os.environ:  # the console reads the state where it was written
        env["DIGEST_DATABASE_URL"] = os.environ["DIGEST_DATABASE_URL"]
    with serving(project, env) as url:
        page = browser.new_page(viewport={"width": width, "height": 800})
        page.goto(f"{url}/bounces")
        page.get_by_label("Your name").fill("Ada")
        page.get_by_label("Console password").fill(BROWSER_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="Bounces").click()
        expect(page.get_by_role("heading", name="Bounces and complaints")).to_be_visible()
        expect(page.get_by_role("alert").first).to_contain_text("bounce rate 9.09 % is above 2 %")
        # The heading is there before the stylesheet may be: without it the tables are 450 px
        # wide on a phone (it failed so on a loaded machine). Laid out once the page has loaded.
        page.wait_for_load_state("load")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        # Every cell on screen, the rates and the server's words too: nothing to swipe sideways
        # for inside a table (on a phone each row stands as a block, cells under their names).
        rights = "[...document.querySelectorAll('#bounce-months td, #bounces td')]" + (
            ".map(e => e.getBoundingClientRect().right)"
        )
        assert max(page.evaluate(rights)) <= width
        page.screenshot(path=artifacts / f"console-bounces-{label}.png", full_page=True)
        page.get_by_role("link", name="lee.kawai@example.org").click()
        expect(page.locator("#status")).to_have_text("bounced")
        expect(page.locator("#bounces")).to_contain_text("550 5.1.1 user unknown")
        page.close()


def test_a_command_in_a_warning_is_code_and_everything_else_stays_text() -> None:
    """Only the quoted command becomes <code>; markup in the text around it is escaped."""
    shown = present.commands("<b>rate</b> & more: run `digest list --x <y>` now")
    assert shown == (
        '&lt;b&gt;rate&lt;/b&gt; &amp; more: run <code><span class="word">digest</span> '
        '<span class="word">list</span> <span class="word">--x</span> '
        '<span class="word">&lt;y&gt;</span></code> now'
    )
