"""The announcement editor in a real browser: `digest serve` as a process over a git checkout,
Chromium through Playwright; the acceptance of issue 17's first three parts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import feedparser
import lxml.html
import pytest
from playwright.sync_api import Browser, Page, expect

from conftest import serving

ROOT = Path(__file__).resolve().parent.parent
DIGEST = shutil.which("digest") or str(Path(sys.executable).parent / "digest")
PASSWORD = "a long passphrase for the tests"  # noqa: S105 -- the tests' own
TITLE = 'Seminar #3: "AI & Society"'


def git(folder: Path, *args: str) -> str:
    """Run git in `folder` as the office's own checkout would, and return what it printed."""
    identity = ["-c", "user.name=Office", "-c", "user.email=office@example.edu"]
    done = subprocess.run(
        ["git", "-C", str(folder), *identity, *args], check=True, capture_output=True, text=True
    )
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clean clone's worth of the project: catalogue, list and feeds, committed to git."""
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "The office's catalogue")
    return tmp_path


@pytest.fixture
def served(checkout: Path) -> Iterator[str]:
    """`digest serve` on a free loopback port over the checkout, committing each save."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {"DIGEST_CONSOLE_PASSWORD": PASSWORD, "DIGEST_EDITOR_GIT_COMMIT": "1"}
    with serving(checkout, env) as url:
        yield url


def shot(page: Page, artifacts: Path, name: str) -> None:
    """Keep a screenshot for a person to look at."""
    page.screenshot(path=artifacts / f"editor-{name}.png", full_page=True)


def test_staff_add_an_announcement_fix_it_publish_and_see_it_everywhere(
    browser: Browser, served: str, checkout: Path, artifacts: Path
) -> None:
    """Create, see the error at the field, fix, publish: in the feeds, the digest and git."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(served + "/login")
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Console password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Announcements").click()
    expect(page.get_by_role("heading", name="Announcements")).to_be_visible()
    shot(page, artifacts, "1-list")

    page.get_by_role("link", name="New announcement").click()
    page.get_by_label("Title", exact=True).fill(TITLE)
    page.get_by_label("Date (YYYY-MM-DD").fill("2025-11-31")
    page.get_by_label("Category").select_option("engagement")
    page.get_by_label("Section").select_option("events")
    page.get_by_label("Summary", exact=False).first.fill(
        "A talk on **AI** and society, in the *Provost's* series."
    )
    expect(page.locator("#summary-preview strong")).to_have_text("AI")  # the live preview
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#date-error")).to_have_text(
        "'2025-11-31' is not a real date (day is out of range for month)"
    )
    expect(page.get_by_label("Title", exact=True)).to_have_value(TITLE)
    expect(page.locator("#summary-preview strong")).to_have_text("AI")
    shot(page, artifacts, "2-error-at-the-field")

    page.locator("input[name=date]").fill("2025-11-28")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("heading", name=TITLE)).to_be_visible()
    expect(page.locator("#status")).to_have_text("published")
    expect(page.get_by_text("Saved seminar-3-ai-society: it is now published")).to_be_visible()
    expect(page.get_by_text("Committed to git as")).to_be_visible()
    expect(page.get_by_text("Feeds rebuilt:")).to_be_visible()
    expect(page.locator("input[name=id]")).to_have_value("seminar-3-ai-society")
    shot(page, artifacts, "3-published")

    page.goto(served + "/feeds/")
    expect(page.get_by_text(TITLE)).to_be_visible()
    shot(page, artifacts, "4-feeds-page")

    page.goto(served + "/months/2025-11")
    expect(page.locator("ul.items").get_by_text(TITLE)).to_be_visible()
    expect(page.frame_locator("iframe.preview").get_by_role("heading", name=TITLE)).to_be_visible()
    expect(page.locator("pre.text")).to_contain_text(TITLE)
    shot(page, artifacts, "5-month-preview")
    assert violations == []
    page.close()

    # The acceptance, as a person checks it from the clone.
    diff = git(checkout, "diff", "HEAD~1", "--", "items.yaml")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in "+++---"]
    assert all(line.startswith("+") for line in changed), diff
    assert "+    title: 'Seminar #3: \"AI & Society\"'" in changed
    assert git(checkout, "log", "-1", "--format=%an") == "Ada Lovelace\n"
    assert git(checkout, "status", "--porcelain", "--", "items.yaml") == ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    checked = subprocess.run(
        [DIGEST, "check"], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    for name in ("all.atom.xml", "all.rss.xml", "engagement.atom.xml", "engagement.rss.xml"):
        feed = feedparser.parse((checkout / "feeds" / name).read_bytes())
        assert TITLE in [entry.title for entry in feed.entries], name
    for name in ("all.json", "engagement.json"):
        items = json.loads((checkout / "feeds" / name).read_bytes())["items"]
        assert TITLE in [entry["title"] for entry in items], name
    rendered = subprocess.run(
        [DIGEST, "render", "--month", "2025-11", "-o", "out"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert TITLE in (checkout / "out" / "digest-2025-11.txt").read_text()
    html = lxml.html.fromstring((checkout / "out" / "digest-2025-11.html").read_bytes())
    assert TITLE in [h.text_content().strip() for h in html.xpath("//h3")]
    built = subprocess.run(
        [DIGEST, "build", "--check"], cwd=checkout, env=env, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout + built.stderr
