"""The catalogue as a library: what `load` makes of items.yaml, and what it refuses."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import CatalogueError
from digest.mail import message
from digest.mail import newsletter as newsletter_module
from digest.months import Month
from digest.publish import catalogue
from helpers import HEADER, NOW, item, load_text, yaml_catalogue

# The subject is on this line when newsletter() follows a one-item yaml_catalogue().
SUBJECT_LINE = 22


def newsletter(subject: str) -> str:
    """Return a newsletter block with the given subject, written as a double-quoted scalar."""
    return (
        "newsletter:\n"
        '  from: "News Office <news@example.edu>"\n'
        f"  subject: {json.dumps(subject, ensure_ascii=False)}\n"
        '  schedule: "0 9 1 * *"\n'
        '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
    )


def parse(text: str) -> catalogue.Catalogue:
    """Validate catalogue text without touching the disk (hypothesis reuses no tmp_path)."""
    return catalogue.parse(text.encode("utf-8"), Path("items.yaml"), "items.yaml")


def problems(text: str) -> list[str]:
    """Return the lines `digest check` would print for catalogue text that must be invalid."""
    with pytest.raises(CatalogueError) as info:
        parse(text)
    return [str(p) for p in info.value.problems]


def ids(items: tuple[catalogue.Item, ...]) -> list[str]:
    return [i.id for i in items]


def header_with(old: str, new: str) -> str:
    """Return HEADER with one piece of text replaced (which must be there)."""
    assert old in HEADER
    return HEADER.replace(old, new)


# ------------------------------------------------------------------------------------------------
# What gets published, and when


def test_drafts_and_scheduled_items_are_not_published(tmp_path: Path) -> None:
    """Drafts and future items stay out of the feeds, yet the summary counts them."""
    cat = load_text(
        yaml_catalogue(
            item(id="live"),
            item(id="draft", draft="true"),
            item(id="scheduled", date="2026-06-01"),
            item(id="old-draft", date="2020-01-01", draft="true"),
        ),
        tmp_path,
    )
    assert ids(cat.published(NOW)) == ["live"]
    assert cat.counts(NOW) == {
        "items": 4,
        "published": 1,
        "drafts": 2,
        "scheduled": 1,
        "categories": 2,
    }


def test_scheduled_item_published_once_its_date_comes(tmp_path: Path) -> None:
    """An item dated in the future appears from its date on (midnight, publication time)."""
    cat = load_text(yaml_catalogue(item(id="later", date="2026-06-01")), tmp_path)
    midnight_hk = datetime(2026, 5, 31, 16, 0, tzinfo=UTC)
    assert ids(cat.published(midnight_hk - timedelta(seconds=1))) == []
    assert ids(cat.published(midnight_hk)) == ["later"]


def test_published_newest_first_keeping_file_order_for_ties(tmp_path: Path) -> None:
    """Feeds list the newest item first; items of the same moment keep their order in the file."""
    cat = load_text(
        yaml_catalogue(
            item(id="a", date="2025-11-01"),
            item(id="b", date="2025-11-19"),
            item(id="c", date="2025-11-19T00:00:00+08:00"),  # the same moment as b
            item(id="d", date="2025-10-01"),
            item(id="e", date="2025-11-19T09:30"),
        ),
        tmp_path,
    )
    assert ids(cat.published(NOW)) == ["e", "b", "c", "a", "d"]
    assert ids(cat.items) == ["a", "b", "c", "d", "e"]


# ------------------------------------------------------------------------------------------------
# Dates and time zones


def test_naive_date_time_read_in_publication_timezone(tmp_path: Path) -> None:
    """`09:30` in a Hong Kong catalogue means 09:30 in Hong Kong, not in UTC."""
    (it,) = load_text(yaml_catalogue(item(date="2025-11-19T09:30")), tmp_path).items
    assert it.date.utcoffset() == timedelta(hours=8)
    assert it.date == datetime(2025, 11, 19, 1, 30, tzinfo=UTC)


def test_date_only_is_midnight_in_publication_timezone(tmp_path: Path) -> None:
    """A plain date is the start of that day where the publication is."""
    (it,) = load_text(yaml_catalogue(item(date="2025-11-19")), tmp_path).items
    assert it.date.utcoffset() == timedelta(hours=8)
    assert it.date == datetime(2025, 11, 18, 16, 0, tzinfo=UTC)


def test_explicit_offset_is_kept(tmp_path: Path) -> None:
    """A date-time written with its own offset keeps it."""
    (it,) = load_text(yaml_catalogue(item(date="2025-11-19T09:30:00-05:00")), tmp_path).items
    assert it.date.utcoffset() == timedelta(hours=-5)
    assert it.date == datetime(2025, 11, 19, 14, 30, tzinfo=UTC)


def test_updated_is_optional_and_modified_prefers_it(tmp_path: Path) -> None:
    """A correction date, when given, is when the item last changed."""
    cat = load_text(
        yaml_catalogue(item(id="a"), item(id="b", updated="2025-11-20T10:00")), tmp_path
    )
    a, b = cat.items
    assert (a.updated, a.modified) == (None, a.date)
    assert b.modified == b.updated == datetime(2025, 11, 20, 2, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------
# Publication settings


def test_feeds_url_gets_trailing_slash(tmp_path: Path) -> None:
    """`feeds_url` without a trailing slash still yields correct feed addresses."""
    text = header_with("feeds_url: https://news.example.edu/feeds/", "feeds_url: https://x.org/f")
    cat = load_text(text + item(), tmp_path)
    assert cat.publication.feeds_url == "https://x.org/f/"


def test_defaults_when_settings_omitted(tmp_path: Path) -> None:
    """Leaving out language, timezone and feed_limit gives en, UTC and 50."""
    text = re.sub(r"  (language|timezone|feed_limit): .*\n", "", HEADER)
    assert "timezone" not in text
    cat = load_text(text + item(), tmp_path)
    pub = cat.publication
    assert (pub.language, pub.timezone, pub.feed_limit) == ("en", "UTC", 50)
    assert (pub.subtitle, pub.sections[0].slug) == (None, "features")
    assert cat.items[0].date == datetime(2025, 11, 19, tzinfo=UTC)


def test_declared_order_is_kept(tmp_path: Path) -> None:
    """Categories and sections keep the order they are declared in (the digest's order)."""
    pub = load_text(yaml_catalogue(), tmp_path).publication
    assert [(c.slug, c.name) for c in pub.categories] == [
        ("research", "Research"),
        ("people", "People"),
    ]
    assert [(s.slug, s.name) for s in pub.sections] == [("features", "Features")]
    assert (pub.author.name, pub.author.email, pub.host) == (
        "News Office",
        "news@example.edu",
        "news.example.edu",
    )


def test_item_fields_are_typed(tmp_path: Path) -> None:
    """Optional item fields arrive as the types the feeds need."""
    extra = {
        "section": "features",
        "link": "https://news.example.edu/a",
        "image": "{url: https://news.example.edu/a.png, alt: A cat}",
        "tags": "[medicine, 2025]",
        "draft": "false",
        "body": "|\n      Para one.\n\n      Para two.",
    }
    (it,) = load_text(yaml_catalogue(item(**extra)), tmp_path).items
    assert it.section == "features"
    assert it.link == "https://news.example.edu/a"
    assert it.image == catalogue.Image("https://news.example.edu/a.png", "A cat")
    assert it.tags == ("medicine", "2025")
    assert it.draft is False
    assert it.body == "Para one.\n\nPara two."
    assert it.line == 15


# ------------------------------------------------------------------------------------------------
# The newsletter block


def test_newsletter_is_optional(tmp_path: Path) -> None:
    """A catalogue used only for feeds needs no newsletter settings."""
    assert load_text(yaml_catalogue(), tmp_path).newsletter is None


def test_newsletter_read_with_defaults(tmp_path: Path) -> None:
    """The newsletter block is read, with subscribers.csv as the default list."""
    text = yaml_catalogue() + newsletter("News — {month:%B %Y}")
    news = load_text(text, tmp_path).newsletter
    assert news == catalogue.Newsletter(
        sender=catalogue.Mailbox("News Office", "news@example.edu"),
        reply_to=None,
        subject="News — {month:%B %Y}",
        schedule="0 9 1 * *",
        unsubscribe="mailto:news@example.edu?subject=unsubscribe",
        subscribers="subscribers.csv",
    )


def test_relay_limits_are_read(tmp_path: Path) -> None:
    """A relay's quota written once in items.yaml reaches every send as numbers."""
    text = (
        yaml_catalogue()
        + newsletter("News")
        + ('  delivery: {connections: 2, rate: "30/minute", daily_limit: 10000}\n')
    )
    news = load_text(text, tmp_path).newsletter
    assert news is not None
    assert news.limits == catalogue.Limits(connections=2, rate=0.5, daily_limit=10000)
    assert parse(yaml_catalogue() + newsletter("News")).newsletter.limits == catalogue.Limits()


@pytest.mark.parametrize(
    ("delivery", "message"),
    [
        (
            "{connections: 9}",
            "newsletter.delivery.connections: '9' connections is more than 8; relays refuse more",
        ),
        (
            "{connections: 0}",
            "newsletter.delivery.connections: '0' is not a whole number of 1 or more",
        ),
        (
            "{rate: 30}",
            """newsletter.delivery.rate: '30' is not a rate; write it like "30/minute" or """
            '"5/second"',
        ),
        (
            '{rate: "0/minute"}',
            """newsletter.delivery.rate: '0/minute' is not a rate; write it like "30/minute" or """
            '"5/second"',
        ),
        (
            "{daily_limit: -1}",
            "newsletter.delivery.daily_limit: '-1' is not a whole number of 1 or more",
        ),
        (
            "{per_day: 5}",
            "newsletter.delivery.per_day: unknown key 'per_day'; known keys: "
            "connections, rate, daily_limit",
        ),
    ],
)
def test_bad_relay_limits_are_located(delivery: str, message: str) -> None:
    """A mistyped quota is named with its line before any send relies on it."""
    text = yaml_catalogue() + newsletter("News") + f"  delivery: {delivery}\n"
    assert problems(text) == [f"items.yaml:{SUBJECT_LINE + 3}: {message}"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("news@example.edu", ("", "news@example.edu")),
        ("<news@example.edu>", ("", "news@example.edu")),
        ("News Office <news@example.edu>", ("News Office", "news@example.edu")),
        ('"Office, News" <news@example.edu>', ("Office, News", "news@example.edu")),
    ],
)
def test_sender_is_read_as_name_and_address(
    tmp_path: Path, written: str, expected: tuple[str, str]
) -> None:
    """The From line shows the office's name and sends from its address."""
    text = yaml_catalogue() + newsletter("News").replace(
        '"News Office <news@example.edu>"', json.dumps(written)
    )
    news = load_text(text, tmp_path).newsletter
    assert news is not None
    assert (news.sender.name or "", news.sender.address) == expected


