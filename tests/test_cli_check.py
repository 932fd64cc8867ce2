"""`digest check`: every mistake in items.yaml reported at once, with its line, and nothing written.

Line numbers in the expected messages follow helpers.HEADER: `items:` is line 14, so the first
item's keys are on lines 15 (id), 16 (title), 17 (date), 18 (category) and 19 (summary), and any
extra key given to item() starts at line 20; a second item starts at line 20 (or after the extras).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from digest.errors import CatalogueError
from helpers import HEADER, item, snapshot, yaml_catalogue

Run = Callable[..., Result]
Write = Callable[..., Path]

VALID_ONE = "items.yaml is valid: 1 item (1 published, 0 drafts, 0 scheduled) in 2 categories.\n"
URL_HINT = "is not an absolute http(s) URL (like https://example.edu/page)"


def check(run: Run, write: Write, content: str | bytes) -> Result:
    """Write content as items.yaml and run `digest check` on it."""
    write(content)
    return run("check")


def assert_rejected(result: Result, *lines: str) -> None:
    """Assert exit 1, nothing on stdout, and exactly these lines on stderr."""
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "".join(f"{ln}\n" for ln in lines),
    )


def header_with(old: str, new: str) -> str:
    """Return HEADER with one piece of text replaced (which must be there)."""
    assert old in HEADER
    return HEADER.replace(old, new)


# ------------------------------------------------------------------------------------------------
# Valid catalogues


def test_bundled_catalogue_is_valid(run: Run, bundled: Path) -> None:
    """The catalogue shipped with digest passes its own check, with the counts a user expects."""
    result = run("check", "-c", str(bundled))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"{bundled} is valid: 18 items (18 published, 0 drafts, 0 scheduled) in 7 categories; "
        f"{bundled.parent / 'subscribers.csv'}: 12 subscribers.\n"
    )
    assert result.stderr == ""


def test_default_catalogue_is_items_yaml(run: Run, write: Write) -> None:
    """`digest check` with no option reads items.yaml in the current directory."""
    result = check(run, write, yaml_catalogue())
    assert (result.exit_code, result.stdout, result.stderr) == (0, VALID_ONE, "")


def test_summary_counts_drafts_and_scheduled(run: Run, write: Write) -> None:
    """The summary tells staff how many items are drafts and how many wait for their date."""
    text = yaml_catalogue(
        item(id="live"),
        item(id="draft-one", draft="true"),
        item(id="draft-two", draft="true"),
        item(id="later", date="2999-01-01"),
    )
    result = check(run, write, text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "items.yaml is valid: 4 items (1 published, 2 drafts, 1 scheduled) in 2 categories.\n"
    )


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"date": "2025-11-19T09:30:00+08:00"}, id="date-time-with-offset"),
        pytest.param({"date": "2025-11-19T09:30"}, id="naive-date-time"),
        pytest.param({"date": "2025-11-19 09:30:15Z"}, id="space-and-z"),
        pytest.param({"updated": "2025-11-19"}, id="updated-same-day"),
        pytest.param({"title": "NO"}, id="title-NO"),
        pytest.param({"title": "2025-11-19"}, id="title-looks-like-a-date"),
        pytest.param({"draft": "false"}, id="draft-false"),
        pytest.param({"tags": "[yes, no, 1.10]"}, id="tags-look-like-booleans"),
        pytest.param({"link": "https://news.example.edu/a?b=c#d"}, id="link-with-query"),
        pytest.param({"image": "{url: https://news.example.edu/a.png, alt: A cat}"}, id="image"),
        pytest.param({"section": "features"}, id="declared-section"),
    ],
)
def test_valid_values_accepted(run: Run, write: Write, extra: dict[str, str]) -> None:
    """Values the format allows pass the check."""
    result = check(run, write, yaml_catalogue(item(**extra)))
    assert (result.exit_code, result.stdout, result.stderr) == (0, VALID_ONE, "")


def test_utf8_bom_accepted(run: Run, write: Write) -> None:
    """A catalogue saved by an editor that writes a UTF-8 byte order mark still loads."""
    result = check(run, write, b"\xef\xbb\xbf" + yaml_catalogue().encode())
    assert (result.exit_code, result.stdout, result.stderr) == (0, VALID_ONE, "")


def test_modest_alias_accepted(run: Run, write: Write) -> None:
    """Reusing one anchored summary in two items is allowed."""
    text = yaml_catalogue(
        item(id="one", summary="&shared The same words for both."),
        item(id="two", summary="*shared"),
    )
    result = check(run, write, text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "items.yaml is valid: 2 items (2 published, 0 drafts, 0 scheduled) in 2 categories.\n"
    )


# ------------------------------------------------------------------------------------------------
# One rule at a time: each mistake gives exactly one line (or the lines shown) and exit 1

DUPLICATE_TITLE = yaml_catalogue(item() + "    title: Second title\n")

REJECTED = [
    # Duplicate keys
    pytest.param(
        DUPLICATE_TITLE,
        [
            "items.yaml:20: items[0].title: duplicate key (first at line 16); "
            "YAML would keep only the last one, so remove or rename one of them"
        ],
        id="duplicate-key-in-item",
    ),
    pytest.param(
        yaml_catalogue() + "publication: again\n",
        [
            "items.yaml:20: publication: duplicate key (first at line 1); "
            "YAML would keep only the last one, so remove or rename one of them"
        ],
        id="duplicate-key-top-level",
    ),
    pytest.param(
        header_with("  language: en\n", "  language: en\n  language: fr\n") + item(),
        [
            "items.yaml:7: publication.language: duplicate key (first at line 6); "
            "YAML would keep only the last one, so remove or rename one of them"
        ],
        id="duplicate-key-in-publication",
    ),
    pytest.param(
        yaml_catalogue(item(), item()),
        [
            "items.yaml:20: items[1].id: 'first' is already used by the item at line 15; "
            "ids must be unique"
        ],
        id="duplicate-id",
    ),
    # Unknown keys
    pytest.param(
        yaml_catalogue(item(sumary="Typo.")),
        ["items.yaml:20: items[0].sumary: unknown key 'sumary'; did you mean 'summary'?"],
        id="unknown-key-in-item",
    ),
    pytest.param(
        yaml_catalogue() + "extras: 1\n",
        ["items.yaml:20: extras: unknown key 'extras'; known keys: publication, newsletter, items"],
        id="unknown-key-top-level",
    ),
    pytest.param(
        header_with("  language: en\n", "  langauge: en\n") + item(),
        ["items.yaml:6: publication.langauge: unknown key 'langauge'; did you mean 'language'?"],
        id="unknown-key-in-publication",
    ),
    pytest.param(
        yaml_catalogue(
            item(), item(id="second").replace("    title: First item\n", "    <<: {title: x}\n")
        ),
        [
            "items.yaml:20: items[1].title: is required",
            "items.yaml:21: items[1].<<: unknown key '<<'; known keys: id, title, date, updated, "
            "category, section, summary, body, link, image, tags, draft, event",
        ],
        id="merge-key",
    ),
    # Missing keys: reported at the item's first line
    pytest.param(
        yaml_catalogue(item().replace("    title: First item\n", "")),
        ["items.yaml:15: items[0].title: is required"],
        id="missing-title",
    ),
    pytest.param(
        yaml_catalogue(item().replace("    summary: A summary.\n", "")),
        ["items.yaml:15: items[0].summary: is required"],
        id="missing-summary",
    ),
    # Dates
    pytest.param(
        yaml_catalogue(item(date="2025-11-31")),
        [
            "items.yaml:17: items[0].date: '2025-11-31' is not a real date "
            "(day is out of range for month)"
        ],
        id="november-31",
    ),
    pytest.param(
        yaml_catalogue(item(date="2025-02-29")),
        [
            "items.yaml:17: items[0].date: '2025-02-29' is not a real date "
            "(day is out of range for month)"
        ],
        id="february-29-not-leap",
    ),
    pytest.param(
        yaml_catalogue(item(date="19 November 2025")),
        [
            "items.yaml:17: items[0].date: '19 November 2025' is not a date "
            "(use YYYY-MM-DD, or an ISO 8601 date-time like 2025-11-19T09:30)"
        ],
        id="prose-date",
    ),
    pytest.param(
        yaml_catalogue(item(updated="2025-11-18")),
        [
            "items.yaml:20: items[0].updated: is before the item's date; "
            "`updated` records a later correction"
        ],
        id="updated-before-date",
    ),
    # Empty text
    pytest.param(
        yaml_catalogue(item(title="~")),
        ["items.yaml:16: items[0].title: expected text, found nothing"],
        id="title-tilde",
    ),
    pytest.param(
        yaml_catalogue(item(title="null")),
        ["items.yaml:16: items[0].title: expected text, found nothing"],
        id="title-null",
    ),
    pytest.param(
        yaml_catalogue(item().replace("title: First item", "title:")),
        ["items.yaml:16: items[0].title: expected text, found nothing"],
        id="title-no-value",
    ),
    pytest.param(
        yaml_catalogue(item(title='"   "')),
        ["items.yaml:16: items[0].title: is empty"],
        id="title-blank",
    ),
    # Wrong types
    pytest.param(
        yaml_catalogue(item(title="[a, b]")),
        ["items.yaml:16: items[0].title: expected text, found a list"],
        id="title-list",
    ),
    pytest.param(
        yaml_catalogue(item(summary="{text: x}")),
        ["items.yaml:19: items[0].summary: expected text, found a mapping"],
        id="summary-mapping",
    ),
    pytest.param(
        yaml_catalogue(item(tags="medicine")),
        [
            "items.yaml:20: items[0].tags: expected a list like [medicine, research], "
            "found 'medicine'"
        ],
        id="tags-string",
    ),
    pytest.param(
        header_with("feed_limit: 50", "feed_limit: 0") + item(),
        ["items.yaml:8: publication.feed_limit: '0' is not a whole number of 1 or more"],
        id="feed-limit-zero",
    ),
    pytest.param(
        header_with("feed_limit: 50", "feed_limit: ten") + item(),
        ["items.yaml:8: publication.feed_limit: 'ten' is not a whole number of 1 or more"],
        id="feed-limit-word",
    ),
    pytest.param(
        header_with("feed_limit: 50", "feed_limit: ²") + item(),
        ["items.yaml:8: publication.feed_limit: '²' is not a whole number of 1 or more"],
        id="feed-limit-superscript",
    ),
    pytest.param(
        yaml_catalogue(item(draft="yes")),
        ["items.yaml:20: items[0].draft: 'yes' is not true or false"],
        id="draft-yes",
    ),
    pytest.param(
        yaml_catalogue(item(image="{url: https://news.example.edu/a.png}")),
        ["items.yaml:20: items[0].image.alt: is required"],
        id="image-without-alt",
    ),
    pytest.param(
        yaml_catalogue(item(image="{url: /a.png, alt: A cat}")),
        [f"items.yaml:20: items[0].image.url: '/a.png' {URL_HINT}"],
        id="image-relative-url",
    ),
    pytest.param(
        yaml_catalogue(item(link="javascript:alert(1)")),
        [f"items.yaml:20: items[0].link: 'javascript:alert(1)' {URL_HINT}"],
        id="link-javascript",
    ),
    pytest.param(
        yaml_catalogue(item(link="/news/1")),
        [f"items.yaml:20: items[0].link: '/news/1' {URL_HINT}"],
        id="link-relative",
    ),
    pytest.param(
        yaml_catalogue(item(link="http://[::1")),
        [f"items.yaml:20: items[0].link: 'http://[::1' {URL_HINT}"],
        id="link-broken-ipv6",
    ),
    # Categories and sections
    pytest.param(
        yaml_catalogue(item(category="sports")),
        [
            "items.yaml:18: items[0].category: 'sports' is not a declared category; "
            "declared: people, research"
        ],
        id="undeclared-category",
    ),
    pytest.param(
        yaml_catalogue(item(section="events")),
        ["items.yaml:20: items[0].section: 'events' is not a declared section; declared: features"],
        id="undeclared-section",
    ),
    pytest.param(
        yaml_catalogue(item(category="reserch")),
        [
            "items.yaml:18: items[0].category: 'reserch' is not a declared category; "
            "did you mean 'research'?"
        ],
        id="category-typo-suggested",
    ),
    pytest.param(
        header_with("{slug: people", "{slug: all") + item(),
        [
            "items.yaml:11: publication.categories[1].slug: 'all' is reserved for the combined "
            "feed; choose another"
        ],
        id="category-all-reserved",
    ),
    pytest.param(
        header_with("{slug: people", "{slug: research") + item(),
        [
            "items.yaml:11: publication.categories[1].slug: 'research' is declared twice "
            "(first at line 10)"
        ],
        id="category-declared-twice",
    ),
    pytest.param(
        header_with("{slug: people", "{slug: People") + item(),
        [
            "items.yaml:11: publication.categories[1].slug: 'People' is not a slug (use lowercase "
            "letters, digits and single hyphens, like 'campus-news')"
        ],
        id="category-slug-uppercase",
    ),
    pytest.param(
        header_with("{slug: people", "{slug: campus news") + item(),
        [
            "items.yaml:11: publication.categories[1].slug: 'campus news' is not a slug (use "
            "lowercase letters, digits and single hyphens, like 'campus-news')"
        ],
        id="category-slug-space",
    ),
    # Publication settings
    pytest.param(
        header_with("Asia/Hong_Kong", "Mars/Olympus") + item(),
        [
            "items.yaml:7: publication.timezone: 'Mars/Olympus' is not a time zone name "
            "(use an IANA name like Asia/Hong_Kong)"
        ],
        id="timezone-unknown",
    ),
    pytest.param(
        header_with("Asia/Hong_Kong", "Asia") + item(),
        [
            "items.yaml:7: publication.timezone: 'Asia' is not a time zone name "
            "(use an IANA name like Asia/Hong_Kong)"
        ],
        id="timezone-region-only",
    ),
    pytest.param(
        header_with("language: en", "language: english") + item(),
        ["items.yaml:6: publication.language: 'english' is not a language tag (like en or zh-HK)"],
        id="language-word",
    ),
    pytest.param(
        header_with("site_url: https://news.example.edu/", "site_url: not a url") + item(),
        [f"items.yaml:3: publication.site_url: 'not a url' {URL_HINT}"],
        id="site-url",
    ),
    # Characters
    pytest.param(
        yaml_catalogue(item(title=r'"Bad\x1fchar"')),
        ["items.yaml:16: items[0].title: contains the control character U+001F; remove it"],
        id="title-escaped-unit-separator",
    ),
    pytest.param(
        yaml_catalogue(item(title=r'"Bell\u0007"')),
        ["items.yaml:16: items[0].title: contains the control character U+0007; remove it"],
        id="title-escaped-bell",
    ),
    pytest.param(
        yaml_catalogue(item(title=r'"Two\nlines"')),
        ["items.yaml:16: items[0].title: must be a single line (it contains U+000A, a line break)"],
        id="title-newline",
    ),
    pytest.param(
        yaml_catalogue(item(title=r'"Line\u2028separator"')),
        ["items.yaml:16: items[0].title: must be a single line (it contains U+2028, a line break)"],
        id="title-line-separator",
    ),
    pytest.param(
        yaml_catalogue(item(summary=r'"Null\x00byte"')),
        ["items.yaml:19: items[0].summary: contains the control character U+0000; remove it"],
        id="summary-escaped-null",
    ),
    pytest.param(
        yaml_catalogue(item(title="Form\x0cfeed")),
        ["items.yaml:16: contains the control character U+000C; remove it"],
        id="title-raw-form-feed",
    ),
    pytest.param(
        yaml_catalogue(item(summary="Pasted \x1b[1m text")),
        ["items.yaml:19: contains the control character U+001B; remove it"],
        id="summary-raw-escape",
    ),
    # YAML features that are refused
    pytest.param(
        yaml_catalogue(item(tags="&loop [*loop]")),
        [
            "items.yaml:20: an alias refers to the list or mapping it is inside; "
            "write the content out"
        ],
        id="recursive-alias",
    ),
    pytest.param(
        yaml_catalogue(item(date="!!timestamp 2025-11-31")),
        [
            "items.yaml:17: the YAML tag tag:yaml.org,2002:timestamp is not supported here; "
            "remove it and write plain text",
            "items.yaml:17: items[0].date: '2025-11-31' is not a real date "
            "(day is out of range for month)",
        ],
        id="explicit-timestamp-tag",
    ),
    pytest.param(
        yaml_catalogue(item(title="!!python/object/apply:os.system [ls]")),
        [
            "items.yaml:16: the YAML tag tag:yaml.org,2002:python/object/apply:os.system is not "
            "supported here; remove it and write plain text",
            "items.yaml:16: items[0].title: expected text, found a list",
        ],
        id="python-tag",
    ),
    # YAML syntax
    pytest.param(
        yaml_catalogue(item()).replace("    summary:", "\tsummary:"),
        [
            "items.yaml:19: invalid YAML: found a tab character that violates indentation "
            "(while scanning a plain scalar); YAML does not allow tabs for indentation, use spaces"
        ],
        id="tab-indentation",
    ),
    pytest.param(
        yaml_catalogue(item(title='"Unclosed quote'), item(id="second")),
        [
            "items.yaml:16: invalid YAML: the quote that opens this value is never closed; end "
            "the value with the same quote mark"
        ],
        id="unclosed-quote",
    ),
    pytest.param(
        yaml_catalogue(item(title='"Unclosed quote'), item(id="second", summary='"Quoted."')),
        [
            "items.yaml:16: invalid YAML: the quote that opens this value is not closed on its "
            "line, so YAML read on to the next quote mark, on line 24; close the quote at the end "
            "of this value (for a quote inside the value, wrap the value in the other kind)"
        ],
        id="unclosed-quote-closed-later",
    ),
    pytest.param(
        yaml_catalogue(item(title='"Seminar" on AI')),
        [
            "items.yaml:16: invalid YAML: text follows the closing quote; put the quotes around "
            """the whole value, like title: '"Quoted" and more'"""
        ],
        id="text-after-quote",
    ),
    pytest.param(
        yaml_catalogue(item()).replace("    summary:", "      summary:"),
        [
            "items.yaml:19: invalid YAML: this line is not indented like the lines around it; "
            "keys of one item start in the same column, and every entry of a list starts with "
            "'-' in the same column (spaces only)"
        ],
        id="over-indented",
    ),
    pytest.param(
        yaml_catalogue(item()).replace("    summary:", "   summary:"),
        [
            "items.yaml:19: invalid YAML: this line is not indented like the lines around it; "
            "keys of one item start in the same column, and every entry of a list starts with "
            "'-' in the same column (spaces only)"
        ],
        id="under-indented",
    ),
    pytest.param(
        yaml_catalogue(item(title="Note: colon")),
        [
            "items.yaml:16: invalid YAML: ': ' inside an unquoted value starts a new key; put the "
            'value in quotes, like title: "Note: the value"'
        ],
        id="unquoted-colon",
    ),
    pytest.param(
        yaml_catalogue(item(title="Seminar #3 on AI", summary="Join us for talk #3.")),
        [
            "items.yaml:16: items[0].title: ' #' starts a YAML comment, so this value was cut to "
            "'Seminar'; put the whole value in quotes: title: \"Seminar #3 on AI\"",
            "items.yaml:19: items[0].summary: ' #' starts a YAML comment, so this value was cut "
            """to 'Join us for talk'; put the whole value in quotes: summary: "Join us for talk """
            '#3."',
        ],
        id="hash-in-plain-title",
    ),
    pytest.param(
        yaml_catalogue().replace("{slug: people, name: People}", "{slug: people, name: People"),
        [
            "items.yaml:11: invalid YAML: the '{' on this line is not closed with '}' on its "
            "line, or a value inside holds ', ', ': ' or ' #'; close it, and put such values in "
            "quotes"
        ],
        id="unclosed-flow-mapping",
    ),
    pytest.param(
        yaml_catalogue().replace("{slug: people, name: People}", "{slug: people, name: P # 2}")
        + "  # a note on its own line, and one after a quoted value, are comments as ever\n",
        [
            "items.yaml:11: invalid YAML: the '{' on this line is not closed with '}' on its "
            "line, or a value inside holds ', ', ': ' or ' #'; close it, and put such values in "
            "quotes"
        ],
        id="hash-in-flow-mapping",
    ),
    pytest.param(
        yaml_catalogue() + "---\nmore: 1\n",
        [
            "items.yaml:20: invalid YAML: but found another document "
            "(expected a single document in the stream)"
        ],
        id="second-document",
    ),
    # Not a catalogue at all
    pytest.param(
        "- a\n- b\n",
        ["items.yaml:1: expected a mapping of keys, found a list"],
        id="list-not-mapping",
    ),
    pytest.param(
        "Just some words\n",
        ["items.yaml:1: expected a mapping of keys, found 'Just some words'"],
        id="scalar-not-mapping",
    ),
    # Invisible line breaks typed into the file: YAML would count them as lines, editors do not.
    pytest.param(
        yaml_catalogue(item(summary="One\u2028two"), item(id="b", date="2025-11-31")),
        [
            "items.yaml:19: contains U+2028, an invisible line break; delete it",
        ],
        id="raw-line-separator",
    ),
    pytest.param(
        "# note\u0085\n" + yaml_catalogue(),
        ["items.yaml:1: contains U+0085, an invisible line break; delete it"],
        id="raw-next-line",
    ),
    # A control character at the edge of a title is refused, not silently stripped.
    pytest.param(
        yaml_catalogue(item(title=r'"\x1fHello"')),
        ["items.yaml:16: items[0].title: contains the control character U+001F; remove it"],
        id="title-leading-control",
    ),
    # Empty lists that must not be empty say where they are.
    pytest.param(
        HEADER,
        ["items.yaml:14: items: expected a list, found nothing"],
        id="items-empty",
    ),
]


