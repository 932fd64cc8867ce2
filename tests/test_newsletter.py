"""The monthly digest: what goes in it, in what order, and what never does."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from digest.errors import RenderError
from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue
from helpers import NOW, item, load_text, yaml_catalogue

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
NOVEMBER = Month(2025, 11)
UNSUBSCRIBE = "mailto:news@example.edu?subject=unsubscribe&x=1"


@pytest.fixture
def bundled_catalogue() -> catalogue.Catalogue:
    return catalogue.load(ROOT / "items.yaml")


def titles_in(html: str) -> list[str]:
    return re.findall(r'<h3 class="item-title"[^>]*>(?:<a [^>]*>)?(.*?)(?:</a>)?</h3>', html)


def test_month_items_grouped_by_declared_category(bundled_catalogue: catalogue.Catalogue) -> None:
    """Faculty read the month's items under their categories, in the office's declared order."""
    issue = newsletter.issue(bundled_catalogue, NOVEMBER, NOW)
    assert [(s.category.name, [i.id for i in s.items]) for s in issue.sections] == [
        ("Institutional Advancement", ["medical-school-preparations"]),
        ("Engagement", ["talk-william-mobley-empathy-and-compassion"]),
        ("Collaboration", ["gptx-collaboration"]),
    ]


def test_every_item_appears_exactly_once(bundled_catalogue: catalogue.Catalogue) -> None:
    """No item of the month is missing or shown twice, in HTML or text."""
    rendered = newsletter.Renderer(bundled_catalogue).render(
        newsletter.issue(bundled_catalogue, NOVEMBER, NOW)
    )
    html, text = rendered.personalise("Prof. Chan", UNSUBSCRIBE)
    expected = [
        "HKUST Commences Preparations for New Medical School",
        "Talk by Dr. William Mobley - Educating for Empathy &amp; Compassion",
        "HKUST &amp; GPTX Forge Collaboration to Advance Innovation &amp; Entrepreneurship in "
        "AI, Robotics &amp; Healthcare",
    ]
    assert titles_in(html) == expected
    for title in expected:
        # A title line is followed by the item's date (a summary may repeat the title).
        heading = re.compile(re.escape(title.replace("&amp;", "&")) + r"\n\d+ November 2025\n")
        assert len(heading.findall(text)) == 1


def test_newest_first_within_a_category(tmp_path: Path) -> None:
    """Within a category the newest item leads."""
    cat = load_text(
        yaml_catalogue(
            item(id="old", title="Older", date="2025-11-02"),
            item(id="new", title="Newer", date="2025-11-20"),
            item(id="mid", title="Middle", date="2025-11-10"),
        ),
        tmp_path,
    )
    issue = newsletter.issue(cat, NOVEMBER, NOW)
    assert [i.id for i in issue.items] == ["new", "mid", "old"]


def test_drafts_scheduled_and_other_months_left_out(tmp_path: Path) -> None:
    """Drafts, items not yet due and items of other months never reach faculty."""
    cat = load_text(
        yaml_catalogue(
            item(id="in", title="In November", date="2025-11-30T23:59"),
            item(id="draft", title="Draft", date="2025-11-05", draft="true"),
            item(id="october", title="October", date="2025-10-31T23:59"),
            item(id="december", title="December", date="2025-12-01"),
        ),
        tmp_path,
    )
    assert [i.id for i in newsletter.issue(cat, NOVEMBER, NOW).items] == ["in"]
    # Scheduled: an item dated after "now" is not in its month's digest yet.
    early = newsletter.issue(cat, Month(2025, 12), NOW.replace(year=2025, month=11, day=20))
    assert early.items == ()


def test_month_boundaries_follow_the_publication_time_zone(tmp_path: Path) -> None:
    """07:00 on 1 December in Hong Kong is December's, though it is still November in UTC."""
    cat = load_text(yaml_catalogue(item(date="2025-12-01T07:00")), tmp_path)
    assert newsletter.issue(cat, NOVEMBER, NOW).items == ()
    assert len(newsletter.issue(cat, Month(2025, 12), NOW).items) == 1