ONLY_MONTH = (
    "is not allowed: only {month} is available, optionally with a date format after a colon, "
    "like {month:%B %Y}; attributes, indexes and conversions ({month.year}, {month[0]}, "
    "{month!r}) are not"
)


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("News {year}", f"{{year}} {ONLY_MONTH}"),
        (
            "News {",
            "is not a valid template (Single '{' encountered in format string); "
            "write braces as {{ and }}",
        ),
        ("News {month.day_name}", f"{{month.day_name}} {ONLY_MONTH}"),
        ("News {month[0]}", f"{{month[0]}} {ONLY_MONTH}"),
        # These two were accepted, and put Python's insides into the subject.
        ("News {month.__class__}", f"{{month.__class__}} {ONLY_MONTH}"),
        ("News {month.year}", f"{{month.year}} {ONLY_MONTH}"),
        ("News {0}", f"{{0}} {ONLY_MONTH}"),
        ("News {}", f"{{}} {ONLY_MONTH}"),
        ("News {month!r}", f"{{month!r}} {ONLY_MONTH}"),
        ("News {month:{month}}", f"{{month:{{month}}}} {ONLY_MONTH}"),
        ("{month: }", "is empty for January 2025; write some text around {month}"),
    ],
)
def test_subject_placeholders_checked(subject: str, message: str) -> None:
    """A subject that could not be filled in is caught now, not on the day the digest is sent."""
    text = yaml_catalogue() + newsletter(subject)
    assert problems(text) == [f"items.yaml:{SUBJECT_LINE}: newsletter.subject: {message}"]