@pytest.mark.parametrize(("content", "expected"), REJECTED)
def test_mistake_reported_with_line(
    run: Run, write: Write, content: str, expected: list[str]
) -> None:
    """Each kind of mistake is named on stderr with its file, line and path, and exits 1."""
    assert_rejected(check(run, write, content), *expected)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("", id="empty"),
        pytest.param("  \n\n   \n", id="whitespace"),
        pytest.param("# Only a comment\n\n  # and another\n", id="comments"),
        pytest.param("---\n", id="document-marker"),
        pytest.param("---\n# nothing here\n...\n", id="empty-document"),
        pytest.param("~\n", id="null-document"),
    ],
)
def test_empty_catalogue(run: Run, write: Write, content: str) -> None:
    """A file with nothing in it says so, instead of a blank error or a traceback."""
    assert_rejected(
        check(run, write, content),
        "items.yaml: the catalogue is empty; the editors' guide (docs/editors.md) shows its format",
    )


def test_latin1_bytes_located(run: Run, write: Write) -> None:
    """A file saved as Latin-1 names the line and the offending byte, and says how to fix it."""
    content = header_with("  title: Campus News\n", "  title: Campus News\n  subtitle: Café\n")
    result = check(run, write, (content + item()).encode("latin-1"))
    assert_rejected(result, "items.yaml:3: byte 0xe9 is not UTF-8; save the file as UTF-8")


