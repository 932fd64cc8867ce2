"""`newsletter.issues`: a month's introduction, its items in the editors' order, its subject."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import lxml.html
import pytest
from click.testing import Result

from conftest import SmtpServer
from digest.errors import CatalogueError, RenderError
from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue, site
from digest.send import delivery, subscribers
from digest.send.ledger import Ledger
from digest.send.transport import SmtpTransport, parse_url
from helpers import NOW, item, yaml_catalogue

HERE = Path(__file__).parent
SHAPED = HERE / "data" / "shaped.yaml"
NOVEMBER = Month(2025, 11)
NEWS = (
    "newsletter:\n"
    '  from: "News Office <news@example.edu>"\n'
    '  subject: "News — {month:%B %Y}"\n'
    '  schedule: "0 9 1 * *"\n'
    '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
)
ITEMS = (
    item("lab", "New lab", "2025-11-20"),
    item("dean", "New dean", "2025-11-03", "people"),
    item("grant", "Grant awarded", "2025-10-15"),
    item("secret", "A draft", "2025-11-10", draft="true"),
    item("fair", "Winter fair", "2025-12-05", "people"),
)


def shaped(issues: str, *items: str) -> str:
    """Return a catalogue whose newsletter block ends with `issues` (indented as written)."""
    return yaml_catalogue(*(items or ITEMS)) + NEWS + "  issues:\n" + issues


def parse(text: str) -> catalogue.Catalogue:
    return catalogue.parse(text.encode("utf-8"), Path("items.yaml"), "items.yaml")


def problems(text: str) -> list[str]:
    """Return the lines `digest check` prints for catalogue text that must be invalid."""
    with pytest.raises(CatalogueError) as info:
        parse(text)
    return [str(p) for p in info.value.problems]


def line_of(text: str, fragment: str) -> int:
    """Return the line (from 1) where `fragment` first appears in `text`."""
    return text[: text.index(fragment)].count("\n") + 1


def titles(html: str) -> list[str]:
    """Return the item titles of a rendered digest, top to bottom."""
    return [h.text_content() for h in lxml.html.fromstring(html).find_class("item-title")]


# -- the catalogue -------------------------------------------------------------------------------


def test_issue_is_read_with_its_order_intro_and_subject() -> None:
    """What the editors wrote for November is what the digest gets, in their order."""
    text = shaped(
        '    "2025-11":\n'
        "      intro: A note from the **Provost**.\n"
        "      items: [dean, grant, lab]\n"
        '      subject: "A word — {month:%B}"\n'
        "    2025-12: {intro: Greetings.}\n"
    )
    news = parse(text).newsletter
    assert news is not None
    november = news.plan(NOVEMBER)
    assert november == catalogue.IssuePlan(
        "2025-11",
        "A note from the **Provost**.",
        ("dean", "grant", "lab"),
        "A word — {month:%B}",
        line_of(text, '"2025-11"'),
    )
    december = news.plan(Month(2025, 12))
    assert december is not None
    assert (december.intro, december.items, december.subject) == ("Greetings.", None, None)
    assert news.plan(Month(2025, 10)) is None


P = 'newsletter.issues."2025-11"'


@pytest.mark.parametrize(
    ("issues", "at", "message"),
    [
        (
            '    "2025-13": {intro: Hi}\n',
            '"2025-13"',
            """newsletter.issues."2025-13": '2025-13' is not a month; write the month as """
            '"YYYY-MM" in quotes, like "2025-11"',
        ),
        (
            "    November: {intro: Hi}\n",
            "November",
            """newsletter.issues."November": 'November' is not a month; write the month as """
            '"YYYY-MM" in quotes, like "2025-11"',
        ),
        (
            '    "2025-11":\n',
            '"2025-11"',
            f"{P}: expected a mapping of keys, found nothing",
        ),
        (
            '    "2025-11": {itmes: [lab]}\n',
            '"2025-11"',
            f"{P}.itmes: unknown key 'itmes'; did you mean 'items'?",
        ),
        (
            '    "2025-11": {intro: [a, b]}\n',
            '"2025-11"',
            f"{P}.intro: expected text, found a list",
        ),
        (
            '    "2025-11":\n      intro: Our #1 priority\n',
            "intro",
            f"{P}.intro: ' #' starts a YAML comment, so this value was cut to 'Our'; put the "
            'whole value in quotes: intro: "Our #1 priority"',
        ),
        (
            '    "2025-11":\n      items: lab\n',
            "      items:",
            f"{P}.items: expected a list, found 'lab'",
        ),
        (
            '    "2025-11":\n      items: []\n',
            "      items:",
            f"{P}.items: is an empty list; list the ids of the items to show, or remove `items` "
            "to show the items dated in the month",
        ),
        (
            '    "2025-11":\n      items:\n        - lab\n        - New Lab\n',
            "- New Lab",
            f"{P}.items[1]: 'New Lab' is not a slug (use lowercase letters, digits and single "
            "hyphens, like 'campus-news')",
        ),
        (
            '    "2025-11":\n      items:\n        - lab\n        - deen\n',
            "- deen",
            f"{P}.items[1]: 'deen' is not the id of any item; did you mean 'dean'?",
        ),
        (
            '    "2025-11":\n      items:\n        - lab\n        - zzz\n',
            "- zzz",
            f"{P}.items[1]: 'zzz' is not the id of any item; check the item's `id`",
        ),
        (
            '    "2025-11":\n      items:\n        - lab\n        - secret\n',
            "- secret",
            f"{P}.items[1]: 'secret' is a draft (line @secret@), and drafts are published nowhere; "
            "publish it first (remove `draft: true`), or take it out of the list",
        ),
        (
            '    "2025-11":\n      items:\n        - lab\n        - fair\n',
            "- fair",
            f"{P}.items[1]: 'fair' is dated 2025-12-05 (line @fair@), after November 2025 ends, so "
            "it is still scheduled when the November 2025 digest goes out; list it in the issue "
            "of its own month, or take it out of the list",
        ),
        (
            '    "2025-11":\n      items:\n        - lab\n        - dean\n        - lab\n',
            "        - lab\n        - dean\n        - lab",
            f"{P}.items[2]: 'lab' is listed twice (first as items[0]); list each item once",
        ),
        (
            '    "2025-11":\n      subject: "{month.year} news"\n',
            'subject: "{month.year}',
            f"{P}.subject: {{month.year}} is not allowed: only {{month}} is available, optionally "
            "with a date format after a colon, like {month:%B %Y}; attributes, indexes and "
            "conversions ({month.year}, {month[0]}, {month!r}) are not",
        ),
        (
            '    "2025-11":\n      subject: [a]\n',
            "subject: [a]",
            f"{P}.subject: expected text, found a list",
        ),
        (
            '    "2025-11": {intro: Hi}\n    "2025-11": {intro: Again}\n',
            '"2025-11": {intro: Again}',
            f"{P}: this month is given twice (first at line @first@); YAML would keep only the "
            "last one, so merge them into one",
        ),
    ],
    ids=[
        "not-a-month",
        "a-name-for-a-month",
        "nothing",
        "unknown-key",
        "intro-not-text",
        "intro-cut-by-comment",
        "items-not-a-list",
        "items-empty",
        "id-not-a-slug",
        "unknown-id-close",
        "unknown-id",
        "draft",
        "scheduled-after-the-month",
        "listed-twice",
        "subject-placeholder",
        "subject-not-text",
        "month-twice",
    ],
)
def test_issue_mistakes_are_located(issues: str, at: str, message: str) -> None:
    """Each slip in a month's issue is named with its line and its place, and the fix."""
    text = shaped(issues)
    line = line_of(text, at) + at.count("\n")
    lines = {
        "@secret@": "id: secret",
        "@fair@": "id: fair",
        "@first@": '"2025-11"',
    }
    for token, found in lines.items():
        if token in message:
            message = message.replace(token, str(line_of(text, found)))
    assert problems(text) == [f"items.yaml:{line}: {message}"]