@pytest.mark.parametrize(
    ("subject", "shown"),
    [
        ("News — {month:%B %Y%n}", "'News — January 2025\\n'"),
        ("News {month:%B%n%Y}", "'News January\\n2025'"),
    ],
)
def test_subject_that_breaks_the_header_refused(subject: str, shown: str) -> None:
    """A subject `send` would refuse (a line break from %n) is refused by `check` already."""
    expected = (
        f"items.yaml:{SUBJECT_LINE}: newsletter.subject: becomes {shown} for January 2025, "
        "which contains U+000A, a line break, and a subject must be one line; remove the date "
        "format that makes it (such as %n)"
    )
    assert problems(yaml_catalogue() + newsletter(subject)) == [expected]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["News ", "{month}", "{month:%B %Y}", "{month:%n}", "{month:%t}", "{month:%j}", "{",
             "}", "{{", "}}", "{month.year}", "{0}", ":", "%", "{month:%B%n}", " "]
        ),
        min_size=1,
        max_size=6,
    ).map("".join),
    st.integers(1, 12),
    st.integers(1990, 2100),
)  # fmt: skip
def test_check_accepts_only_subjects_every_send_can_use(
    template: str, month: int, year: int
) -> None:
    """A subject that passes `check` never stops a send later, whatever the month."""
    try:
        checked = parse(yaml_catalogue() + newsletter(template))
    except CatalogueError:
        return
    empty = newsletter_module.Issue(Month(year, month), ())
    subject = newsletter_module.Renderer(checked).render(empty, web=True).subject
    assert message.header_safe(subject, "the subject") == subject