def test_empty_categories_are_omitted(bundled_catalogue: catalogue.Catalogue) -> None:
    """Faculty see no empty headings."""
    html, _ = (
        newsletter.Renderer(bundled_catalogue)
        .render(newsletter.issue(bundled_catalogue, NOVEMBER, NOW))
        .personalise(None, UNSUBSCRIBE)
    )
    headings = re.findall(r'<h2 class="category"[^>]*>(.*?)</h2>', html)
    assert headings == ["Institutional Advancement", "Engagement", "Collaboration"]


def test_css_is_inlined_once_per_selection(bundled_catalogue: catalogue.Catalogue) -> None:
    """10,000 subscribers do not mean 10,000 premailer runs: one per distinct selection."""
    renderer = newsletter.Renderer(bundled_catalogue)
    calls = 0
    original = renderer._inline

    def counting(page: str) -> str:
        nonlocal calls
        calls += 1
        return original(page)

    renderer._inline = counting  # type: ignore[method-assign]
    issue = newsletter.issue(bundled_catalogue, NOVEMBER, NOW)
    for index in range(200):
        rendered = renderer.render(issue)
        rendered.personalise(f"Reader {index}", UNSUBSCRIBE)
    assert calls == 1
    renderer.render(issue, frozenset({"engagement"}))
    renderer.render(issue, frozenset({"engagement"}))
    renderer.render(issue, frozenset({"engagement", "collaboration"}))
    assert calls == 3


def test_category_selection_keeps_only_chosen_sections(
    bundled_catalogue: catalogue.Catalogue,
) -> None:
    """A subscriber who chose Engagement gets only Engagement."""
    rendered = newsletter.Renderer(bundled_catalogue).render(
        newsletter.issue(bundled_catalogue, NOVEMBER, NOW), frozenset({"engagement"})
    )
    html, text = rendered.personalise(None, UNSUBSCRIBE)
    assert titles_in(html) == [
        "Talk by Dr. William Mobley - Educating for Empathy &amp; Compassion"
    ]
    assert "ENGAGEMENT" in text
    assert "COLLABORATION" not in text
    assert rendered.item_count == 1


def test_personal_parts_are_filled_in_and_escaped(bundled_catalogue: catalogue.Catalogue) -> None:
    """Each reader is greeted by name; a name with markup stays text, the unsubscribe link works."""
    rendered = newsletter.Renderer(bundled_catalogue).render(
        newsletter.issue(bundled_catalogue, NOVEMBER, NOW)
    )
    html, text = rendered.personalise('<b>Chan</b> & "Co"', UNSUBSCRIBE)
    assert 'Dear &lt;b&gt;Chan&lt;/b&gt; &amp; "Co",' in html
    assert 'href="mailto:news@example.edu?subject=unsubscribe&amp;x=1"' in html
    assert 'Dear <b>Chan</b> & "Co",' in text
    assert f"Unsubscribe: {UNSUBSCRIBE}" in text
    assert newsletter.GREETING_TOKEN not in html + text
    assert newsletter.UNSUBSCRIBE_TOKEN not in html + text
    anonymous, _ = rendered.personalise(None, UNSUBSCRIBE)
    assert "Dear colleague," in anonymous


def test_web_version_has_no_personal_parts(bundled_catalogue: catalogue.Catalogue) -> None:
    """The archive page greets no one and carries no unsubscribe link."""
    web = newsletter.Renderer(bundled_catalogue).render(
        newsletter.issue(bundled_catalogue, NOVEMBER, NOW), web=True
    )
    assert "Dear" not in web.html
    assert "Unsubscribe" not in web.html
    assert newsletter.GREETING_TOKEN not in web.html + web.text
    assert newsletter.UNSUBSCRIBE_TOKEN not in web.html + web.text