def test_issues_must_be_a_mapping_of_months() -> None:
    """A list where months belong is refused, not silently ignored."""
    text = yaml_catalogue(*ITEMS) + NEWS + "  issues: [2025-11]\n"
    assert problems(text) == [
        f"items.yaml:{line_of(text, 'issues:')}: newsletter.issues: expected a mapping of months "
        'like "2025-11", found a list'
    ]


def test_every_mistake_is_reported_at_once() -> None:
    """An editor fixes all of a month's slips in one go, not one per run."""
    text = shaped('    "2025-11":\n      items: [zzz, secret, zzz]\n      subject: "{x}"\n')
    found = problems(text)
    assert [p.split(": ", 2)[1] for p in found] == [
        f"{P}.items[2]",
        f"{P}.items[0]",
        f"{P}.items[1]",
        f"{P}.subject",
    ]


def test_an_item_with_a_mistake_is_not_also_called_unknown() -> None:
    """A listed item that has its own mistake gets one complaint, about that mistake."""
    broken = item("lab", "New lab", "2025-13-01")
    text = shaped('    "2025-11": {items: [lab]}\n', broken, item("dean", "New dean"))
    assert problems(text) == [
        f"items.yaml:{line_of(text, 'date: 2025-13-01')}: items[0].date: '2025-13-01' is not a "
        "real date (month must be in 1..12)"
    ]


