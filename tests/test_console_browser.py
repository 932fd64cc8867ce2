"""The staff console in a real browser: `digest serve` as a process, Chromium, real SMTP."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from werkzeug.serving import make_server

from conftest import SmtpServer, serving
from digest import console
from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a long passphrase for the tests"  # noqa: S105 -- the tests' own
READERS = 11  # the bundled November readers (smith.john's categories have no November items)


@pytest.fixture
def served(
    request: pytest.FixtureRequest, tmp_path: Path, smtp_server: SmtpServer
) -> Iterator[str]:
    """`digest serve` on a free loopback port over a copy of the project; yields its URL.

    Parametrized indirectly, a dict of environment variables replaces the defaults (None: unset).
    """
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {
        "DIGEST_CONSOLE_PASSWORD": PASSWORD,
        "DIGEST_SECRET_KEY": "k" * 43,
        "DIGEST_SMTP_URL": smtp_server.url,
        "DIGEST_PUBLIC_URL": "https://digest.example.edu/",
    }
    for name, value in getattr(request, "param", {}).items():
        env.pop(name)
        if value is not None:
            env[name] = value
    with serving(tmp_path, env) as url:
        yield url


@pytest.mark.parametrize(
    "served", [{"DIGEST_SECRET_KEY": None, "DIGEST_PUBLIC_URL": None}], indirect=True
)
def test_console_starts_without_a_secret_key_when_no_links_go_out(
    browser: Browser, served: str
) -> None:
    """`DIGEST_CONSOLE_PASSWORD=... digest serve` alone starts, and staff can log in."""
    page = browser.new_page()
    try:
        page.goto(f"{served}/")
        page.get_by_label("Your name").fill("Ada Lovelace")
        page.get_by_label("Console password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    finally:
        page.close()


def november_titles() -> list[str]:
    loaded = catalogue.load(ROOT / "items.yaml")
    chosen = newsletter.issue(loaded, Month(2025, 11), datetime.now(UTC))
    return [item.title for item in chosen.items]


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=artifacts / f"console-{name}.png", full_page=True)


def test_staff_preview_test_send_and_send_to_the_list(
    browser: Browser, served: str, smtp_server: SmtpServer, artifacts: Path
) -> None:
    """Staff log in, see every November item, send themselves a test, send to all, see it done."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(served + "/")
    expect(page).to_have_url(f"{served}/login?next=/")
    shot(page, artifacts, "1-login")
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Console password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_text("items.yaml is valid")).to_be_visible()
    expect(page.locator("#subscriber-count")).to_have_text("12")
    expect(page.get_by_text("Next scheduled run:")).to_be_visible()
    shot(page, artifacts, "2-dashboard")

    page.get_by_role("link", name="November 2025").click()
    expect(page.get_by_role("heading", name="November 2025", exact=True)).to_be_visible()
    titles = november_titles()
    assert titles
    preview = page.frame_locator("iframe.preview")
    for title in titles:
        expect(page.locator("ul.items").get_by_text(title)).to_be_visible()
        expect(preview.get_by_role("heading", name=title)).to_be_visible()
        expect(page.locator("pre.text")).to_contain_text(title)
    shot(page, artifacts, "3-month")

    page.get_by_label("Send a [TEST] copy to").fill("tester@example.org")
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Sent 1 test copy of November 2025 to tester@example.org"
    )
    assert [m.rcpt_tos for m in smtp_server.recorder.messages] == [["tester@example.org"]]
    assert str(smtp_server.recorder.messages[0].message["Subject"]).startswith("[TEST] ")
    shot(page, artifacts, "4-test-sent")

    page.get_by_role("link", name="Send to all subscribers…").click()
    expect(page.locator("#plan-items")).to_have_text(str(len(titles)))
    expect(page.locator("#plan-recipients")).to_contain_text(f"{READERS} to send")
    expect(page.locator("#plan-transport")).to_have_text(smtp_server.url)
    shot(page, artifacts, "5-confirm")
    page.get_by_role("button", name=f"Send November 2025 to {READERS} subscribers").click()

    expect(page.locator("#state")).to_contain_text(
        f"November 2025: sent {READERS}, already sent 0", timeout=30_000
    )
    shot(page, artifacts, "6-sent")
    assert len(smtp_server.recorder.by_recipient()) == READERS + 1

    page.get_by_role("link", name="History of November 2025").click()
    expect(page.locator("#counts")).to_have_text(f"sent {READERS}, failed 0, deferred 0, pending 0")
    expect(page.get_by_text("digest serve, started by Ada Lovelace")).to_be_visible()
    shot(page, artifacts, "7-history")

    # A reader follows the link in their email (the public URL, here served locally).
    received = smtp_server.recorder.by_recipient()["ng.chiho@example.org"][0].message
    header = str(received["List-Unsubscribe"])
    url = header.split(">")[0].removeprefix("<")
    assert url.startswith("https://digest.example.edu/unsubscribe/")
    reader = browser.new_page(viewport={"width": 390, "height": 700})
    reader.goto(url.replace("https://digest.example.edu", served))
    expect(reader.get_by_text("ng.chiho@example.org")).to_be_visible()
    shot(reader, artifacts, "10-unsubscribe-confirm")
    reader.get_by_role("button", name="Unsubscribe").click()
    expect(reader.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    shot(reader, artifacts, "11-unsubscribed")
    reader.close()
    page.get_by_role("link", name="Dashboard").click()
    off = "1 address off the list (1 unsubscribed), never sent again"
    expect(page.get_by_text(off)).to_be_visible()
    assert violations == []
    page.close()


def test_month_page_fits_a_phone(browser: Browser, served: str, artifacts: Path) -> None:
    """On a phone the month page scrolls down only, and the preview shows the digest."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(served + "/login?next=/months/2025-11")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Console password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="November 2025", exact=True)).to_be_visible()
    page.wait_for_load_state("load")  # measured as laid out with the stylesheet, not before it
    first = november_titles()[0]
    expect(page.frame_locator("iframe.preview").get_by_role("heading", name=first)).to_be_visible()
    shot(page, artifacts, "8-month-phone")
    # Chromium paints a sandboxed (out-of-process) frame only once it has been on screen.
    page.locator("iframe.preview").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.locator("iframe.preview").screenshot(path=artifacts / "console-9-preview-phone.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()


def test_history_shows_refused_recipients_and_their_replies(
    browser: Browser, served: str, smtp_server: SmtpServer, artifacts: Path
) -> None:
    """After a send, staff see who was refused and what the server said, as plain text."""
    smtp_server.recorder.refuse["lee.kawai@example.org"] = "550 5.1.1 <lee.kawai>: no such user"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(served + "/login?next=/months/2025-11/send")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Console password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name=f"Send November 2025 to {READERS} subscribers").click()
    expect(page.locator("#state")).to_contain_text(
        f"sent {READERS - 1}, already sent 0, deferred 0, failed 1", timeout=30_000
    )
    expect(page.get_by_text("failed: lee.kawai@example.org: 550 5.1.1 <lee.kawai>")).to_be_visible()
    page.get_by_role("link", name="History of November 2025").click()
    row = page.locator("table.problems tr", has_text="lee.kawai@example.org")
    expect(row).to_contain_text("failed")
    expect(row).to_contain_text("550 5.1.1 <lee.kawai>: no such user")
    shot(page, artifacts, "12-history-failed")
    page.close()


# -- what staff read: outcomes, titles, times, warnings, the header (issue 14) ------------------


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer) -> Iterator[str]:
    """The console in this process, on a free loopback port, sending once to the SMTP server.

    Retrying a deferred recipient within the run is turned off, so that a deferral stays one.
    """
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    app = console.create_app(
        console.Config(
            catalogue_path=Path("items.yaml"),
            state_path=Path(".digest/state.sqlite3"),
            feeds_dir=Path("feeds"),
            password=PASSWORD,
            secret_key="k" * 43,
            clock=lambda: datetime.now(UTC),
            smtp_url=smtp_server.url,
        )
    )
    console.console_of(app).retry_policy = console.delivery.RetryPolicy(attempts=1, base_delay=0)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="console-under-test")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        console.wait_for_jobs(app)


def log_in(page: Page, url: str, name: str = "Ada") -> None:
    """Log in through the form at `url` (a console page behind the login)."""
    page.goto(url)
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Console password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def rgb(page: Page, selector: str, prop: str = "background-color") -> tuple[int, ...]:
    """Return an element's computed colour as (red, green, blue)."""
    value = page.eval_on_selector(selector, f"e => getComputedStyle(e)['{prop}']")
    return tuple(int(part) for part in value.strip("rgba()").split(",")[:3])


def test_a_send_with_failures_ends_in_red_with_local_times(
    browser: Browser, live: str, smtp_server: SmtpServer, artifacts: Path
) -> None:
    """After a send that missed two readers, the page turns red and says so; times are local."""
    smtp_server.recorder.refuse["lee.kawai@example.org"] = "550 5.1.1 <lee.kawai>: no such user"
    smtp_server.recorder.refuse["chan.taiman@example.org"] = "451 4.3.0 try again later"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    log_in(page, f"{live}/login?next=/months/2025-11/send")
    page.get_by_role("button", name=f"Send November 2025 to {READERS} subscribers").click()
    state = page.locator("#state")
    expect(state).to_contain_text("Some not delivered", timeout=30_000)
    expect(state).to_contain_text("deferred 1, failed 1")
    expect(page.get_by_role("heading", level=1)).to_have_text("November 2025: some not delivered")
    expect(page).to_have_title("November 2025: some not delivered · Digest console")
    red, green, _ = rgb(page, "#state")
    assert red > green  # a red tint, as every error on the console; success is green
    shot(page, artifacts, "13-progress-some-not-delivered")
    page.goto(f"{live}/")
    row = page.locator("#runs tr", has_text="2025-11")
    expect(row.locator(".verdict")).to_have_text("Some not delivered")
    expect(row).to_contain_text(re.compile(r"\d\d:\d\d HKT \(\+08:00\)"))
    shot(page, artifacts, "14-dashboard-after-send")
    page.close()


def test_an_error_page_says_what_happened(
    browser: Browser, served: str, tmp_path: Path, artifacts: Path
) -> None:
    """Staff who open a month while the catalogue is broken read "The catalogue has errors"."""
    source = (tmp_path / "items.yaml").read_text(encoding="utf-8")
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    log_in(page, f"{served}/")
    (tmp_path / "items.yaml").write_text(source.replace("date: 2025-11-19", "date: x", 1))
    page.goto(f"{served}/months/2025-11")
    expect(page).to_have_title("The catalogue has errors · Digest console")
    expect(page.get_by_role("heading", level=1)).to_have_text("The catalogue has errors")
    expect(page.get_by_text("Conflict")).to_have_count(0)
    shot(page, artifacts, "15-error-catalogue")
    page.close()


@pytest.mark.parametrize("served", [{"DIGEST_SMTP_URL": None}], indirect=True)
def test_a_send_to_the_outbox_is_announced(browser: Browser, served: str, artifacts: Path) -> None:
    """Without a mail server, staff see before sending that nobody will receive anything."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    log_in(page, f"{served}/months/2025-11")
    warning = "this send only writes files to outbox/ — nobody receives anything."
    expect(page.locator(".outbox-warning")).to_contain_text(warning)
    page.get_by_role("link", name="Send to all subscribers…").click()
    expect(page.get_by_role("alert")).to_contain_text(warning)
    shot(page, artifacts, "16-confirm-outbox")
    page.close()


LONG_NAME = "Dr. Maximiliana Wolfeschlegelsteinhausenbergerdorff-Oyelaran, Registrar's Office"


@pytest.mark.parametrize(("width", "label"), [(1200, "desktop"), (390, "phone")])
def test_a_long_name_stays_clear_of_log_out(
    browser: Browser, served: str, artifacts: Path, width: int, label: str
) -> None:
    """However long the name staff logged in with, it never runs into the "Log out" button."""
    page = browser.new_page(viewport={"width": width, "height": 700})
    log_in(page, f"{served}/", name=LONG_NAME)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.wait_for_load_state("load")  # measured as laid out with the stylesheet, not before it
    name = page.locator("header .who").bounding_box()
    button = page.get_by_role("button", name="Log out").bounding_box()
    assert name is not None
    assert button is not None
    horizontal = max(
        button["x"] - (name["x"] + name["width"]), name["x"] - (button["x"] + button["width"])
    )
    vertical = max(
        button["y"] - (name["y"] + name["height"]), name["y"] - (button["y"] + button["height"])
    )
    assert max(horizontal, vertical) >= 8, (name, button)  # apart, with room between
    assert button["x"] + button["width"] <= width  # and the button on screen
    wide = "[...document.querySelectorAll('header *')].map(e => e.getBoundingClientRect().right)"
    assert max(page.evaluate(wide)) <= width  # nothing in the header off screen
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nor in the tables
    page.locator("header").screenshot(path=artifacts / f"console-17-header-{label}.png")
    page.close()