@pytest.mark.parametrize("subject", ["{month:%B %Y}", "{month}", "Plain {{braces}}"])
def test_subject_with_month_accepted(subject: str) -> None:
    """The {month} placeholder, with or without a date format, is accepted."""
    assert parse(yaml_catalogue() + newsletter(subject)).newsletter is not None


# ------------------------------------------------------------------------------------------------
# Values are text until their field says otherwise


@pytest.mark.parametrize(
    ("written", "title"),
    [
        ("NO", "NO"),
        ("no", "no"),
        ("yes", "yes"),
        ("on", "on"),
        ("true", "true"),
        ("123", "123"),
        ("1.10", "1.10"),
        ("0x1F", "0x1F"),
        ("1e3", "1e3"),
        (".inf", ".inf"),
        ("2025-11-19", "2025-11-19"),
        ("12:30", "12:30"),
        ("'null'", "null"),
        ('"~"', "~"),
        ("  padded  ", "padded"),
        ("'  quoted padding  '", "quoted padding"),
    ],
)
def test_title_kept_as_written(tmp_path: Path, written: str, title: str) -> None:
    """A title that looks like a boolean, number or date is shown exactly as written."""
    (it,) = load_text(yaml_catalogue(item(title=written)), tmp_path).items
    assert it.title == title
    assert type(it.title) is str


# ------------------------------------------------------------------------------------------------
# Arbitrary text


def yaml_quoted(text: str) -> str:
    """Return text as a YAML double-quoted scalar.

    JSON strings are YAML double-quoted scalars; non-ASCII stays raw (ensure_ascii=False) because
    YAML, unlike JSON, has no surrogate pairs: "\\ud83d\\ude00" is refused. The characters YAML
    would take as line breaks or refuse raw are escaped.
    """
    return re.sub(
        "[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]",
        lambda m: f"\\u{ord(m.group()):04x}",
        json.dumps(text, ensure_ascii=False),
    )


SAFE_TEXT = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85\ufffe\uffff"
)

# Every character a title must refuse: C0 and C1 controls other than tab, the line breaks, the
# two non-characters and the surrogates.
FORBIDDEN = st.one_of(
    st.sampled_from(
        [chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]]
        + ["\u2028", "\u2029", "\ufffe", "\uffff"]
    ),
    st.integers(0xD800, 0xDFFF).map(chr),
)


@settings(max_examples=200)
@given(st.text(SAFE_TEXT, min_size=1).filter(str.strip))
def test_any_title_round_trips(title: str) -> None:
    """Any one-line title the editor writes reaches the feeds unchanged (bar outer spaces)."""
    (it,) = parse(yaml_catalogue(item(title=yaml_quoted(title)))).items
    assert it.title == title.strip()


@settings(max_examples=100)
@given(st.text(st.one_of(SAFE_TEXT, st.sampled_from("\n\t\u2028")), min_size=1).filter(str.strip))
def test_any_summary_round_trips(summary: str) -> None:
    """Any summary, line breaks included, is kept as written (bar outer whitespace)."""
    (it,) = parse(yaml_catalogue(item(summary=yaml_quoted(summary)))).items
    assert it.summary == summary.strip()


