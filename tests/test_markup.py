"""The Markdown contract of summaries and bodies: what an editor may write and what readers get."""

from __future__ import annotations

import re
import threading
from importlib import metadata
from pathlib import Path

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.publish import markup

BASE = "https://news.example.edu/campus/"


def html(markdown: str) -> str:
    return markup.to_html(markdown, BASE)


def test_tables_keep_their_column_alignment() -> None:
    """A table's right-aligned figures stay right-aligned in feeds, pages and the email."""
    table = "| Fund | HK$ |\n| :-- | --: |\n| Lab | 1.2M |"
    assert html(table) == (
        "<table>\n<thead>\n<tr>\n"
        '<th align="left">Fund</th>\n<th align="right">HK$</th>\n'
        "</tr>\n</thead>\n<tbody>\n<tr>\n"
        '<td align="left">Lab</td>\n<td align="right">1.2M</td>\n'
        "</tr>\n</tbody>\n</table>"
    )


def test_double_tildes_strike_and_single_ones_do_not() -> None:
    """`~~x~~` is struck out; a lone `~5 minutes` or `~x~` reads as the editor typed it."""
    assert html("Room ~~101~~ 202") == "<p>Room <del>101</del> 202</p>"
    assert html("~x~ takes ~5 minutes") == "<p>~x~ takes ~5 minutes</p>"


def test_bare_urls_and_punctuation_stay_as_typed() -> None:
    """Only written links become links; quotes and dashes are not made typographic."""
    assert html('See https://news.example.edu/ -- "soon"...') == (
        '<p>See https://news.example.edu/ -- "soon"...</p>'
    )
    assert html("<https://news.example.edu/>") == (
        '<p><a href="https://news.example.edu/">https://news.example.edu/</a></p>'
    )


def test_unsafe_links_become_plain_text() -> None:
    """A `javascript:` link shows its text and leads nowhere; a relative one is made absolute."""
    assert html("[x](javascript:alert(1)) [plan](plans.html)") == (
        '<p><a>x</a> <a href="https://news.example.edu/campus/plans.html">plan</a></p>'
    )


def test_raw_html_is_sanitized_not_escaped() -> None:
    """Allowed tags an editor writes keep working; scripts, styles and handlers vanish."""
    assert html('H<sub>2</sub>O, <abbr title="Hong Kong">HK</abbr>, <del>old</del>') == (
        '<p>H<sub>2</sub>O, <abbr title="Hong Kong">HK</abbr>, <del>old</del></p>'
    )
    assert html('<script>alert("x")</script>\n\n<p onclick="x()" style="color:red">Hi</p>') == (
        "<p>Hi</p>"
    )


def test_images_keep_or_get_alt_text() -> None:
    """Screen readers read a described image's alt text and skip an undescribed one."""
    assert html("![The lab](lab.jpg) ![](b.png)") == (
        '<p><img src="https://news.example.edu/campus/lab.jpg" alt="The lab"> '
        '<img src="https://news.example.edu/campus/b.png" alt=""></p>'
    )


def test_parsing_in_threads_at_once_loses_nothing() -> None:
    """A send and a preview rendering at the same moment in the console both get it right."""
    struck = "Room ~~101~~ 202 " * 100
    expected = markup._render(struck)
    done = threading.Event()

    def render_others() -> None:
        while not done.is_set():
            markup._render("*a*")

    thread = threading.Thread(target=render_others)
    thread.start()
    try:
        # Without the lock around parsing, about 1 in 300 of these lost its strikethroughs.
        wrong = sum(markup._render(struck) != expected for _ in range(3000))
    finally:
        done.set()
        thread.join()
    assert wrong == 0


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_rendering_frees_its_memory() -> None:
    """`digest serve` and `digest schedule` do not grow with every summary they render."""
    text = ("**Bold** and [a link](https://news.example.edu/) in a sentence.\n\n") * 400
    markup._render(text)
    before = _resident_bytes()
    for _ in range(2000):
        markup._render(text)
    # Leaking the document tree and the HTML, as cmarkgfm's own functions do, costs over 200 MB.
    assert _resident_bytes() - before < 40_000_000


