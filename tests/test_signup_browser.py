"""A reader's whole path in Chromium: the feed page's form, the confirmation mail, the button, the
preferences page, and the next send honouring the categories they chose."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from playwright.sync_api import Browser, expect
from werkzeug.serving import make_server

from conftest import SmtpServer, free_port
from digest import console
from digest.app import publishing
from digest.app.settings import Settings
from digest.cli import cli

ROOT = Path(__file__).resolve().parent.parent
READER = "reader@example.org"


@pytest.fixture
def site(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """The public pages served on a loopback port, and the feed page built to point at them."""
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for name in ("DIGEST_STATE", "DIGEST_PUBLIC_URL", "DIGEST_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    settings = Settings(
        catalogue_path=Path("items.yaml"),
        state_path=Path(".digest/state.sqlite3"),
        outbox=Path("outbox"),
        public_url=public,
    )
    publishing.build(settings, tmp_path / "feeds", datetime.now(UTC))
    config = console.Config(
        catalogue_path=Path("items.yaml"),
        state_path=Path(".digest/state.sqlite3"),
        feeds_dir=Path("feeds"),
        password="a long passphrase for the tests",  # noqa: S106 -- the tests' own
        secret_key="k" * 43,
        clock=lambda: datetime.now(UTC),
        public_url=public,
        smtp_url=smtp_server.url,
    )
    server = make_server("127.0.0.1", port, console.create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield public, tmp_path / "feeds" / "index.html"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_reader_signs_up_confirms_and_chooses_categories(
    site: tuple[str, Path],
    browser: Browser,
    smtp_server: SmtpServer,
    artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reader who signs up from the feed page and picks two categories gets only those."""
    public, index = site
    page = browser.new_page(viewport={"width": 900, "height": 900})
    page.goto(index.as_uri())
    page.fill("#signup-email", READER)
    page.fill("#signup-name", "Rea Der")
    page.screenshot(path=str(artifacts / "signup-1-feeds-page.png"), full_page=False)
    page.click("#email button[type=submit]")

    expect(page.locator("h1")).to_have_text("Subscribe to the monthly digest")
    expect(page.locator("#email")).to_have_value(READER)
    page.screenshot(path=str(artifacts / "signup-2-form.png"))
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your inbox")
    page.screenshot(path=str(artifacts / "signup-3-check-inbox.png"))

    assert [m.rcpt_tos for m in smtp_server.recorder.messages] == [[READER]]
    mail = smtp_server.recorder.messages[0].message
    assert str(mail["Subject"]) == "Confirm your subscription to What's Happening"
    body = mail.get_body(("plain",))
    assert body is not None
    found = re.search(rf"{re.escape(public)}/confirm/\S+", str(body.get_content()))
    assert found
    page.goto(found.group())
    expect(page.locator("h1")).to_have_text("Confirm your subscription")
    page.screenshot(path=str(artifacts / "signup-4-confirm.png"))
    page.click("button[type=submit]")

    expect(page.locator("[role=status]")).to_have_text("You are subscribed.")
    page.check("input[value=engagement]")
    page.check("input[value=collaboration]")
    page.screenshot(path=str(artifacts / "signup-5-preferences.png"))
    page.click("button[value=categories]")
    expect(page.locator("[role=status]")).to_have_text("Your choice is saved.")
    expect(page.locator("input[value=engagement]")).to_be_checked()
    expect(page.locator("input[value=collaboration]")).to_be_checked()
    expect(page.locator("input[value=visit]")).not_to_be_checked()
    page.screenshot(path=str(artifacts / "signup-6-saved.png"))
    page.close()

    runner = CliRunner()
    listed = runner.invoke(cli, ["subscribers", "list", "--status", "active", "--format", "csv"])
    assert f"{READER},Rea Der,active,collaboration;engagement,signup,no" in listed.stdout
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    smtp_server.recorder.messages.clear()
    sent = runner.invoke(cli, ["send", "--month", "2025-11", "--yes"])
    assert sent.exit_code == 0, sent.output
    mine = smtp_server.recorder.by_recipient()[READER]
    assert len(mine) == 1
    text = mine[0].message.get_body(("plain",))
    assert text is not None
    content = str(text.get_content())
    assert "GPTX" in content  # collaboration
    assert "Mobley" in content  # engagement
    assert "Medical School" not in content  # institutional advancement: not chosen
