"""The newsletter in a real browser: email and web versions, phone and desktop widths, dark mode."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue
from helpers import NOW, item, load_text, yaml_catalogue

DATA = Path(__file__).parent / "data"
SOURCES = {"bundled": Path(__file__).parent.parent / "items.yaml", "rich": DATA / "rich.yaml"}
NOVEMBER = Month(2025, 11)
NAME = "Prof. Chan"
UNSUBSCRIBE = "mailto:provost@example.edu?subject=unsubscribe"
HEIGHT = 900
ABSOLUTE = ("https://", "http://", "mailto:")
# Nothing leaves the machine: remote images and links fail at once instead of waiting on DNS.
REMOTE = re.compile(r"^https?://")

# What a reader sees, top to bottom: each category heading, then its items' titles.
OUTLINES = {
    "bundled": [
        ("H2", "Institutional Advancement"),
        ("H3", "HKUST Commences Preparations for New Medical School"),
        ("H2", "Engagement"),
        ("H3", "Talk by Dr. William Mobley - Educating for Empathy & Compassion"),
        ("H2", "Collaboration"),
        (
            "H3",
            "HKUST & GPTX Forge Collaboration to Advance Innovation & Entrepreneurship"
            " in AI, Robotics & Healthcare",
        ),
    ],
    "rich": [
        ("H2", "Research & Innovation"),
        ("H3", "Robots & <Humans>: a 中文 title 🎉"),
        ("H2", "People"),
        ("H3", "New Dean appointed"),
    ],
}
IMAGE_ALTS = {"bundled": [], "rich": ["Two students and a robot arm"]}

# (catalogue, width, web): both catalogues' email at a desktop mail pane's width and a phone's,
# and the archive page on a phone.
VIEWS = [
    pytest.param(name, width, web, id=f"{name}-{'web' if web else 'email'}-{width}")
    for name in sorted(SOURCES)
    for width, web in [(600, False), (375, False), (375, True)]
]
# A desktop browser wider than the layout, where the container must stop at 600px.
WIDE = [pytest.param(name, 1000, False, id=f"{name}-email-1000") for name in sorted(SOURCES)]

# Every visible element that holds text of its own, with its text colour and the colour of the
# nearest background actually painted behind it, as a WCAG contrast ratio.
CONTRASTS = """els => {
  const rgb = s => s.match(/[\\d.]+/g).map(Number);
  const channel = c => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const ownText = e => [...e.childNodes].some(n => n.nodeType === 3 && n.data.trim());
  return els.filter(e => ownText(e) && e.getClientRects().length).map(e => {
    let node = e, background = [255, 255, 255];
    for (; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length < 4 || c[3] > 0) { background = c; break; }
    }
    const [hi, lo] = [luminance(rgb(getComputedStyle(e).color)), luminance(background)]
      .sort((a, b) => b - a);
    return [e.tagName + "." + e.className, e.innerText.slice(0, 30), (hi + 0.05) / (lo + 0.05)];
  });
}"""


@functools.cache
def digest_html(name: str, web: bool) -> str:
    """Return the November 2025 digest of a test catalogue, personalised unless `web`."""
    cat = catalogue.load(SOURCES[name])
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW), web=web)
    return rendered.html if web else rendered.personalise(NAME, UNSUBSCRIBE)[0]


@pytest.fixture
def show(browser: Browser, tmp_path: Path) -> Iterator[Callable[..., Page]]:
    """Open HTML in a new page of the shared browser; every page is closed after the test."""
    pages: list[Page] = []

    def open_html(html: str, width: int = 600, color_scheme: Any = "light") -> Page:
        path = tmp_path / f"digest-{len(pages)}.html"
        path.write_text(html, encoding="utf-8")
        page = browser.new_page(
            viewport={"width": width, "height": HEIGHT}, color_scheme=color_scheme
        )
        pages.append(page)
        page.route(REMOTE, lambda route: route.abort())
        page.goto(path.as_uri())
        return page

    yield open_html
    for page in pages:
        page.close()


def shot_name(name: str, width: int, web: bool) -> str:
    """Return the screenshot's file name for a view."""
    if not web:
        return f"newsletter-{name}-{width}.png"
    return (
        f"newsletter-web-{width}.png" if name == "bundled" else f"newsletter-web-{name}-{width}.png"
    )


def background(page: Page, selector: str) -> str:
    """Return the computed background colour of the first element matching `selector`."""
    color: str = page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor")
    return color


@pytest.mark.parametrize(("name", "width", "web"), VIEWS + WIDE)
def test_digest_fits_the_screen(
    show: Callable[..., Page], artifacts: Path, name: str, width: int, web: bool
) -> None:
    """On a phone the digest scrolls down only, never sideways, and never grows past 600px."""
    page = show(digest_html(name, web), width)
    page.screenshot(path=artifacts / shot_name(name, width, web), full_page=True)
    sticking_out = page.eval_on_selector_all(
        "body *",
        f"els => els.filter(e => e.getBoundingClientRect().right > {width})"
        ".map(e => e.tagName + '.' + e.className)",
    )
    assert sticking_out == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    box = page.locator("table.container").bounding_box()
    assert box is not None
    assert box["width"] <= min(600, width)
    assert box["x"] >= 0


@pytest.mark.parametrize(("name", "width", "web"), VIEWS)
def test_images_have_alt_text_and_links_are_absolute(
    show: Callable[..., Page], name: str, width: int, web: bool
) -> None:
    """A mail app blocking images shows a description, and no link points into the void."""
    page = show(digest_html(name, web), width)
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('alt'), e.getAttribute('src')])"
    )
    assert [alt for alt, _ in images] == IMAGE_ALTS[name]
    assert all(alt and alt.strip() for alt, _ in images)
    assert all(src.startswith("https://") for _, src in images)
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    assert hrefs  # the footer's links at least
    assert [h for h in hrefs if not h.startswith(ABSOLUTE)] == []