@settings(max_examples=200)
@given(st.text(SAFE_TEXT), FORBIDDEN, st.text(SAFE_TEXT))
def test_forbidden_character_in_title_located(before: str, bad: str, after: str) -> None:
    """A control character or line break in a title is refused with its line, never a crash."""
    title = f"x{before}{bad}{after}x"
    found = problems(yaml_catalogue(item(title=yaml_quoted(title))))
    if "\ud800" <= bad <= "\udfff":
        expected = (
            "invalid YAML: found invalid Unicode character escape code "
            "(while parsing a quoted scalar)"
        )
    elif bad in "\n\r\u2028\u2029":
        expected = (
            f"items[0].title: must be a single line (it contains U+{ord(bad):04X}, a line break)"
        )
    else:
        expected = f"items[0].title: contains the control character U+{ord(bad):04X}; remove it"
    assert found == [f"items.yaml:16: {expected}"]


def test_raw_control_character_located() -> None:
    """A control character pasted into the file itself is named with its line, on one line."""
    raw = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0x85)]
    raw += [*range(0x86, 0xA0), 0xFFFE, 0xFFFF]
    for code in raw:
        text = yaml_catalogue(item(id="first"), item(id="second", summary=f"a{chr(code)}b"))
        expected = f"items.yaml:24: contains the control character U+{code:04X}; remove it"
        assert problems(text) == [expected], hex(code)


def outcome(raw: bytes) -> list[str] | None:
    """Return the problems reported for raw catalogue bytes, or None if they are valid."""
    try:
        catalogue.parse(raw, Path("items.yaml"), "items.yaml")
    except CatalogueError as exc:
        return [str(p) for p in exc.problems]
    return None


YAML_TOKENS = st.text(st.sampled_from(list(":-&*!|>[]{},#?\"'\n \tab1~%@`\\")), max_size=80)


@settings(max_examples=200)
@given(st.one_of(st.binary(max_size=120), YAML_TOKENS.map(str.encode)))
def test_any_bytes_load_or_fail_cleanly(raw: bytes) -> None:
    """Whatever the file holds, the user gets located one-line messages, never a traceback."""
    found = outcome(raw)
    if found is not None:
        assert found
        for line in found:
            assert line.startswith("items.yaml")
            assert "\n" not in line


@settings(max_examples=200)
@given(st.integers(0, 18), st.one_of(st.text(max_size=12), YAML_TOKENS))
def test_any_value_fails_cleanly(line: int, value: str) -> None:
    """Any value on any line of a valid catalogue loads or is refused with messages only."""
    lines = yaml_catalogue().splitlines()
    key = lines[line].split(":", 1)[0]
    lines[line] = f"{key}: {value}"
    found = outcome(("\n".join(lines) + "\n").encode("utf-8"))
    assert all("\n" not in line for line in found or [])


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_comment_cutting_a_title_is_found_after_wide_characters(newline: str) -> None:
    """A ` #` after Chinese text, in a file saved with Windows line ends, is still caught."""
    text = yaml_catalogue(item(title="“研討會” Seminar #3 on AI")).replace("\n", newline)
    assert problems(text) == [
        "items.yaml:16: items[0].title: ' #' starts a YAML comment, so this value was cut to "
        "'“研討會” Seminar'; put the whole value in quotes: title: \"“研討會” Seminar #3 on AI\""
    ]


def test_dkim_block_is_read(tmp_path: Path) -> None:
    """The signing domain and selector written once in items.yaml reach every send."""
    text = (
        yaml_catalogue()
        + newsletter("News")
        + "  dkim: {domain: Provost.Example.edu., selector: d2026}\n"
    )
    news = load_text(text, tmp_path).newsletter
    assert news is not None
    assert news.dkim == catalogue.Dkim(domain="provost.example.edu", selector="d2026")
    assert parse(yaml_catalogue() + newsletter("News")).newsletter.dkim is None


