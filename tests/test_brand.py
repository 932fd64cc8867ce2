"""`newsletter.brand`: the office's logo, accent colour and address, without editing templates."""

from __future__ import annotations

from pathlib import Path

import lxml.html
import pytest

from digest.errors import CatalogueError
from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue, site
from helpers import NOW, item, yaml_catalogue

HERE = Path(__file__).parent
SHAPED = HERE / "data" / "shaped.yaml"
NOVEMBER = Month(2025, 11)
ACCENT = "#7a1f5c"
NEWS = (
    "newsletter:\n"
    '  from: "News Office <news@example.edu>"\n'
    '  subject: "News — {month:%B %Y}"\n'
    '  schedule: "0 9 1 * *"\n'
    '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
)


def branded(brand: str) -> str:
    """Return a catalogue whose newsletter block ends with `brand:` and the given lines."""
    return yaml_catalogue(item()) + NEWS + "  brand:" + brand


def parse(text: str) -> catalogue.Catalogue:
    return catalogue.parse(text.encode("utf-8"), Path("items.yaml"), "items.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogueError) as info:
        parse(text)
    return [str(p) for p in info.value.problems]


def line_of(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


# -- contrast ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colour", "ratio"),
    [
        # Published figures (WebAIM's contrast checker, the WCAG 2.x understanding documents).
        ("#767676", 4.54),
        ("#777777", 4.48),
        ("#595959", 7.0),
        ("#000000", 21.0),
        ("#ffffff", 1.0),
        ("#0000ff", 8.59),
        ("#ff0000", 4.0),
    ],
)
def test_contrast_matches_known_ratios(colour: str, ratio: float) -> None:
    """An accent is judged by the ratio any WCAG checker shows for it."""
    assert catalogue.contrast_with_white(colour) == pytest.approx(ratio, abs=0.005)


def test_brand_is_read(tmp_path: Path) -> None:
    """The logo, colour and address the office wrote are what the digest uses."""
    news = catalogue.load(SHAPED).newsletter
    assert news is not None
    assert news.brand == catalogue.Brand(
        catalogue.Logo("https://news.example.edu/img/logo.png", "Campus News", 180),
        ACCENT,
        "News Office, 1 University Road, Hong Kong",
    )


def test_short_hex_and_capitals_are_written_out_and_width_defaults() -> None:
    """#B05 is the same colour as #bb0055, and a logo without a width gets 200 px."""
    text = branded(
        '\n    accent: "#B05"\n    logo: {url: "https://news.example.edu/l.png", alt: Logo}\n'
    )
    news = parse(text).newsletter
    assert news is not None
    assert news.brand is not None
    assert news.brand.logo is not None
    assert (news.brand.accent, news.brand.logo.width) == ("#bb0055", 200)


def test_a_just_passing_grey_is_accepted_and_a_just_failing_one_refused() -> None:
    """The line is WCAG AA's 4.5:1 exactly, never rounded up."""
    assert parse(branded(' {accent: "#767676"}\n')).newsletter is not None
    text = branded(' {accent: "#777777"}\n')
    assert problems(text) == [
        f"items.yaml:{line_of(text, 'brand:')}: newsletter.brand.accent: '#777777' gives white "
        "text on it (and itself as link text on white) a contrast of 4.47:1; WCAG AA needs 4.5:1: "
        "choose a darker colour"
    ]


B = "newsletter.brand"


@pytest.mark.parametrize(
    ("brand", "at", "message"),
    [
        (
            '\n    accent: "#ffcc00"\n',
            "accent",
            f"{B}.accent: '#ffcc00' gives white text on it (and itself as link text on white) a "
            "contrast of 1.51:1; WCAG AA needs 4.5:1: choose a darker colour",
        ),
        (
            "\n    accent: #7a1f5c\n",
            "accent",
            f"{B}.accent: is empty; '#' starts a YAML comment, so a colour must be in quotes, "
            'like accent: "#7a1f5c"',
        ),
        (
            "\n    accent: purple\n",
            "accent",
            f"""{B}.accent: 'purple' is not a colour; write it as a hex colour in quotes, like """
            '"#7a1f5c"',
        ),
        (
            '\n    accent: "#7a1f5"\n',
            "accent",
            f"""{B}.accent: '#7a1f5' is not a colour; write it as a hex colour in quotes, like """
            '"#7a1f5c"',
        ),
        (
            "\n    colour: x\n",
            "colour",
            f"{B}.colour: unknown key 'colour'; known keys: logo, accent, address",
        ),
        (
            " [logo]\n",
            "brand:",
            f"{B}: expected a mapping of keys, found a list",
        ),
        (
            "\n    logo: https://news.example.edu/l.png\n",
            "logo",
            f"{B}.logo: expected a mapping of keys, found 'https://news.example.edu/l.png'",
        ),
        (
            '\n    logo: {url: "http://news.example.edu/l.png", alt: Logo}\n',
            "logo",
            f"{B}.logo.url: 'http://news.example.edu/l.png' is not an https:// URL; mail clients "
            "and browsers block or warn about images over plain http, so serve the logo over "
            "https",
        ),
        (
            "\n    logo: {url: /img/logo.png, alt: Logo}\n",
            "logo",
            f"{B}.logo.url: '/img/logo.png' is not an absolute http(s) URL (like "
            "https://example.edu/page)",
        ),
        (
            '\n    logo: {url: "https://news.example.edu/l.png"}\n',
            "logo",
            f"{B}.logo.alt: is required",
        ),
        (
            '\n    logo: {url: "https://news.example.edu/l.png", alt: Logo, width: 600}\n',
            "logo",
            f"{B}.logo.width: 600 px is outside 16-536 px; the email's header is 536 px wide "
            "inside its margins",
        ),
        (
            '\n    logo: {url: "https://news.example.edu/l.png", alt: Logo, width: 8}\n',
            "logo",
            f"{B}.logo.width: 8 px is outside 16-536 px; the email's header is 536 px wide "
            "inside its margins",
        ),
        (
            '\n    logo: {url: "https://news.example.edu/l.png", alt: Logo, width: 200px}\n',
            "logo",
            f"{B}.logo.width: '200px' is not a width in pixels (a whole number, like 200)",
        ),
        (
            '\n    logo: {url: "https://news.example.edu/l.png", alt: Logo, height: 20}\n',
            "logo",
            f"{B}.logo.height: unknown key 'height'; known keys: url, alt, width",
        ),
        (
            "\n    address: [1 Road]\n",
            "address",
            f"{B}.address: expected text, found a list",
        ),
        (
            '\n    address: "1 Road\\nHong Kong"\n',
            "address",
            f"{B}.address: must be a single line (it contains U+000A, a line break)",
        ),
        (
            "\n    address: Room 5 #2, 1 Road\n",
            "address",
            f"{B}.address: ' #' starts a YAML comment, so this value was cut to 'Room 5'; put "
            'the whole value in quotes: address: "Room 5 #2, 1 Road"',
        ),
    ],
    ids=[
        "accent-too-light",
        "accent-unquoted",
        "accent-a-name",
        "accent-five-digits",
        "unknown-key",
        "not-a-mapping",
        "logo-not-a-mapping",
        "logo-http",
        "logo-relative",
        "logo-without-alt",
        "logo-too-wide",
        "logo-too-small",
        "logo-width-with-unit",
        "logo-unknown-key",
        "address-not-text",
        "address-two-lines",
        "address-cut-by-comment",
    ],
)
def test_brand_mistakes_are_located(brand: str, at: str, message: str) -> None:
    """Each slip in the brand is named with its line and the fix; nothing is half-applied."""
    text = branded(brand)
    # The brand's own lines come after the newsletter block's `brand:` line.
    line = line_of(text[text.index("brand:") :], at) + line_of(text, "brand:") - 1
    assert problems(text) == [f"items.yaml:{line}: {message}"]


# -- the email, the archive, the feeds page ------------------------------------------------------


def email_html() -> tuple[str, str]:
    cat = catalogue.load(SHAPED)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    return rendered.personalise("Ann", "mailto:x@example.edu")


def style_of(element: lxml.html.HtmlElement) -> dict[str, str]:
    """Return an element's inline style as a mapping."""
    pairs = [part.split(":", 1) for part in (element.get("style") or "").split(";") if ":" in part]
    return {k.strip(): v.strip() for k, v in pairs}


def test_email_shows_the_logo_first_linked_to_the_site() -> None:
    """The office's logo heads the email, described for readers who block images."""
    page, _ = email_html()
    root = lxml.html.fromstring(page)
    container = root.find_class("container")[0]
    first_cell = next(container.iter("td"))
    assert first_cell.get("class") == "brand-logo"
    (logo,) = first_cell.iter("img")
    assert (logo.get("src"), logo.get("alt"), logo.get("width")) == (
        "https://news.example.edu/img/logo.png",
        "Campus News",
        "180",
    )
    assert logo.getparent().get("href") == "https://news.example.edu/"


def test_accent_colours_the_header_headings_and_links_inline() -> None:
    """Mail apps that drop <style> still show the office's colour: premailer inlined it."""
    page, _ = email_html()
    root = lxml.html.fromstring(page)
    assert style_of(root.find_class("header")[0])["background-color"] == ACCENT
    assert style_of(root.find_class("month")[0])["color"] == "#fff"  # cssutils shortens it
    for category in root.find_class("category"):
        assert style_of(category)["color"] == ACCENT
        assert style_of(category)["border-bottom-color"] == ACCENT
    links = [a for a in root.iter("a") if a.getparent().get("class") != "brand-logo"]
    assert links
    assert {style_of(a).get("color") for a in links} == {ACCENT}
    # Only media queries are left in the one <style>: everything else went into the elements.
    (style,) = root.iter("style")
    assert style.text is not None
    assert ".intro {" not in style.text.replace("@media", "")
    assert [r for r in _top_level_rules(style.text) if not r.startswith("@media")] == []
    for name in ("brand-logo", "logo", "intro", "address"):
        assert all(e.get("style") for e in root.find_class(name)), name


def _top_level_rules(css: str) -> list[str]:
    """Return the start of each top-level rule of a stylesheet."""
    rules, depth, start = [], 0, 0
    for at, char in enumerate(css):
        if char == "{":
            if depth == 0:
                rules.append(css[start:at].strip())
            depth += 1
        elif char == "}":
            depth -= 1
            start = at + 1
    return rules


def test_address_closes_the_email_and_its_text() -> None:
    """The office's postal address is the footer's last line, in the HTML and the text."""
    page, text = email_html()
    root = lxml.html.fromstring(page)
    footer = root.find_class("footer")[0]
    assert footer.findall("p")[-1].text_content() == "News Office, 1 University Road, Hong Kong"
    assert text.rstrip("\n").endswith("\n\nNews Office, 1 University Road, Hong Kong")


def test_archive_page_carries_the_brand() -> None:
    """The web version looks like the email: logo, colour, address."""
    page = site.render(catalogue.load(SHAPED), NOW)["archive/2025-11.html"].decode()
    root = lxml.html.fromstring(page)
    assert root.find_class("logo")[0].get("src") == "https://news.example.edu/img/logo.png"
    assert f".header {{ background-color: {ACCENT}; }}" in page
    assert root.find_class("address")[0].text_content() == (
        "News Office, 1 University Road, Hong Kong"
    )


def test_feeds_page_carries_the_brand() -> None:
    """The feeds page shows the logo, the office's colour and its address."""
    page = site.render(catalogue.load(SHAPED), NOW)["index.html"].decode()
    root = lxml.html.fromstring(page)
    header = root.find(".//header")
    assert header is not None
    logo = header.find(".//img")
    assert logo is not None
    assert (logo.get("alt"), logo.get("width")) == ("Campus News", "180")
    assert f"a {{ color: {ACCENT}; }}" in page
    footer = root.find(".//footer")
    assert footer is not None
    assert footer.findall("p")[-1].text_content() == "News Office, 1 University Road, Hong Kong"


def test_no_brand_no_trace(tmp_path: Path) -> None:
    """A catalogue without a brand shows no empty logo, no stray colour, no empty address."""
    path = tmp_path / "items.yaml"
    path.write_text(yaml_catalogue(item()) + NEWS, encoding="utf-8")
    cat = catalogue.load(path)
    files = site.render(cat, NOW)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    for page in (files["index.html"].decode(), files["archive/2025-11.html"].decode()):
        assert "logo" not in page
        assert "address" not in page
    assert "brand-logo" not in rendered.html
    assert "intro" not in rendered.html


def test_hostile_brand_text_stays_text(tmp_path: Path) -> None:
    """An address or alt text with markup in it shows as written and runs nothing."""
    path = tmp_path / "items.yaml"
    path.write_text(
        yaml_catalogue(item())
        + NEWS
        + "  brand:\n"
        + """    logo: {url: "https://news.example.edu/l.png", alt: '"><script>x()</script>'}\n"""
        + "    address: <b onclick=x()>1 Road</b>\n",
        encoding="utf-8",
    )
    cat = catalogue.load(path)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    page, _ = rendered.personalise(None, "mailto:x@example.edu")
    index = site.render(cat, NOW)["index.html"].decode()
    for html in (page, index):
        root = lxml.html.fromstring(html)
        assert not list(root.iter("script"))
        assert not list(root.iter("b"))
        assert root.find_class("address")[0].text_content() == "<b onclick=x()>1 Road</b>"
        assert root.find_class("logo")[0].get("alt") == '"><script>x()</script>'