def test_mail_client_discipline(bundled_catalogue: catalogue.Catalogue) -> None:
    """Outlook and Gmail get a 600px table layout with inline styles and a kept dark-mode block."""
    html, _ = (
        newsletter.Renderer(bundled_catalogue)
        .render(newsletter.issue(bundled_catalogue, NOVEMBER, NOW))
        .personalise(None, UNSUBSCRIBE)
    )
    assert html.count("<style") == 1
    style = html[html.index("<style") : html.index("</style>")]
    assert "@media (prefers-color-scheme: dark)" in style
    assert "!important" in style
    # Only media queries remain in the block: every plain rule went into style="" attributes.
    assert (
        re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", style.split(">", 1)[1]).strip()
        == ""
    )
    assert '<meta name="color-scheme" content="light dark">' in html
    assert re.search(r'<table [^>]*class="container"[^>]*width="600"', html)
    assert re.search(r'class="container"[^>]*style="[^"]*max-width:600px', html)
    for tag in re.findall(r"<(?:td|h1|h2|h3|p) class=\"[^\"]+\"[^>]*>", html):
        assert "style=" in tag, tag
    assert "float:" not in html
    assert "position:" not in html


def test_hostile_markup_never_runs(tmp_path: Path) -> None:
    """Script, event handlers and javascript: URLs in a catalogue never reach a mailbox."""
    summary = (
        "Markdown [b](javascript:alert(3)) and ![i](data:image/png;base64,AAAA)\n\n"
        '<script>alert("s")</script><img src=x onerror=alert(1)> '
        '<a href="javascript:alert(2)">a</a> <p onclick="x()">p</p>'
    )
    cat = load_text(
        yaml_catalogue(
            item(title=json.dumps('<script>alert("t")</script>'), summary=json.dumps(summary))
        ),
        tmp_path,
    )
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    html, text = rendered.personalise(None, UNSUBSCRIBE)
    lowered = html.lower()
    assert "<script" not in lowered
    assert "onerror" not in lowered
    assert "onclick" not in lowered
    assert "javascript:" not in lowered
    assert "data:image" not in lowered
    assert '&lt;script&gt;alert("t")&lt;/script&gt;</h3>' in html
    assert "javascript:" not in text
    assert 'alert("s")' not in text
    # The title is plain text in the text version: shown as written.
    assert '<script>alert("t")</script>' in text


def test_office_templates_override_the_shipped_ones(tmp_path: Path) -> None:
    """The office edits newsletter_templates/ beside items.yaml without touching Python."""
    cat = load_text(yaml_catalogue(), tmp_path)
    own = tmp_path / "newsletter_templates"
    own.mkdir()
    footer = "{{ view_url }} {{ feeds_url }} {{ unsubscribe }}\n"
    (own / "digest.txt.j2").write_text(
        "Custom {{ month }}: {{ sections | length }} section(s)\n" + footer
    )
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    _, text = rendered.personalise(None, UNSUBSCRIBE)
    assert text == (
        "Custom November 2025: 1 section(s)\nhttps://news.example.edu/feeds/archive/2025-11.html "
        f"https://news.example.edu/feeds/ {UNSUBSCRIBE}\n"
    )
    # Files the office did not copy still come from the shipped templates.
    assert '<h1 class="title"' in rendered.html


def test_broken_template_is_reported_with_its_line(tmp_path: Path) -> None:
    """A typo in an edited template names the file and line instead of a traceback."""
    cat = load_text(yaml_catalogue(), tmp_path)
    own = tmp_path / "newsletter_templates"
    own.mkdir()
    (own / "digest.txt.j2").write_text("Line one\n{% for x in %}\n")
    with pytest.raises(RenderError, match=r"digest.txt.j2:2: the newsletter template failed"):
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))


def test_a_misspelt_name_in_a_template_is_reported_with_its_line(tmp_path: Path) -> None:
    """A name the template does not know (a typo in an edit) says where, not only what."""
    cat = load_text(yaml_catalogue(), tmp_path)
    own = tmp_path / "newsletter_templates"
    own.mkdir()
    (own / "digest.txt.j2").write_text("Line one\n{{ month }}\n{{ mnoth.label }}\n")
    with pytest.raises(RenderError) as raised:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(raised.value) == (
        f"{own / 'digest.txt.j2'}:3: the newsletter template failed: 'mnoth' is undefined"
    )