@pytest.mark.parametrize(
    ("dkim", "message"),
    [
        (
            "{domain: localhost, selector: d1}",
            "newsletter.dkim.domain: 'localhost' is not a domain name (like provost.example.edu)",
        ),
        (
            "{domain: example.edu, selector: d_1}",
            "newsletter.dkim.selector: 'd_1' is not a DNS label (letters, digits and hyphens, "
            "at most 63, like 'digest2026')",
        ),
        ("{domain: example.edu}", "newsletter.dkim.selector: is required"),
        (
            "{domain: example.edu, selector: d1, key: k.pem}",
            "newsletter.dkim.key: unknown key 'key'; known keys: domain, selector",
        ),
    ],
)
def test_bad_dkim_block_is_located(dkim: str, message: str) -> None:
    """A mistyped DKIM domain or selector is named with its line before anything is signed."""
    text = yaml_catalogue() + newsletter("News") + f"  dkim: {dkim}\n"
    assert problems(text) == [f"items.yaml:{SUBJECT_LINE + 3}: {message}"]


@pytest.mark.parametrize("domain", ["example.edu", "mail.example.edu", "Example.EDU."])
def test_dkim_domain_that_aligns_with_from_is_taken(domain: str) -> None:
    """Signing as the From domain, a parent or a subdomain of it passes DMARC: no error."""
    text = yaml_catalogue() + newsletter("News") + f"  dkim: {{domain: {domain}, selector: d1}}\n"
    news = parse(text).newsletter
    assert news is not None
    assert news.dkim is not None
    assert news.dkim.aligns("news@example.edu")


@pytest.mark.parametrize("domain", ["relay-mail.com", "example.org", "ample.edu"])
def test_dkim_domain_that_does_not_align_with_from_is_refused(domain: str) -> None:
    """A signature by another domain would fail DMARC on every message: refused, with its line."""
    text = yaml_catalogue() + newsletter("News") + f"  dkim: {{domain: {domain}, selector: d1}}\n"
    assert problems(text) == [
        f"items.yaml:{SUBJECT_LINE + 3}: newsletter.dkim.domain: '{domain}' does not align with "
        "the From address's domain 'example.edu', so DMARC would fail for every message even "
        "with a good signature; sign as 'example.edu' (or a domain it is a subdomain of), or "
        "leave newsletter.dkim out and let the relay sign"
    ]


def _loaded_or_problems(text: str, tmp_path: Path) -> object:
    """Return the catalogue `text` loads into, or the problems it is refused with."""
    try:
        return load_text(text, tmp_path)
    except CatalogueError as exc:
        return str(exc)


@pytest.mark.parametrize(
    "text",
    [
        yaml_catalogue(item(), item(id="second", title="Second")),
        # Anchors in the items: aliases to them, in later items, still find them.
        yaml_catalogue(
            item(summary="&sum A shared summary."),
            item(id="second", summary="*sum"),
            item(id="third", tags="&t [a, b]"),
            item(id="fourth", tags="*t"),
        ),
        # An anchor before the items (in the publication), used inside them.
        HEADER.replace("  language: en\n", "  language: &lang en\n")
        + item(title="*lang")
        + item(id="second"),
        # Mistakes inside the items, and an alias the file never anchored.
        yaml_catalogue(item(date="2025-13-01"), item(id="x", category="nope"), item(id="y")),
        yaml_catalogue(item(summary="*nowhere")),
        yaml_catalogue(item(summary="&a one"), item(id="b", summary="&a two")),
        # `items` twice: the second is a duplicate key, reported and never checked.
        yaml_catalogue(item()) + "items:\n" + item(id="again", date="2025-99-99"),
        # Not a list, a list of text, an entry that is an alias of a whole item.
        HEADER + "  just text\n",
        HEADER + "  - one\n  - two\n",
        yaml_catalogue(
            "  - &whole\n" + item(id="w").replace("  - id", "    id", 1), "  - *whole\n"
        ),
        # Aliases past the budget.
        yaml_catalogue(item(tags="&t0 [a, a, a, a, a, a, a, a, a, a]"))
        + "".join(
            item(id=f"i{n}", tags="[" + ", ".join([f"*t{n - 1}"] * 10) + "]").replace(
                "tags: [", f"tags: &t{n} [", 1
            )
            for n in range(1, 6)
        ),
    ],
)
def test_items_read_one_by_one_load_as_the_whole_file_does(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large catalogue's items are made as they are read (to save memory), to the same result.

    Every catalogue here is small, so it is read whole; with the size for reading item by item
    set to nothing, it must load, or be refused with the same problems, exactly alike.
    """
    whole = _loaded_or_problems(text, tmp_path)
    monkeypatch.setattr(catalogue, "STREAM_FROM_BYTES", 0)
    assert _loaded_or_problems(text, tmp_path) == whole