@pytest.mark.parametrize(
    ("sequence", "byte"),
    [
        (b"\xed\xa0\x80", "0xed"),  # a surrogate, which UTF-8 may not carry
        (b"\xc0\xaf", "0xc0"),  # an overlong "/"
        (b"\xe2\x80 ", "0xe2"),  # a sequence cut short
        (b"\xf4\x90\x80\x80", "0xf4"),  # beyond U+10FFFF
    ],
)
def test_malformed_utf8_located(run: Run, write: Write, sequence: bytes, byte: str) -> None:
    """Bytes that are not UTF-8 in an otherwise UTF-8 file are found where they are."""
    content = header_with("  title: Campus News\n", "  title: Campus News\n  subtitle: X\n")
    raw = (content + item()).encode().replace(b"subtitle: X", b"subtitle: X" + sequence)
    result = check(run, write, raw)
    assert_rejected(result, f"items.yaml:3: byte {byte} is not UTF-8; save the file as UTF-8")


def test_malformed_utf8_beside_an_invisible_line_break(run: Run, write: Write) -> None:
    """A U+2028 does not hide a bad byte: the encoding is reported first, as the deeper fault."""
    content = header_with("  title: Campus News\n", "  title: Campus News\n  subtitle: X\n")
    raw = (content + item()).encode().replace(b"subtitle: X", b"subtitle: X\xff\xe2\x80\xa8")
    assert_rejected(
        check(run, write, raw), "items.yaml:3: byte 0xff is not UTF-8; save the file as UTF-8"
    )