def test_text_version_wraps_and_spells_out_links(tmp_path: Path) -> None:
    """Plain-text readers get 72-column lines and see where each link goes."""
    long = "word " * 40 + "see [the plan](/plans/x.html)."
    cat = load_text(yaml_catalogue(item(summary=json.dumps(long))), tmp_path)
    _, text = (
        newsletter.Renderer(cat)
        .render(newsletter.issue(cat, NOVEMBER, NOW))
        .personalise(None, UNSUBSCRIBE)
    )
    body = text.split("First item\n", 1)[1]
    assert all(len(line) <= 72 for line in body.splitlines() if " " in line)
    assert "the plan (https://news.example.edu/plans/x.html)." in " ".join(text.split())


def test_subject_from_the_catalogue_template(tmp_path: Path) -> None:
    """The subject line is the office's template with the month filled in."""
    text = yaml_catalogue() + (
        "newsletter:\n"
        '  from: "News <news@example.edu>"\n'
        '  subject: "Campus News — {month:%B %Y} 📰"\n'
        '  schedule: "0 9 1 * *"\n'
        '  unsubscribe: "mailto:news@example.edu"\n'
    )
    cat = load_text(text, tmp_path)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert rendered.subject == "Campus News — November 2025 📰"


# ------------------------------------------------------------------------------------------------
# Styling opens no connection, and every email keeps its footer

NEWS = (
    "newsletter:\n"
    '  from: "Campus News <news@example.edu>"\n'
    '  subject: "Campus News — {month:%B %Y}"\n'
    '  schedule: "0 9 1 * *"\n'
    '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
)
FETCH_FIX = (
    "the email styler (premailer) would download it while rendering every email, and hang on a "
    "server that does not answer; `digest` renders without touching the network. Remove the "
    "@import, or copy the rules you need into style.css (for a web font, its @font-face rules, "
    "with the font files on your own site); most mail clients ignore web fonts anyway"
)
STYLE = (ROOT / "newsletter_templates" / "style.css").read_text(encoding="utf-8")
PAGE = (ROOT / "newsletter_templates" / "digest.html.j2").read_text(encoding="utf-8")


def own_templates(tmp_path: Path, name: str, text: str) -> Path:
    """Write one of the office's own templates beside items.yaml; return its directory."""
    own = tmp_path / "newsletter_templates"
    own.mkdir(exist_ok=True)
    (own / name).write_text(text, encoding="utf-8")
    return own


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        pytest.param(
            "@import url(http://127.0.0.1:9/font.css);", "http://127.0.0.1:9/font.css", id="url"
        ),
        pytest.param(
            '@import "https://fonts.example.org/css";', "https://fonts.example.org/css", id="string"
        ),
        pytest.param(
            "@import url(//fonts.example.org/css);",
            "//fonts.example.org/css",
            id="protocol-relative",
        ),
        pytest.param("@import 'local.css';", "local.css", id="relative-file"),
        pytest.param("@import url(file:///etc/passwd);", "file:///etc/passwd", id="file-url"),
        pytest.param(
            "@IMPORT url(http://127.0.0.1:9/a.css);", "http://127.0.0.1:9/a.css", id="upper-case"
        ),
        pytest.param(
            "@\\69mport url(http://127.0.0.1:9/b.css);", "http://127.0.0.1:9/b.css", id="escaped"
        ),
        pytest.param(
            "p { margin: 0; } @import url(http://127.0.0.1:9/late.css);",
            "http://127.0.0.1:9/late.css",
            id="after-a-rule",
        ),
    ],
)
def test_stylesheet_the_styler_would_fetch_refused(tmp_path: Path, line: str, shown: str) -> None:
    """An @import in style.css stops the render with its line, instead of a hung or slow send."""
    cat = load_text(yaml_catalogue() + NEWS, tmp_path)
    own = own_templates(tmp_path, "style.css", "/* The look. */\n\n" + line + "\n" + STYLE)
    renderer = newsletter.Renderer(cat)
    expected = f"{own / 'style.css'}:3: @import of {shown}: {FETCH_FIX}"
    with pytest.raises(RenderError) as info:
        renderer.render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(info.value) == expected
    with pytest.raises(RenderError) as info:
        newsletter.check(cat, NOW)
    assert str(info.value) == expected


