"""The feed page in a real browser, at a desktop and a phone width."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser

from digest.publish import catalogue, site
from helpers import NOW

DATA = Path(__file__).parent / "data"
SOURCES = {"bundled": Path(__file__).parent.parent / "items.yaml", "rich": DATA / "rich.yaml"}


@pytest.mark.parametrize("width", [1000, 375])
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_feed_page_fits_the_screen(
    browser: Browser, tmp_path: Path, artifacts: Path, name: str, width: int
) -> None:
    """On a phone the feed page scrolls down only, never sideways, and every feed link shows."""
    (tmp_path / "index.html").write_bytes(
        site.render(catalogue.load(SOURCES[name]), NOW)["index.html"]
    )
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto((tmp_path / "index.html").as_uri())
    page.screenshot(path=artifacts / f"feed-page-{name}-{width}.png", full_page=True)
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width
    links = page.locator("#subscribe a")
    line_height = links.first.evaluate("a => parseFloat(getComputedStyle(a).lineHeight)")
    assert links.count() == 3 * (1 + len(catalogue.load(SOURCES[name]).publication.categories))
    for index in range(links.count()):
        box = links.nth(index).bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= width
        assert box["height"] < 1.5 * line_height  # "JSON Feed" must not break in two
    page.close()