# -- what the digest shows ----------------------------------------------------------------------


def november(text: str, tmp_path: Path) -> newsletter.Issue:
    path = tmp_path / "items.yaml"
    path.write_text(text, encoding="utf-8")
    return newsletter.issue(catalogue.load(path), NOVEMBER, NOW)


def test_explicit_list_is_shown_in_its_order_with_items_from_another_month() -> None:
    """The Provost's order is the reader's order; an October reminder can join November."""
    cat = catalogue.load(SHAPED)
    chosen = newsletter.issue(cat, NOVEMBER, NOW)
    order = ["dean-appointed", "robot-lab", "library-hours", "grant-awarded"]
    assert [i.id for i in chosen.items] == order
    # Runs of one category share a heading; the list decides, so `not-listed` is left out.
    assert [(s.category.slug, len(s.items)) for s in chosen.sections] == [
        ("people", 1),
        ("research", 3),
    ]
    page = newsletter.Renderer(cat).render(chosen).personalise("Ann", "mailto:x@example.edu")[0]
    assert titles(page) == [
        "New Dean appointed",
        "Robots & <Humans>: the new lab",
        "Library opens late",
        "Research grant awarded",
    ]
    assert "Dated November, left out of its issue" not in page


def test_a_category_named_again_later_gets_its_heading_again(tmp_path: Path) -> None:
    """Items in an order that leaves a category and comes back show it where they stand."""
    chosen = november(shaped('    "2025-11": {items: [lab, dean, grant]}\n'), tmp_path)
    assert [(s.category.slug, [i.id for i in s.items]) for s in chosen.sections] == [
        ("research", ["lab"]),
        ("people", ["dean"]),
        ("research", ["grant"]),
    ]
    assert chosen.categories == ("research", "people")
    # A reader of Research only gets one Research heading over both items.
    only = chosen.only(frozenset({"research"}))
    assert [(s.category.slug, [i.id for i in s.items]) for s in only.sections] == [
        ("research", ["lab", "grant"])
    ]
    assert only.intro == chosen.intro


def test_intro_comes_first_under_the_greeting_sanitized() -> None:
    """The Provost's note opens the digest, and no script in it reaches a reader."""
    cat = catalogue.load(SHAPED)
    rendered = newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    page, text = rendered.personalise("Ann", "mailto:x@example.edu")
    root = lxml.html.fromstring(page)
    order = [
        e.get("class")
        for e in root.iter("td")
        if e.get("class") in ("greeting", "intro", "section")
    ]
    assert order[:3] == ["greeting", "intro", "section"]
    (intro,) = root.find_class("intro")
    assert intro.text_content().startswith("A note from the Provost: this month")
    assert [a.get("href") for a in intro.iter("a")] == ["https://news.example.edu/plans/2026.html"]
    assert "<script" not in page
    assert 'alert("x")' not in page
    # The text part: greeting, then the note, then the first category.
    greeting, note, people = (text.index(s) for s in ("Dear Ann,", "A note from the", "PEOPLE"))
    assert greeting < note < people
    assert "Read the plan (https://news.example.edu/plans/2026.html)" in text
    assert "alert" not in text


def test_month_subject_overrides_the_default() -> None:
    """November goes out under the Provost's subject; other months keep the usual one."""
    cat = catalogue.load(SHAPED)
    renderer = newsletter.Renderer(cat)
    assert renderer.render(newsletter.issue(cat, NOVEMBER, NOW)).subject == (
        "A word from the Provost — November 2025"
    )
    december = renderer.render(newsletter.issue(cat, Month(2025, 12), NOW))
    assert december.subject == "Campus News — December 2025"
    assert "Season's greetings from the News Office." in december.text