def test_alias_bomb_refused(run: Run, write: Write) -> None:
    """A "billion laughs" catalogue is refused with a message, instead of eating all memory."""
    levels = ["&l0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, 7)]
    result = check(run, write, yaml_catalogue(item(tags="[" + ", ".join(levels) + "]")))
    assert_rejected(
        result,
        "items.yaml:20: aliases expand to more than 10000 extra values; "
        "write the content out instead of nesting aliases",
        "items.yaml:20: items[0].tags: expected text, found a list",
    )


def test_missing_file(run: Run) -> None:
    """A catalogue path that does not exist is named, with the reason, and exits 1."""
    result = run("check", "-c", "missing.yaml")
    assert_rejected(result, "missing.yaml: cannot read the catalogue: No such file or directory")


def test_unknown_option_is_usage_error(run: Run, write: Write) -> None:
    """A mistyped option is a usage error (exit 2), not a validation failure."""
    write(yaml_catalogue())
    result = run("check", "--catalog", "items.yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "Error: No such option '--catalog'. Did you mean '--catalogue'?"
    )


# ------------------------------------------------------------------------------------------------
# Many mistakes at once


FIVE_MISTAKES = yaml_catalogue(
    item(id="one", date="2025-11-31"),
    item(id="two", category="sports", sumary="Typo."),
    item(id="one") + "    title: Again\n",
)
FIVE_MISTAKES_REPORT = (
    "items.yaml:17: items[0].date: '2025-11-31' is not a real date "
    "(day is out of range for month)\n"
    "items.yaml:23: items[1].category: 'sports' is not a declared category; "
    "declared: people, research\n"
    "items.yaml:25: items[1].sumary: unknown key 'sumary'; did you mean 'summary'?\n"
    "items.yaml:26: items[2].id: 'one' is already used by the item at line 15; ids must be unique\n"
    "items.yaml:31: items[2].title: duplicate key (first at line 27); "
    "YAML would keep only the last one, so remove or rename one of them\n"
)


def test_every_mistake_reported_in_one_run(run: Run, write: Write) -> None:
    """An editor sees all five mistakes at once, in file order, not one per run."""
    result = check(run, write, FIVE_MISTAKES)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", FIVE_MISTAKES_REPORT)


def test_failed_build_writes_nothing(run: Run, write: Write, tmp_path: Path) -> None:
    """`digest build` on a broken catalogue leaves the feeds directory exactly as it was."""
    write(FIVE_MISTAKES)
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    sentinel = feeds / "all.atom.xml"
    sentinel.write_bytes(b"<feed>old</feed>\n")
    os.utime(sentinel, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = snapshot(feeds)
    result = run("build")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", FIVE_MISTAKES_REPORT)
    assert snapshot(feeds) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feeds", "items.yaml"]


def test_failed_build_creates_no_directory(run: Run, write: Write, tmp_path: Path) -> None:
    """A failed build into a new directory does not leave an empty one behind."""
    write(FIVE_MISTAKES)
    result = run("build", "-o", "public/feeds")
    assert result.exit_code == 1
    assert not (tmp_path / "public").exists()


def test_debug_shows_traceback(run: Run, write: Write) -> None:
    """`--debug` lets the error through with its traceback instead of the one-line summary."""
    write(FIVE_MISTAKES)
    with pytest.raises(CatalogueError) as info:
        run("--debug", "check")
    assert str(info.value) + "\n" == FIVE_MISTAKES_REPORT


# ------------------------------------------------------------------------------------------------
# Limits: generous for any real publication, enforced before anything is built or sent

# The limits, written out: catalogue.MAX_* may not drift without these tests noticing.
SUMMARY_MAX, BODY_MAX, LINE_MAX, URL_MAX, SLUG_MAX = 10_000, 100_000, 500, 2_048, 100
CATALOGUE_MAX = 200_000_000
SUMMARY_FIX = "a summary is the teaser every feed and digest shows; put the full text in `body`"
SLUG_FIX = "a slug names files and links and must stay short; use a few words, like 'campus-news'"


def long_slug(length: int) -> str:
    """Return a valid slug of exactly `length` characters."""
    return ("campus-news-" * length)[: length - 1] + "x"


OVER_LIMIT = [
    pytest.param(
        yaml_catalogue(item(summary="s" * (SUMMARY_MAX + 1))),
        "items.yaml:19: items[0].summary: is 10,001 characters long (at most 10,000 "
        f"characters; {SUMMARY_FIX})",
        id="summary",
    ),
    pytest.param(
        yaml_catalogue(item(body="b" * (BODY_MAX + 1))),
        "items.yaml:20: items[0].body: is 100,001 characters long (at most 100,000 characters; "
        "publish a text this long on the web site and point to it with `link`)",
        id="body",
    ),
    pytest.param(
        yaml_catalogue(item(title="t" * (LINE_MAX + 1))),
        "items.yaml:16: items[0].title: is 501 characters long (at most 500 characters; "
        "shorten it)",
        id="title",
    ),
    pytest.param(
        yaml_catalogue(item(link="https://example.edu/" + "p" * (URL_MAX - 19))),
        "items.yaml:20: items[0].link: is 2,049 characters long (at most 2,048 characters; "
        "use the page's short address)",
        id="link",
    ),
    pytest.param(
        yaml_catalogue(item(id=long_slug(SLUG_MAX + 1))),
        f"items.yaml:15: items[0].id: is 101 characters long (at most 100 characters; {SLUG_FIX})",
        id="item-id",
    ),
    pytest.param(
        yaml_catalogue(header=header_with("slug: people,", f"slug: {long_slug(101)},")),
        "items.yaml:11: publication.categories[1].slug: is 101 characters long (at most 100 "
        f"characters; {SLUG_FIX})",
        id="category-slug",
    ),
    pytest.param(
        yaml_catalogue(header=header_with("slug: features,", f"slug: {long_slug(101)},")),
        "items.yaml:13: publication.sections[0].slug: is 101 characters long (at most 100 "
        f"characters; {SLUG_FIX})",
        id="section-slug",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("content", "expected"), OVER_LIMIT)
def test_value_over_its_limit_reported_with_line(
    run: Run, write: Write, content: str, expected: str
) -> None:
    """A value past its limit is named with its line and the limit, before anything is built."""
    assert_rejected(check(run, write, content), expected)


def test_values_at_their_limits_accepted(run: Run, write: Write) -> None:
    """Every limit is inclusive: a value exactly as long as allowed passes."""
    slug = long_slug(SLUG_MAX)
    text = yaml_catalogue(
        item(
            id=long_slug(SLUG_MAX),
            title="t" * LINE_MAX,
            category=slug,
            summary="s" * SUMMARY_MAX,
            body="b" * BODY_MAX,
            link="https://example.edu/" + "p" * (URL_MAX - 20),
        ),
        header=header_with("slug: people,", f"slug: {slug},"),
    )
    result = check(run, write, text)
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr


def test_longest_category_slug_builds(run: Run, write: Write, tmp_path: Path) -> None:
    """A category slug of the longest allowed length gets its feeds, temporary files and all."""
    slug = long_slug(SLUG_MAX)
    write(
        yaml_catalogue(item(category=slug), header=header_with("slug: people,", f"slug: {slug},"))
    )
    result = run("build")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "feeds" / f"{slug}.atom.xml").is_file()


def test_slug_too_long_for_a_file_name_refused_by_build(
    run: Run, write: Write, tmp_path: Path
) -> None:
    """A 240-character category slug is a line-numbered error, not a traceback halfway through."""
    slug = long_slug(240)
    write(yaml_catalogue(header=header_with("slug: people,", f"slug: {slug},")))
    result = run("build")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "items.yaml:11: publication.categories[1].slug: is 240 characters long (at most 100 "
        f"characters; {SLUG_FIX})\n",
    )
    assert not (tmp_path / "feeds").exists()


def test_summary_over_limit_refused_by_build(run: Run, write: Write, tmp_path: Path) -> None:
    """A pasted 50 MB summary stops the build at once instead of writing feeds of 478 MB."""
    write(yaml_catalogue(item(summary="s" * 50_000_000)))
    result = run("build")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "items.yaml:19: items[0].summary: is 50,000,000 characters long (at most 10,000 "
        f"characters; {SUMMARY_FIX})\n",
    )
    assert not (tmp_path / "feeds").exists()


