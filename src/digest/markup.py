"""Turn an item's Markdown into sanitized HTML with absolute URLs, and HTML into plain text."""

from __future__ import annotations

import html
import re
from functools import lru_cache
from urllib.parse import urljoin

import nh3
from markdown_it import MarkdownIt

# What survives in summaries and bodies: text structure, links and images. No scripts, no styles,
# no event handlers, no forms, no frames; URLs only http(s) and mailto (no javascript:, no data:).
ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h2", "h3", "h4", "h5", "h6",
        "hr", "i", "img", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody",
        "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": frozenset({"href", "title"}),
    "abbr": frozenset({"title"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "td": frozenset({"align"}),
    "th": frozenset({"align"}),
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
_URL_ATTRIBUTES = frozenset({"href", "src"})


class _Markdown(MarkdownIt):
    """markdown-it, leaving the judging of URLs to nh3.

    markdown-it leaves a link it distrusts, `[x](javascript:...)`, as its literal source text, URL
    and all. Here every link is made a link, and nh3 removes the unsafe URL: the reader sees "x".
    """

    def validateLink(self, url: str) -> bool:
        return True


_md = _Markdown("commonmark", {"html": True}).enable(["table", "strikethrough"])


@lru_cache(maxsize=8)
def _cleaner(base_url: str) -> nh3.Cleaner:
    def absolute(tag: str, attribute: str, value: str) -> str | None:
        if attribute in _URL_ATTRIBUTES:
            return urljoin(base_url, value)
        return value

    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        attribute_filter=absolute,
        link_rel=None,
    )


def sanitize(fragment: str, base_url: str) -> str:
    """Return `fragment` with everything unsafe removed and every URL made absolute."""
    return _cleaner(base_url).clean(fragment)


# nh3's output is normalized (lowercase tags, double-quoted attributes), so this sees every image
# without alt text.
_IMG_WITHOUT_ALT = re.compile(r"<img(?![^>]*\salt=)")


@lru_cache(maxsize=4096)
def to_html(markdown: str, base_url: str) -> str:
    """Render Markdown (raw HTML allowed) to sanitized HTML with absolute URLs.

    An image written without alt text gets an empty one, which tells screen readers to skip it
    rather than read its address aloud; `![description](url)` is how an editor describes it.
    """
    return _IMG_WITHOUT_ALT.sub('<img alt=""', sanitize(_md.render(markdown), base_url).strip())


_BLOCK_END = re.compile(r"</(?:p|li|h[2-6]|blockquote|pre|tr|table|ul|ol)>|<br\s*/?>|<hr\s*/?>")
# nh3's output quotes every attribute with double quotes, so this pattern sees every link.
_LINK = re.compile(r'<a\s[^>]*?href="([^"]*)"[^>]*>(.*?)</a>', re.S)


def _spell_out(match: re.Match[str]) -> str:
    url, label = match.group(1), match.group(2)
    plain = html.unescape(nh3.clean(label, tags=set()))
    shown = url.removeprefix("mailto:")
    return label if plain.strip() in (url, shown) else f"{label} ({url})"


def to_text(fragment: str) -> str:
    """Return the plain text of sanitized HTML: links spelled out, tags dropped, blocks on lines."""
    marked = _BLOCK_END.sub("\n", _LINK.sub(_spell_out, fragment))
    text = html.unescape(nh3.clean(marked, tags=set()))
    lines = (line.strip() for line in text.splitlines())
    return re.sub(r"\n{2,}", "\n\n", "\n\n".join(line for line in lines if line)).strip()