_TOKENS = [
    "*", "**", "_", "__", "~", "~~", "`", "```", "~~~", "[", "]", "(", ")", "![", "](", "<", ">",
    "|", "| --- |", ":--", "--:", "#", "> ", "- ", "1. ", "\n", "\n\n", "    ", "\\", "&", "&amp;",
    "&#0;", "&#x3C;", "<script>", "</script>", "<style>", "<iframe src=x>", "<img src=x onerror=y>",
    "<a href='javascript:x'>", "<div>", "</div>", "<!--", "-->", "<![CDATA[", "<svg>", "<math>",
    "<form>", "<input>", "<table>", "<td>", "<del>", "<s>", "javascript:", "data:text/html,",
    "https://x.example/", "mailto:a@b.example", "[r]: /x", "研究", "🎉", "é",
]  # fmt: skip
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)([^>]*)>")
_ATTRIBUTE = re.compile(r'\s([a-z-]+)="[^"]*"')


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(_TOKENS), st.text(st.characters(exclude_categories=["Cs"]))),
        max_size=40,
    ).map("".join)
)
def test_any_markdown_renders_to_allowed_html_only(markdown: str) -> None:
    """Whatever an editor types, the build goes on and readers get only allow-listed HTML."""
    out = html(markdown)
    for closing, tag, attributes in _TAG.findall(out):
        assert tag in markup.ALLOWED_TAGS, out
        names = set(_ATTRIBUTE.findall(attributes))
        assert not closing or not names, out
        assert names <= markup.ALLOWED_ATTRIBUTES.get(tag, frozenset()), out
    assert "<" not in _TAG.sub("", out), out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(_TOKENS), st.text(st.characters(exclude_categories=["Cs"]))),
        max_size=40,
    ).map("".join)
)
def test_the_fallback_renders_what_the_freeing_renderer_renders(markdown: str) -> None:
    """Should cmarkgfm's internals change, its public function gives readers the same HTML."""
    assert markup._render is not markup._render_public  # the freeing renderer is the one in use
    assert markup._render(markdown) == markup._render_public(markdown)


def test_only_the_known_cmarkgfm_releases_are_reached_into() -> None:
    """A cmarkgfm release digest was not written for renders through its public function."""
    low, high = markup.KNOWN_CMARKGFM
    assert markup._bind(metadata.version("cmarkgfm")) is not None
    assert markup._bind(high) is None
    assert markup._bind("2030.1.1") is None
    assert markup._bind("2023.12.31") is None
    render = markup._bind(low)
    assert render is not None
    assert render("~~gone~~ | a |\n| - |\n| b |") == markup._render_public(
        "~~gone~~ | a |\n| - |\n| b |"
    )


def test_the_version_read_beside_the_package_is_the_installed_one() -> None:
    """A cold build that misread cmarkgfm's version would leak its memory or mis-render."""
    assert markup._version() == metadata.version("cmarkgfm")


def test_the_dependency_bound_matches_the_known_releases() -> None:
    """pip never installs a cmarkgfm whose internals markup.py has not been checked against."""
    low, high = markup.KNOWN_CMARKGFM
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'"cmarkgfm>={low},<{high}"' in pyproject


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(markup._PLAIN_URL, fullmatch=True),
    st.sampled_from(["https://news.example.edu/", "http://example.org/a/b", "https://x.org"]),
)
def test_a_plain_absolute_url_is_kept_as_urljoin_would_keep_it(url: str, base: str) -> None:
    """A link the shortcut skips urljoin for must still point exactly where urljoin points it."""
    from urllib.parse import urljoin

    assert urljoin(base, url) == url
    text = f"[x]({url}) ![y]({url})"

    def always(tag: str, attribute: str, value: str) -> str:
        return urljoin(base, value) if attribute in ("href", "src") else value

    reference = nh3.Cleaner(
        tags=set(markup.ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in markup.ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(markup.URL_SCHEMES),
        attribute_filter=always,
        link_rel=None,
    )
    assert markup.sanitize(markup._render(text), base) == reference.clean(markup._render(text))