def test_catalogue_over_size_limit_refused_before_parsing(run: Run, tmp_path: Path) -> None:
    """A file far too big to be a catalogue gets one line naming it, not a parse of all of it."""
    with (tmp_path / "items.yaml").open("wb") as handle:
        handle.truncate(CATALOGUE_MAX + 1)  # sparse: no disk written
    too_big = (
        "items.yaml: the catalogue is larger than 200 MB, the most `digest` reads (100,000 items "
        "take about 90 MB); check that -c names the catalogue, and look for a pasted file or log "
        "that does not belong in it\n"
    )
    for command in ("check", "build", "render"):
        result = run(command)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", too_big), command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.yaml"]


def test_subject_with_a_line_break_refused_by_check(run: Run, write: Write) -> None:
    """`check` refuses the subject `send` would refuse, instead of passing it."""
    newsletter = (
        "newsletter:\n"
        '  from: "Campus News <news@example.edu>"\n'
        '  subject: "Campus News {month:%B%n}"\n'
        '  schedule: "0 9 1 * *"\n'
        '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
    )
    assert_rejected(
        check(run, write, yaml_catalogue() + newsletter),
        "items.yaml:22: newsletter.subject: becomes 'Campus News January\\n' for January 2025, "
        "which contains U+000A, a line break, and a subject must be one line; remove the date "
        "format that makes it (such as %n)",
    )
