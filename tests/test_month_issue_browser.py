"""Shaping November 2025 in the console with real Chromium: a Provost's note, the three items in
another order, the preview at 600 and 375 px in light and dark, then `digest render` and
`digest build --check` over what the console saved."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lxml.html
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from conftest import serving
from digest.publish import catalogue

ROOT = Path(__file__).resolve().parent.parent
DIGEST = shutil.which("digest") or str(Path(sys.executable).parent / "digest")
PASSWORD = "a long passphrase for the tests"  # noqa: S105 -- the tests' own
NOTE = "A note from the Provost"
# November's three items as the date rule shows them, and the order staff choose instead.
DATED = [
    "medical-school-preparations",
    "talk-william-mobley-empathy-and-compassion",
    "gptx-collaboration",
]
CHOSEN = [DATED[2], DATED[0], DATED[1]]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clean clone's worth of the project: catalogue, list and feeds."""
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    return tmp_path


def clean_env() -> dict[str, str]:
    """The environment without the machine's own DIGEST_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}


@pytest.fixture
def served(checkout: Path) -> Iterator[str]:
    """`digest serve` on a free loopback port over the checkout."""
    env = clean_env() | {"DIGEST_CONSOLE_PASSWORD": PASSWORD}
    with serving(checkout, env) as url:
        yield url


def digest(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the digest command in the checkout, as staff would after the save."""
    return subprocess.run(
        [DIGEST, *args], cwd=checkout, env=clean_env(), capture_output=True, text=True, check=False
    )


def follow(page: Page, served: str, link: Locator) -> None:
    """Open where a link of the page leads (its address, as a click would)."""
    href = link.get_attribute("href")
    assert href is not None
    page.goto(served + href)


def shoot_preview(page: Page, served: str, frame: Locator, path: Path) -> None:
    """Keep the framed preview as drawn at the frame's width (opened on its own, at that width:
    headless Chromium's element shots of a sandboxed frame came out blank)."""
    box = frame.bounding_box()
    src = frame.get_attribute("src")
    assert box is not None
    assert src is not None
    back = page.url
    page.set_viewport_size({"width": int(box["width"]) - 2, "height": 900})
    page.goto(served + src)
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size({"width": 1200, "height": 900})
    page.goto(back)


def background(page: Page) -> str:
    """Return the preview's page background colour, as the browser computes it."""
    body = page.frame_locator("iframe#look").locator("body")
    found: str = body.evaluate("b => getComputedStyle(b).backgroundColor")
    return found


def test_staff_write_a_provosts_note_and_reorder_november(
    browser: Browser, served: str, checkout: Path, artifacts: Path
) -> None:
    """The note comes first and the items in the chosen order, in the console and the render."""
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
    page.goto(served + "/months/2025-11")
    form = page.locator("form.issue-form")
    form.get_by_label("Introduction").fill(
        f"**{NOTE}**: thank you for a remarkable term. 谢谢 🎉\n\nWith best wishes, the Provost."
    )
    expect(page.locator("#intro-preview strong")).to_have_text(NOTE)  # the live preview
    for place, item_id in enumerate(CHOSEN, 1):
        form.locator(f"input[name='position-{item_id}']").fill(str(place))
    form.get_by_label("Subject").fill("From the Provost — {month:%B %Y}")
    page.screenshot(path=artifacts / "issue-1-form.png", full_page=True)
    form.get_by_role("button", name="Save the issue").click()
    expect(page.get_by_text("Saved the 2025-11 issue (save 1).")).to_be_visible()
    expect(page.get_by_text("Feeds rebuilt:")).to_be_visible()
    expect(page.locator("#subject")).to_have_text("From the Provost — November 2025")
    for place, item_id in enumerate(CHOSEN, 1):
        expect(form.locator(f"input[name='position-{item_id}']")).to_have_value(str(place))
    page.screenshot(path=artifacts / "issue-2-saved.png", full_page=True)

    preview = page.frame_locator("iframe#look")
    expect(preview.get_by_text(NOTE)).to_be_visible()
    colours = {}
    for width in (600, 375):
        for scheme in ("light", "dark"):
            follow(page, served, page.get_by_role("link", name=f"{width} px", exact=False))
            expect(page).to_have_url(re.compile(f"width={width}"))
            follow(page, served, page.get_by_role("link", name=scheme, exact=True))
            expect(page).to_have_url(re.compile(f"width={width}&scheme={scheme}"))
            frame = page.locator("iframe#look")
            expect(frame).to_have_attribute("class", f"preview w{width} {scheme}")
            expect(preview.get_by_text(NOTE)).to_be_visible()
            assert frame.bounding_box()["width"] == width + 2  # type: ignore[index]  # borders
            colours[scheme] = background(page)
            shoot_preview(page, served, frame, artifacts / f"issue-preview-{width}-{scheme}.png")
    assert colours["light"] != colours["dark"]
    assert violations == []

    rendered = digest(checkout, "render", "--month", "2025-11")
    assert rendered.returncode == 0, rendered.stderr
    tree = lxml.html.fromstring((checkout / "out" / "digest-2025-11.html").read_bytes())
    shown = tree.xpath("//*[@class='intro' or @class='item-title']")
    assert shown[0].get("class") == "intro", "the note comes first, before every item"
    assert NOTE in shown[0].text_content()
    titles = [e.text_content().strip() for e in shown[1:]]
    assert titles == _titles(checkout), "the items come in the order staff chose"
    built = digest(checkout, "build", "--check")
    assert built.returncode == 0, built.stdout + built.stderr


def _titles(checkout: Path) -> list[str]:
    """Return the chosen items' titles in the chosen order, as the catalogue has them."""
    loaded = catalogue.load(checkout / "items.yaml")
    by_id = {i.id: i.title for i in loaded.items}
    return [by_id[i] for i in CHOSEN]