def test_linked_stylesheet_refused(tmp_path: Path) -> None:
    """A <link rel=stylesheet> in the template is refused: it would never style the email."""
    cat = load_text(yaml_catalogue() + NEWS, tmp_path)
    link = '<link rel="Stylesheet" href="https://fonts.example.org/css">'
    own = own_templates(tmp_path, "digest.html.j2", PAGE.replace("<style>", link + "\n<style>"))
    with pytest.raises(RenderError) as info:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(info.value) == (
        f"{own / 'digest.html.j2'}:14: "
        '<link rel="stylesheet" href="https://fonts.example.org/css">: '
        "the email styler does not read linked stylesheets, most mail clients do not load them, "
        "and `digest` renders without touching the network. Copy the rules you need into "
        "style.css and remove the <link>"
    )


def test_web_font_declared_in_style_css_still_renders(tmp_path: Path) -> None:
    """A @font-face (fetched by the reader's mail client, not by digest) is no reason to refuse."""
    cat = load_text(yaml_catalogue() + NEWS, tmp_path)
    face = "@font-face { font-family: Campus; src: url(https://fonts.example.org/campus.woff2); }\n"
    own_templates(tmp_path, "style.css", face + STYLE)
    newsletter.check(cat, NOW)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert "Unsubscribe" in rendered.html


FOOTER_FIX = (
    "Every email must carry View in browser, Follow the feeds and Unsubscribe: put them back in "
    "the footer of the newsletter templates (digest.html.j2, digest.txt.j2); if they are there, "
    "an item's text too long to style has cut the page short: shorten it"
)


def test_summary_too_long_to_style_is_refused_not_cut(tmp_path: Path) -> None:
    """A page libxml2 cut short (a 10.5 MB summary) is refused, not sent without Unsubscribe."""
    cat = load_text(yaml_catalogue() + NEWS, tmp_path)
    # Past the catalogue's own limit, as only a caller building items in Python could make it.
    huge = dataclasses.replace(cat.items[0], summary="word " * 2_100_000)
    cat = catalogue.Catalogue(cat.path, cat.publication, cat.newsletter, (huge,))
    with pytest.raises(RenderError) as info:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(info.value) == (
        'The November 2025 digest cannot be sent: its HTML has no "View in browser", "Follow the '
        f'feeds" or "Unsubscribe" link. {FOOTER_FIX}'
    )


def test_template_without_unsubscribe_refused(tmp_path: Path) -> None:
    """An edited template that drops the Unsubscribe link cannot produce an email."""
    cat = load_text(yaml_catalogue() + NEWS, tmp_path)
    without = PAGE.replace(' · <a href="{{ unsubscribe }}">Unsubscribe</a>', "")
    assert without != PAGE
    own_templates(tmp_path, "digest.html.j2", without)
    text = (ROOT / "newsletter_templates" / "digest.txt.j2").read_text(encoding="utf-8")
    own_templates(tmp_path, "digest.txt.j2", text.replace("View in browser: {{ view_url }}\n", ""))
    with pytest.raises(RenderError) as info:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(info.value) == (
        'The November 2025 digest cannot be sent: its HTML has no "Unsubscribe" link; its text '
        f'has no "View in browser" link. {FOOTER_FIX}'
    )


GREETING_REFUSED = (
    "'DIGEST-PERSONAL-GREETING-5f0c2e', which digest reserves to mark where each reader's "
    "greeting goes; reword it"
)
LINK_REFUSED = (
    "'DIGEST-PERSONAL-UNSUBSCRIBE-5f0c2e', which digest reserves to mark where each unsubscribe "
    "link goes; reword it"
)
PREFERENCES_REFUSED = (
    "'DIGEST-PERSONAL-PREFERENCES-5f0c2e', which digest reserves to mark where each reader's "
    "preferences link goes; reword it"
)