def test_a_list_alone_makes_a_month_with_no_dated_items() -> None:
    """A month whose issue lists items renders and is archived even if none is dated in it."""
    cat = catalogue.load(SHAPED)
    august = Month(2025, 8)
    assert [i.id for i in newsletter.issue(cat, august, NOW).items] == ["summer-school"]
    assert august in [i.month for i in newsletter.issues(cat, NOW)]
    files = site.render(cat, NOW)
    assert "Summer school wraps up" in files["archive/2025-08.html"].decode()
    assert b'href="archive/2025-08.html"' in files["index.html"]


def test_every_month_the_build_archives_is_the_issue_a_send_gets() -> None:
    """The web version of each month shows what that month's email shows."""
    cat = catalogue.load(SHAPED)
    for found in newsletter.issues(cat, NOW):
        assert found == newsletter.issue(cat, found.month, NOW)


def test_listed_item_not_public_yet_is_left_out_until_its_date(tmp_path: Path) -> None:
    """A preview in mid-month never shows a listed item before its date, as the date rule."""
    text = shaped('    "2025-11": {items: [lab, dean]}\n')
    path = tmp_path / "items.yaml"
    path.write_text(text, encoding="utf-8")
    cat = catalogue.load(path)
    mid = NOW.replace(year=2025, month=11, day=10)
    assert [i.id for i in newsletter.issue(cat, NOVEMBER, mid).items] == ["dean"]
    early = NOW.replace(year=2025, month=11, day=1)
    assert newsletter.issue(cat, NOVEMBER, early).items == ()
    assert NOVEMBER not in [i.month for i in newsletter.issues(cat, early)]


def test_archive_page_shows_intro_and_order() -> None:
    """The "view in browser" page shows the same note and order as the email."""
    page = site.render(catalogue.load(SHAPED), NOW)["archive/2025-11.html"].decode()
    root = lxml.html.fromstring(page)
    assert root.find_class("intro")[0].text_content().startswith("A note from the Provost")
    assert titles(page)[0] == "New Dean appointed"
    assert not root.find_class("greeting")


# -- the commands --------------------------------------------------------------------------------

Run = Callable[..., Result]


def test_check_reports_a_bad_issue_with_its_line(run: Run, tmp_path: Path) -> None:
    """`digest check` names the month's mistake and its line, and exits 1."""
    text = shaped('    "2025-11": {items: [lab, deen]}\n')
    (tmp_path / "items.yaml").write_text(text, encoding="utf-8")
    result = run("check")
    assert result.exit_code == 1
    line = line_of(text, '"2025-11"')
    assert result.stderr == (
        f"items.yaml:{line}: {P}.items[1]: 'deen' is not the id of any item; did you mean 'dean'?\n"
    )


def test_render_shows_the_shaped_month(run: Run, tmp_path: Path) -> None:
    """`digest render --month` writes the Provost's note, the order and the subject."""
    shutil.copy(SHAPED, tmp_path / "items.yaml")
    (tmp_path / "subscribers.csv").write_text("email,name\na@example.org,A\n", encoding="utf-8")
    result = run("render", "--month", "2025-11")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Rendered November 2025: 4 items in 2 categories:")
    page = (tmp_path / "out" / "digest-2025-11.html").read_text(encoding="utf-8")
    assert titles(page)[0] == "New Dean appointed"
    text = (tmp_path / "out" / "digest-2025-11.txt").read_text(encoding="utf-8")
    assert "A note from the Provost" in text
    eml = (tmp_path / "out" / "digest-2025-11.eml").read_bytes()
    assert b"Subject: A word from the Provost =?utf-8?b?4oCU?= November 2025" in eml


# -- the ledger: a send that began keeps its issue -----------------------------------------------


