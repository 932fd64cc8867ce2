"""A shaped, branded digest in Chromium: the intro and logo at 600 px and 375 px, light and dark."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue, site
from helpers import NOW
from test_newsletter_browser import CONTRASTS

SHAPED = Path(__file__).parent / "data" / "shaped.yaml"
LOGO_URL = "https://news.example.edu/img/logo.png"
# The office's logo as the browser gets it, in the accent colour; every other remote load fails.
LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="360" height="80" viewBox="0 0 360 80">'
    b'<rect width="360" height="80" rx="10" fill="#7a1f5c"/>'
    b'<text x="180" y="52" font-family="Georgia, serif" font-size="34" fill="#ffffff" '
    b'text-anchor="middle">Campus News</text></svg>'
)
HEIGHT = 900
REMOTE = re.compile(r"^https?://")


def serve(route: Route) -> None:
    if route.request.url == LOGO_URL:
        route.fulfill(status=200, content_type="image/svg+xml", body=LOGO)
    else:
        route.abort()


@pytest.fixture
def show(browser: Browser, tmp_path: Path) -> Iterator[Callable[..., Page]]:
    """Open HTML in a new page; the logo is served, anything else remote fails at once."""
    pages: list[Page] = []

    def open_html(html: str, width: int = 600, color_scheme: Any = "light") -> Page:
        path = tmp_path / f"page-{len(pages)}.html"
        path.write_text(html, encoding="utf-8")
        page = browser.new_page(
            viewport={"width": width, "height": HEIGHT}, color_scheme=color_scheme
        )
        pages.append(page)
        page.route(REMOTE, serve)
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        return page

    yield open_html
    for page in pages:
        page.close()


def email() -> str:
    cat = catalogue.load(SHAPED)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, Month(2025, 11), NOW))
    return rendered.personalise("Prof. Chan", "mailto:news@example.edu?subject=unsubscribe")[0]


def top(page: Page, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    return box["y"]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [600, 375])
def test_logo_then_header_then_greeting_then_intro(
    show: Callable[..., Page], artifacts: Path, width: int, scheme: str
) -> None:
    """A reader sees the logo, the title, the greeting, the Provost's note, then the stories."""
    page = show(email(), width, scheme)
    page.screenshot(path=artifacts / f"newsletter-shaped-{width}-{scheme}.png", full_page=True)
    logo = page.locator("img.logo")
    assert logo.is_visible()
    assert page.evaluate("document.querySelector('img.logo').naturalWidth") == 360
    box = logo.bounding_box()
    assert box is not None
    assert box["width"] == 180  # the catalogue's width, within the phone's screen too
    order = [top(page, s) for s in ("img.logo", ".header", ".greeting", ".intro", "h2.category")]
    assert order == sorted(order)
    assert page.locator(".intro").inner_text().startswith("A note from the Provost")
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [600, 375])
def test_branded_text_stands_out(show: Callable[..., Page], width: int, scheme: str) -> None:
    """The accent never makes text fade: every text passes WCAG AA (4.5:1), light and dark."""
    page = show(email(), width, scheme)
    contrasts = page.eval_on_selector_all("body *", CONTRASTS)
    assert len(contrasts) > 10
    assert [c for c in contrasts if c[2] < 4.5] == []
    header = page.eval_on_selector(".header", "e => getComputedStyle(e).backgroundColor")
    assert header == "rgb(122, 31, 92)"  # the accent, in dark mode too


@pytest.mark.parametrize("name", ["archive/2025-11.html", "index.html"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_web_pages_show_the_brand(
    show: Callable[..., Page], artifacts: Path, name: str, scheme: str
) -> None:
    """The archive page and the feeds page carry the logo and stay readable, light and dark."""
    html = site.render(catalogue.load(SHAPED), NOW)[name].decode()
    page = show(html, 375, scheme)
    shot = "archive-2025-11" if name.startswith("archive") else "feeds-page"
    page.screenshot(path=artifacts / f"shaped-{shot}-375-{scheme}.png", full_page=True)
    assert page.locator("img.logo").is_visible()
    assert page.evaluate("document.querySelector('img.logo').naturalWidth") == 360
    assert page.locator(".address").inner_text() == "News Office, 1 University Road, Hong Kong"
    contrasts = page.eval_on_selector_all("body *", CONTRASTS)
    assert [c for c in contrasts if c[2] < 4.5] == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