@pytest.mark.parametrize(("name", "width", "web"), VIEWS)
def test_reader_sees_each_title_once_in_category_order(
    show: Callable[..., Page], name: str, width: int, web: bool
) -> None:
    """Every story of the month shows once, under its category, in the order the office set."""
    page = show(digest_html(name, web), width)
    outline = page.eval_on_selector_all("h2, h3", "els => els.map(e => [e.tagName, e.innerText])")
    # The category headings are upper-cased by CSS, which innerText reflects.
    assert [(tag, text.casefold()) for tag, text in outline] == [
        (tag, text.casefold()) for tag, text in OUTLINES[name]
    ]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_personal_parts_show_only_in_the_email(show: Callable[..., Page], name: str) -> None:
    """The inbox preview line stays hidden, the email greets by name, the archive greets nobody."""
    email = show(digest_html(name, web=False))
    preheader = email.locator(".preheader")
    assert preheader.count() == 1
    assert preheader.is_hidden()
    assert preheader.bounding_box() is None
    first_title = OUTLINES[name][1][1]
    assert (preheader.text_content() or "").startswith(first_title)
    greeting = email.locator(".greeting")
    assert greeting.is_visible()
    assert greeting.inner_text() == f"Dear {NAME},"
    unsubscribe = email.get_by_role("link", name="Unsubscribe")
    assert unsubscribe.get_attribute("href") == UNSUBSCRIBE

    web = show(digest_html(name, web=True))
    assert web.locator(".preheader").is_hidden()
    assert web.locator(".greeting").count() == 0
    assert "Dear" not in web.locator("body").inner_text()
    assert web.get_by_role("link", name="Unsubscribe").count() == 0


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_dark_mode_turns_the_digest_dark(
    show: Callable[..., Page], artifacts: Path, name: str
) -> None:
    """A reader in dark mode gets a dark digest instead of a glaring white page."""
    light = show(digest_html(name, web=False))
    dark = show(digest_html(name, web=False), color_scheme="dark")
    dark.screenshot(path=artifacts / f"newsletter-{name}-dark-600.png", full_page=True)
    for selector in ("body", "table.container", "td.item-cell"):
        assert background(dark, selector) != background(light, selector), selector
    assert background(light, "table.container") == "rgb(255, 255, 255)"
    assert background(dark, "table.container") == "rgb(27, 31, 36)"


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_text_stands_out_from_its_background(
    show: Callable[..., Page], name: str, scheme: str
) -> None:
    """No text fades into its background, in light mode or dark (WCAG AA, 4.5:1)."""
    page = show(digest_html(name, web=False), 375, scheme)
    contrasts = page.eval_on_selector_all("body *", CONTRASTS)
    assert len(contrasts) > 10
    assert [c for c in contrasts if c[2] < 4.5] == []


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_styles_are_inlined_and_one_media_block_is_left(
    show: Callable[..., Page], name: str
) -> None:
    """Mail apps that drop <style> still show the styled digest; dark mode still overrides it."""
    html = digest_html(name, web=False)
    assert html.count("<style") == 1
    page = show(html)
    styles = page.eval_on_selector_all("style", "els => els.map(e => e.textContent)")
    assert len(styles) == 1
    assert "prefers-color-scheme: dark" in styles[0]
    assert "!important" in styles[0]
    unstyled = page.eval_on_selector_all(
        ".body, .wrapper, .wrapper-cell, .container, .header, .title, .month, .greeting,"
        " .section, .category, .item-cell, .item-title, .item-date, .read-more, .footer,"
        " .preheader",
        "els => els.filter(e => !e.getAttribute('style')).map(e => e.className)",
    )
    assert unstyled == []
    title_styles = page.eval_on_selector_all(
        ".item-title", "els => els.map(e => e.getAttribute('style'))"
    )
    assert title_styles
    assert all("font-size" in style for style in title_styles)


def test_hostile_item_runs_no_script(show: Callable[..., Page], tmp_path: Path) -> None:
    """A title or summary with script in it shows as text and never runs in the reader's browser."""
    cat = load_text(
        yaml_catalogue(
            item(
                title="'<script>window.__pwned=1</script>'",
                summary='\'<img src=x onerror="window.__pwned=2"> [x](javascript:window.__pwned=3)'
                ' <a href="javascript:window.__pwned=4">y</a>\'',
            )
        ),
        tmp_path,
    )
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    html, _ = rendered.personalise(
        '<img src=x onerror="window.__pwned=5">', "mailto:news@example.edu?subject=unsubscribe"
    )
    page = show(html)
    # Clicking an http(s) or mailto link would leave the page; a javascript: one must still run.
    page.evaluate(
        """document.addEventListener("click", e => {
            const a = e.target.closest("a[href]");
            if (a && /^(https?|mailto):/.test(a.getAttribute("href"))) e.preventDefault();
        }, true)"""
    )
    links = page.locator("a[href]")
    for index in range(links.count()):
        links.nth(index).click()
    page.wait_for_timeout(200)
    assert page.url.startswith("file://")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("h3.item-title").inner_text() == "<script>window.__pwned=1</script>"
    assert page.locator(".greeting").inner_text() == 'Dear <img src=x onerror="window.__pwned=5">,'
    assert page.locator("script").count() == 0
    handlers = page.eval_on_selector_all(
        "*", "els => els.flatMap(e => e.getAttributeNames().filter(n => n.startsWith('on')))"
    )
    assert handlers == []