@pytest.mark.parametrize(
    ("changed", "error"),
    [
        (
            item(id="second", date="2025-11-20", title="Our DIGEST-PERSONAL-GREETING-5f0c2e"),
            f"items.yaml:20: item 'second' contains {GREETING_REFUSED}",
        ),
        # The HTML part's parser decodes the entity: the summary spells the link's token.
        (
            item(id="second", date="2025-11-20", summary="DIGEST&#45;PERSONAL-UNSUBSCRIBE-5f0c2e"),
            f"items.yaml:20: item 'second' contains {LINK_REFUSED}",
        ),
        # Reserved whether or not this send links to the preferences page: a month frozen
        # without the link may be finished by a send that has it.
        (
            item(id="second", date="2025-11-20", title="See DIGEST-PERSONAL-PREFERENCES-5f0c2e"),
            f"items.yaml:20: item 'second' contains {PREFERENCES_REFUSED}",
        ),
    ],
    ids=["title", "entity-in-summary", "preferences"],
)
def test_catalogue_text_is_never_taken_for_a_personal_part(
    tmp_path: Path, changed: str, error: str
) -> None:
    """A title or summary that spells a placeholder is refused, not replaced by each reader's
    greeting or unsubscribe link."""
    cat = load_text(yaml_catalogue(item(), changed), tmp_path)
    with pytest.raises(RenderError) as raised:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(raised.value) == error


NEWSLETTER = (
    "newsletter:\n"
    '  from: "News <news@example.edu>"\n'
    '  subject: "Campus News — {month:%B %Y}"\n'
    '  schedule: "0 9 1 * *"\n'
    '  unsubscribe: "mailto:news@example.edu"\n'
)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            "  title: Campus News\n",
            "  title: Campus News\n  subtitle: DIGEST-PERSONAL-UNSUBSCRIBE-5f0c2e\n",
            f"items.yaml: the publication block contains {LINK_REFUSED}",
        ),
        (
            "Campus News — {month",
            "DIGEST-PERSONAL-GREETING-5f0c2e {month",
            f"items.yaml: the newsletter block contains {GREETING_REFUSED}",
        ),
    ],
    ids=["subtitle", "subject"],
)
def test_settings_that_spell_a_placeholder_are_refused(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    """A subtitle or subject that spells a placeholder is refused, naming its block."""
    cat = load_text((yaml_catalogue() + NEWSLETTER).replace(old, new), tmp_path)
    with pytest.raises(RenderError) as raised:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(raised.value) == error


def test_a_placeholder_made_by_a_template_filter_is_refused(tmp_path: Path) -> None:
    """A placeholder that only an office template's filter spells out is refused too."""
    cat = load_text(yaml_catalogue(item(title="DIGEST PERSONAL GREETING 5f0c2e")), tmp_path)
    own = tmp_path / "newsletter_templates"
    own.mkdir()
    (own / "digest.txt.j2").write_text(
        "{{ greeting }}\n{% for s in sections %}{% for i in s.entries %}"
        "{{ i.title | replace(' ', '-') }}\n{% endfor %}{% endfor %}{{ unsubscribe }}\n"
    )
    with pytest.raises(RenderError) as raised:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(raised.value) == (
        "the November 2025 digest contains 'DIGEST-PERSONAL-GREETING-5f0c2e', which digest "
        "reserves to mark where each reader's greeting goes; remove it from items.yaml or the "
        "newsletter templates"
    )


def test_item_fields_read_in_a_template_as_a_plain_dict_reads_them() -> None:
    """An office template that reads an item as a dict (keys, get, items) must not change."""
    import jinja2

    source = (
        "{{ item.title }}|{{ item['title'] }}|{{ item.get('link', 'none') }}|"
        "{{ item.items() | list | length }}|{{ 'iso' in item }}|{{ item.missing is defined }}|"
        "{{ item | dictsort | first | first }}"
    )
    template = jinja2.Environment(autoescape=True).from_string(source)
    fields = {"title": "A <b>title</b>", "iso": "2025-10-01", "link": None}
    plain = template.render(item=dict(fields))
    assert template.render(item=newsletter._Fields(fields)) == plain
    assert plain == "A &lt;b&gt;title&lt;/b&gt;|A &lt;b&gt;title&lt;/b&gt;|None|3|True|False|iso"