def body_html(email: EmailMessage) -> str:
    part = email.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_intro_changed_mid_send_is_a_change_of_the_month(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Rewriting the Provost's note after a send began never gives readers two versions."""
    path = tmp_path / "items.yaml"
    shutil.copy(SHAPED, path)
    (tmp_path / "subscribers.csv").write_text(
        "email,name\n" + "".join(f"r{n}@example.org,R{n}\n" for n in range(5)), encoding="utf-8"
    )
    listed = subscribers.load(tmp_path / "subscribers.csv", ["research", "people"])
    ledger = Ledger(tmp_path / "state.sqlite3")
    try:
        first = delivery.prepare(catalogue.load(path), listed, NOVEMBER, ledger, NOW)
        assert first is not None
        stop = threading.Event()
        seen: list[delivery.Outcome] = []

        def progress(outcome: delivery.Outcome) -> None:
            seen.append(outcome)
            if len(seen) == 2:
                stop.set()

        transport = SmtpTransport(parse_url(smtp_server.url))
        partial = first.execute(transport, clock=lambda: NOW, stop=stop, progress=progress)
        assert partial.sent == 2

        edited = path.read_text(encoding="utf-8").replace(
            "A note from the **Provost**", "A revised note from the **Provost**"
        )
        assert "revised" in edited
        path.write_text(edited, encoding="utf-8")
        plan = delivery.prepare(catalogue.load(path), listed, NOVEMBER, ledger, NOW)
        assert plan is not None
        assert (plan.changed, len(plan.todo), plan.already) == (True, 3, 2)
        summary = plan.execute(transport, clock=lambda: NOW)
        assert (summary.sent, summary.already) == (3, 2)
    finally:
        ledger.close()
    received = smtp_server.recorder.messages
    assert len(received) == 5
    for got in received:
        assert got.message["Subject"] == "A word from the Provost — November 2025"
        page = body_html(got.message)
        assert "A note from the <strong>Provost</strong>" in page
        assert "revised" not in page


def test_a_changed_intro_rebuilds_that_month_page(tmp_path: Path) -> None:
    """After the Provost's note is rewritten, `digest build` writes the month's page anew."""
    path = tmp_path / "items.yaml"
    shutil.copy(SHAPED, path)
    before = site.build(catalogue.load(path), NOW, "env", {})
    path.write_text(
        path.read_text(encoding="utf-8").replace("A note from the", "A revised note from the"),
        encoding="utf-8",
    )
    after = site.build(catalogue.load(path), NOW, "env", before.keys)
    assert "archive/2025-11.html" in after.files
    assert "A revised note" in after.files["archive/2025-11.html"].decode()


def test_an_intro_spelling_a_personal_placeholder_is_refused(tmp_path: Path) -> None:
    """A note that happens to hold digest's greeting marker never greets readers by accident."""
    text = shaped(f'    "2025-11": {{intro: "Hello {newsletter.GREETING_TOKEN}"}}\n')
    path = tmp_path / "items.yaml"
    path.write_text(text, encoding="utf-8")
    cat = catalogue.load(path)
    with pytest.raises(RenderError) as info:
        newsletter.Renderer(cat).render(newsletter.issue(cat, NOVEMBER, NOW))
    assert str(info.value) == (
        f"items.yaml: the newsletter block contains '{newsletter.GREETING_TOKEN}', which digest "
        "reserves to mark where each reader's greeting goes; reword it"
    )


def test_provost_note_and_new_order_for_the_bundled_november(run: Run, tmp_path: Path) -> None:
    """The issue's acceptance: a note and another order for November, and the feeds stay current."""
    text = (HERE.parent / "items.yaml").read_text(encoding="utf-8")
    order = [
        "gptx-collaboration",
        "talk-william-mobley-empathy-and-compassion",
        "medical-school-preparations",
    ]
    shaped_text = text.replace(
        "  subscribers: subscribers.csv\n",
        "  subscribers: subscribers.csv\n"
        "  issues:\n"
        '    "2025-11":\n'
        "      intro: A short note from the **Provost** before this month's news.\n"
        f"      items: [{', '.join(order)}]\n",
        1,
    )
    assert shaped_text != text
    (tmp_path / "items.yaml").write_text(shaped_text, encoding="utf-8")
    shutil.copy(HERE.parent / "subscribers.csv", tmp_path / "subscribers.csv")
    assert run("check").exit_code == 0
    result = run("render", "--month", "2025-11")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "digest-2025-11.html").read_text(encoding="utf-8")
    cat = catalogue.load(tmp_path / "items.yaml")
    by_id = {i.id: i.title for i in cat.items}
    assert titles(page) == [by_id[i] for i in order]
    intro = lxml.html.fromstring(page).find_class("intro")[0].text_content()
    assert intro == "A short note from the Provost before this month's news."
    assert run("build").exit_code == 0
    checked = run("build", "--check")
    assert checked.exit_code == 0, checked.output
    archive = (tmp_path / "feeds" / "archive" / "2025-11.html").read_text(encoding="utf-8")
    assert titles(archive) == [by_id[i] for i in order]
