"""Turn an item's Markdown into sanitized HTML with absolute URLs, and HTML into plain text."""

from __future__ import annotations

import ctypes
import html
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from urllib.parse import urljoin

import cmarkgfm
import nh3
from cmarkgfm.cmark import Options

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


# cmark-gfm, GitHub's CommonMark library, with its tables and strikethrough (`~~x~~` only) and
# nothing else: no autolinking of bare URLs, no smart punctuation, no tag filter (nh3's allow-list
# does that job). CMARK_OPT_UNSAFE leaves raw HTML and every URL for nh3 to judge: without it
# cmark-gfm would blank the URL of `[x](javascript:...)`, which `urljoin` would then turn into a
# link to the site; with it nh3 removes the URL and the reader sees "x".
_OPTIONS = Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_STRIKETHROUGH_DOUBLE_TILDE
_EXTENSION_NAMES = ("table", "strikethrough")

# cmark-gfm turns its extensions' characters (`~`) on and off in tables shared by the whole process
# around every parse, and cffi lets go of the GIL during each call: two threads parsing at once
# (the console renders pages and sends in threads) could each lose a strikethrough.
_parsing = threading.Lock()


def _render_public(markdown: str) -> str:
    """Return cmark-gfm's HTML for `markdown` through cmarkgfm's public function (it leaks)."""
    with _parsing:
        return str(
            cmarkgfm.markdown_to_html_with_extensions(
                markdown, options=_OPTIONS, extensions=list(_EXTENSION_NAMES)
            )
        )


# The cmarkgfm releases whose compiled module and cmark_mem layout `_bind` was written and tested
# against (pyproject.toml bounds the dependency the same way); any other gets the public function.
KNOWN_CMARKGFM = ("2024.1.14", "2026")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


class _Allocator(ctypes.Structure):
    """cmark-gfm's `cmark_mem`: the functions it allocates and frees with."""

    _fields_ = (
        ("calloc", ctypes.c_void_p),
        ("realloc", ctypes.c_void_p),
        ("free", ctypes.CFUNCTYPE(None, ctypes.c_void_p)),
    )


def _version() -> str:
    """Return the installed cmarkgfm's version.

    Read from the name of its `.dist-info` folder beside the package when there is one:
    `importlib.metadata` would cost a cold build more (importing it and scanning every installed
    distribution) than the Markdown of a thousand items.
    """
    folder = Path(cmarkgfm.__file__).resolve().parent.parent
    for found in folder.glob("cmarkgfm-*.dist-info"):
        return found.name.removeprefix("cmarkgfm-").removesuffix(".dist-info")
    from importlib import metadata

    return metadata.version("cmarkgfm")


def _bind(version: str) -> Callable[[str], str] | None:
    """Return a renderer that frees what cmark-gfm allocates, or None if cmarkgfm may differ.

    cmarkgfm's Python functions never free the document tree and the HTML that cmark-gfm allocates
    for every text (280 MB over the benchmark's 100,000 summaries), so digest drives the parser
    through cmarkgfm's compiled module and frees both with two functions of the same library. That
    reaches into cmarkgfm's internals, so it is done only for the releases it was written for
    (`KNOWN_CMARKGFM`); any other cmarkgfm, or one that no longer has them, gets the public
    function: the same HTML, and the leak.
    """
    low, high = KNOWN_CMARKGFM
    if not _release(low) <= _release(version) < _release(high):
        return None
    try:
        from cmarkgfm import _cmark

        lib = _cmark.lib
        lib.cmark_gfm_core_extensions_ensure_registered()
        extensions = [lib.cmark_find_syntax_extension(n.encode()) for n in _EXTENSION_NAMES]
        # The two functions cmarkgfm's compiled module does not expose, through ctypes: a cffi
        # declaration of them would import pycparser, most of a 1,000-item build's start-up.
        exports = ctypes.CDLL(_cmark.__file__)
        exports.cmark_get_default_mem_allocator.restype = ctypes.POINTER(_Allocator)
        exports.cmark_get_default_mem_allocator.argtypes = ()
        node_free = exports.cmark_node_free
        node_free.restype = None
        node_free.argtypes = (ctypes.c_void_p,)
        free = exports.cmark_get_default_mem_allocator().contents.free
        ffi = _cmark.ffi
    except (ImportError, AttributeError, OSError, ValueError):
        return None

    def address(pointer: object) -> int:
        return int(ffi.cast("uintptr_t", pointer))

    def render(markdown: str) -> str:
        text = markdown.encode()
        with _parsing:
            parser = lib.cmark_parser_new(_OPTIONS)
            for extension in extensions:
                lib.cmark_parser_attach_syntax_extension(parser, extension)
            lib.cmark_parser_feed(parser, text, len(text))
            document = lib.cmark_parser_finish(parser)
            attached = lib.cmark_parser_get_syntax_extensions(parser)
            output = lib.cmark_render_html(document, _OPTIONS, attached)
            node_free(address(document))
            lib.cmark_parser_free(parser)
        try:
            return str(ffi.string(output).decode())
        finally:
            free(address(output))

    return render


_render: Callable[[str], str] = _bind(_version()) or _render_public


# An absolute http(s) URL of plain characters only (no port, user, params, query, fragment,
# space or escape): `urljoin` returns it exactly as it is, whatever the base, so it is not asked.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?:/[A-Za-z0-9._~/-]*)?")


@lru_cache(maxsize=8)
def _cleaner(base_url: str) -> nh3.Cleaner:
    def absolute(tag: str, attribute: str, value: str) -> str | None:
        if attribute in _URL_ATTRIBUTES:
            return value if _PLAIN_URL.fullmatch(value) else urljoin(base_url, value)
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
    return _IMG_WITHOUT_ALT.sub('<img alt=""', sanitize(_render(markdown), base_url).strip())


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
