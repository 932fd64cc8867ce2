"""Writing an item back into items.yaml: only its lines change, and it reads back as saved."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import CatalogueError
from digest.publish import catalogue, editing

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "items.yaml"
RICH = ROOT / "tests" / "data" / "rich.yaml"

TRICKY = [
    'Seminar #3: "AI & Society"',
    "NO",
    "yes",
    "null",
    "~",
    "2025-11-19",
    "12:30",
    "1e3",
    "0x1F",
    "- not a list",
    "* star",
    "& anchor",
    "! tag",
    "% directive",
    "@handle",
    "`tick`",
    "'single' quotes",
    'He said "hi"',
    'It\'s "both"',
    "key: value",
    "ends with colon:",
    "a #hash",
    "#first",
    "[bracket]",
    "{brace}",
    "🎉 emoji first",
    "中文標題",
    "tab\there",
    "back\\slash",
    "x" * 300,
]


def replace_in(
    raw: bytes, path: Path, index: int, changes: dict[str, editing.Value]
) -> editing.Edited:
    """Edit item `index` of the catalogue `raw`, checked first as the service does."""
    return editing.replace(raw, catalogue.parse(raw, path, path.name), index, changes)


def append_to(raw: bytes, path: Path, values: dict[str, editing.Value]) -> editing.Edited:
    """Append an item to the catalogue `raw`, checked first as the service does."""
    return editing.append(raw, catalogue.parse(raw, path, path.name), values)


def changed_lines(before: bytes, after: bytes) -> list[tuple[str, list[str], list[str]]]:
    """Return each differing run of lines: (kind, old lines, new lines)."""
    old = before.decode("utf-8").splitlines(keepends=True)
    new = after.decode("utf-8").splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    return [
        (tag, old[a1:a2], new[b1:b2])
        for tag, a1, a2, b1, b2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def item_of(edited: editing.Edited) -> catalogue.Item:
    """Return the item an edit concerned, as the catalogue loads it."""
    return edited.catalogue.items[edited.index]


@pytest.mark.parametrize("source", [BUNDLED, RICH], ids=["bundled", "rich"])
def test_editing_one_title_changes_only_its_line(source: Path) -> None:
    """Saving one item's title must leave every other line of the file byte-identical."""
    raw = source.read_bytes()
    count = len(catalogue.parse(raw, source, source.name).items)
    for index in range(count):
        edited = replace_in(raw, source, index, {"title": "A new title"})
        runs = changed_lines(raw, edited.raw)
        assert len(runs) == 1, runs
        kind, old, new = runs[0]
        assert kind == "replace"
        assert len(old) == 1
        assert old[0].lstrip(" -").startswith("title:")
        # Written the way the file wrote the old title: quoted stays quoted, plain stays plain.
        quote = old[0][old[0].index("title:") + 7]
        written = f"{quote}A new title{quote}" if quote in "\"'" else "A new title"
        assert new == [old[0][: old[0].index("title:")] + f"title: {written}\n"]
        assert item_of(edited).title == "A new title"


@pytest.mark.parametrize("source", [BUNDLED, RICH], ids=["bundled", "rich"])
def test_editing_a_block_summary_replaces_only_that_block(source: Path) -> None:
    """Saving a new summary must rewrite the summary's lines and nothing around them."""
    raw = source.read_bytes()
    edited = replace_in(raw, source, 1, {"summary": "Two\n\nparagraphs."})
    assert item_of(edited).summary == "Two\n\nparagraphs."
    old = raw.decode().splitlines(keepends=True)
    new = edited.raw.decode().splitlines(keepends=True)
    start = next(n for n, (a, b) in enumerate(zip(old, new, strict=False)) if a != b)
    assert new[start - 1 : start + 3] == [
        "    summary: |\n",
        "      Two\n",
        "\n",
        "      paragraphs.\n",
    ]
    after = new[start + 3 :]
    assert old[len(old) - len(after) :] == after  # the rest, from the line after the block
    assert after[0].strip() == "" or after[0].startswith("  - id:")  # where the old block ended
    before = catalogue.parse(raw, source, source.name)
    assert [i for n, i in enumerate(edited.catalogue.items) if n != 1] == [
        i for n, i in enumerate(before.items) if n != 1
    ]


def test_a_comment_after_a_changed_value_stays() -> None:
    """Changing a date must keep the editor's comment written after it on the same line."""
    raw = BUNDLED.read_bytes()
    index = next(
        n
        for n, i in enumerate(catalogue.parse(raw, BUNDLED, "items.yaml").items)
        if i.id == "provost-leader-of-the-year-2024"
    )
    edited = replace_in(raw, BUNDLED, index, {"date": "2025-06-21"})
    [(_, old, new)] = changed_lines(raw, edited.raw)
    assert old == ["    date: 2025-06-20  # date of the award ceremony stated in the text\n"]
    assert new == ["    date: 2025-06-21  # date of the award ceremony stated in the text\n"]


@pytest.mark.parametrize("source", [BUNDLED, RICH], ids=["bundled", "rich"])
def test_a_new_item_is_only_appended(source: Path) -> None:
    """Adding an announcement must add its lines after the last item and touch nothing else."""
    raw = source.read_bytes()
    before = catalogue.parse(raw, source, source.name)
    values = {
        "id": "seminar-3",
        "title": 'Seminar #3: "AI & Society"',
        "date": "2025-11-25",
        "category": before.publication.categories[0].slug,
        "summary": "A talk.",
    }
    edited = append_to(raw, source, values)
    [(kind, old, new)] = changed_lines(raw, edited.raw)
    assert kind == "insert"
    assert old == []
    assert "    title: 'Seminar #3: \"AI & Society\"'\n" in new
    assert edited.index == len(before.items)
    assert item_of(edited).title == 'Seminar #3: "AI & Society"'
    assert edited.catalogue.items[:-1] == before.items


def test_adding_and_removing_keys_keeps_the_others(tmp_path: Path) -> None:
    """Adding a link and tags and removing a section must change only those keys' lines."""
    raw = RICH.read_bytes()
    edited = replace_in(
        raw,
        RICH,
        1,
        {"link": "https://news.example.edu/x", "tags": ("a", "NO"), "section": None},
    )
    got = item_of(edited)
    assert (got.link, got.tags, got.section) == ("https://news.example.edu/x", ("a", "NO"), None)
    text = edited.raw.decode()
    assert '    tags: [a, "NO"]\n' in text
    runs = changed_lines(raw, edited.raw)
    assert sum(len(old) for _, old, _ in runs) == 1  # the section line, and only it, went


def test_an_invalid_value_is_reported_at_its_field() -> None:
    """A date that is not a date must come back as that field's message, the file unchanged."""
    raw = BUNDLED.read_bytes()
    with pytest.raises(CatalogueError) as caught:
        replace_in(raw, BUNDLED, 2, {"date": "2025-13-01", "title": None})
    fields, other = editing.problems_by_field(caught.value, 2)
    assert fields["date"] == ["'2025-13-01' is not a real date (month must be in 1..12)"]
    assert fields["title"] == ["is required"]
    assert other == []


def test_an_image_without_alt_text_is_refused_at_the_alt_field() -> None:
    """An image with no alt text must be refused with the catalogue's own message."""
    raw = BUNDLED.read_bytes()
    with pytest.raises(CatalogueError) as caught:
        replace_in(raw, BUNDLED, 0, {"image": {"url": "https://x.edu/a.png"}})
    fields, _ = editing.problems_by_field(caught.value, 0)
    assert fields == {"image.alt": ["is required"]}


def test_an_item_written_on_one_line_is_refused_with_its_line(tmp_path: Path) -> None:
    """An item in {braces} cannot be edited in place; the refusal names its line."""
    text = BUNDLED.read_text().replace(
        "items:\n",
        "items:\n  - {id: flat, title: Flat, date: 2025-01-01, category: visit, summary: S}\n",
    )
    path = tmp_path / "items.yaml"
    with pytest.raises(editing.EditError, match=r"items.yaml:\d+: this item is written on one"):
        replace_in(text.encode(), path, 0, {"title": "Round"})


def test_first_item_goes_under_an_empty_items_key(tmp_path: Path) -> None:
    """A catalogue with `items: []` gets its first item written as a block under the key."""
    text = BUNDLED.read_text()
    head = text[: text.index("items:")] + "items: []\n"
    path = tmp_path / "items.yaml"
    edited = append_to(
        head.encode(),
        path,
        {"id": "one", "title": "One", "date": "2025-01-01", "category": "visit", "summary": "S"},
    )
    assert edited.raw.decode().endswith(
        "items:\n  - id: one\n    title: One\n    date: 2025-01-01\n"
        "    category: visit\n    summary: S\n"
    )
    assert [i.id for i in edited.catalogue.items] == ["one"]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_text_reads_back_exactly_in_any_yaml_reader(text: str) -> None:
    """Titles YAML would misread (NO, #, ': ', quotes, numbers) must be quoted as needed."""
    raw = BUNDLED.read_bytes()
    edited = replace_in(raw, BUNDLED, 0, {"title": text, "tags": (text,)})
    assert item_of(edited).title == text
    assert item_of(edited).tags == (text,)
    plain = yaml.safe_load(edited.raw)  # PyYAML's own YAML 1.1 reading, types and all
    assert plain["items"][0]["title"] == text


def catalogue_text() -> st.SearchStrategy[str]:
    """Text a catalogue accepts: no controls, surrogates, non-characters or odd line breaks."""
    letters = st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Zl", "Zp", "Co"))
    spaced = ["  leading spaces", "trailing spaces  ", " NO ", "\u3000全角 spaces\u3000"]
    return st.one_of(
        st.sampled_from(TRICKY[:-1] + spaced),
        st.text(letters, min_size=1, max_size=40),
        st.builds(lambda a, b: f"{a} {b}", st.sampled_from(TRICKY[:-1]), st.text(letters)),
    ).filter(lambda t: t.strip() != "")


def paragraphs() -> st.SearchStrategy[str]:
    """A multi-line Markdown text with blank lines, indented lines and headings."""
    line = st.one_of(catalogue_text(), st.just(""), st.just("    code"), st.just("# Heading"))
    return st.lists(line, min_size=2, max_size=6).map("\n".join).filter(lambda t: t.strip())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=catalogue_text(),
    summary=st.one_of(catalogue_text(), paragraphs()),
    body=st.one_of(st.none(), paragraphs()),
    tags=st.lists(catalogue_text(), max_size=3),
    alt=catalogue_text(),
    append=st.booleans(),
    quoted_file=st.booleans(),
)
def test_random_edits_always_load_back_as_saved(
    title: str,
    summary: str,
    body: str | None,
    tags: list[str],
    alt: str,
    append: bool,
    quoted_file: bool,
) -> None:
    """Whatever staff type, the file written must load back to exactly the values saved."""
    source, index = (BUNDLED, 0) if quoted_file else (RICH, 2)  # titles in quotes, or plain
    raw = source.read_bytes()
    values: dict[str, editing.Value] = {
        "title": title,
        "summary": summary,
        "body": body,
        "tags": tuple(tags),
        "image": {"url": "https://news.example.edu/a.png", "alt": alt},
    }
    if append:
        values.update(id="new-item", date="2025-11-30", category="people")
        edited = append_to(RICH.read_bytes(), RICH, values)
    else:
        edited = replace_in(raw, source, index, values)
    got = item_of(edited)
    wanted = {k: editing.normal(k, v) for k, v in values.items()}
    assert got.title == wanted["title"]
    assert got.summary == wanted["summary"]
    assert got.body == wanted["body"]
    assert got.tags == (wanted["tags"] or ())
    assert got.image == catalogue.Image(
        "https://news.example.edu/a.png", editing.normal("alt", alt)
    )  # type: ignore[arg-type]
    assert editing.values_at(edited.raw, edited.catalogue, edited.index)["title"] == wanted["title"]


def test_plain_is_used_only_where_every_reader_agrees() -> None:
    """Ordinary words stay unquoted (a readable diff); anything YAML could misread is quoted."""
    assert editing.plain_is_safe("Opening of HKUST Shanghai Center")
    assert editing.plain_is_safe("中文 title 🎉")
    for text in TRICKY[:-1]:
        if text not in (
            "中文標題",
            "🎉 emoji first",
            "back\\slash",
            'He said "hi"',
            'It\'s "both"',
        ):
            assert not editing.plain_is_safe(text), text


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=8))
def test_a_value_written_plain_in_braces_reads_back_as_itself(text: str) -> None:
    """An event's `location: {name: ...}` is a flow mapping: a value the editor writes there
    plain must read back as exactly that value (`0?` once broke the whole file)."""
    if editing.plain_is_safe(text, flow=True):
        assert yaml.safe_load(f"location: {{name: {text}}}\n") == {"location": {"name": text}}
    if editing.plain_is_safe(text):
        assert yaml.safe_load(f"title: {text}\n") == {"title": text}


def test_a_question_mark_or_colon_in_braces_is_quoted() -> None:
    """The shapes PyYAML misreads inside braces, whatever follows them."""
    for text in ("0?", "a?b", "Room 1:2", "what?"):
        assert not editing.plain_is_safe(text, flow=True), text
        assert yaml.safe_load(f"x: {{name: {editing.quoted(text)}}}") == {"x": {"name": text}}


def test_a_comment_after_a_value_in_chinese_stays_in_place() -> None:
    """Columns count characters: a comment after a CJK and emoji title survives a new title."""
    text = RICH.read_text().replace(
        'title: "Robots & <Humans>: a 中文 title 🎉"', 'title: "Robots 中文 🎉"  # 中文 comment'
    )
    edited = replace_in(text.encode(), RICH, 0, {"title": "新 🎉 title"})
    [(_, _, new)] = changed_lines(text.encode(), edited.raw)
    assert new == ['    title: "新 🎉 title"  # 中文 comment\n']


def test_a_file_with_windows_line_ends_keeps_them() -> None:
    """A catalogue saved with CRLF keeps CRLF on every line, old and new."""
    raw = BUNDLED.read_bytes().replace(b"\n", b"\r\n")
    edited = replace_in(raw, BUNDLED, 0, {"body": "One\n\nTwo"})
    edited = append_to(
        edited.raw,
        BUNDLED,
        {"id": "n", "title": "N", "date": "2025-01-01", "category": "visit", "summary": "S"},
    )
    assert edited.raw.count(b"\n") == edited.raw.count(b"\r\n")
    assert edited.catalogue.items[0].body == "One\n\nTwo"
    assert edited.catalogue.items[-1].id == "n"


def test_a_new_item_goes_before_a_key_that_follows_the_items(tmp_path: Path) -> None:
    """With `newsletter:` written after `items:`, a new item still ends the list of items."""
    text = BUNDLED.read_text()
    start, end = text.index("newsletter:\n"), text.index("items:\n")
    moved = text[:start] + text[end:] + "\n" + text[start:end]
    raw = moved.encode()
    values = {"id": "n", "title": "N", "date": "2025-01-01", "category": "visit", "summary": "S"}
    edited = append_to(raw, BUNDLED, values)
    assert edited.catalogue.items[-1].id == "n"
    [(kind, _, new)] = changed_lines(raw, edited.raw)
    assert kind == "insert"
    assert "  - id: n\n" in new
    assert edited.catalogue.newsletter == catalogue.parse(raw, BUNDLED, "items.yaml").newsletter


def test_an_item_that_uses_an_alias_is_refused_with_its_line() -> None:
    """An item reusing a value from elsewhere (&anchor, *alias) is left for the file itself."""
    text = RICH.read_text()
    text = text.replace("summary: A grant of HK$1.2M.", "summary: &grant A grant of HK$1.2M.")
    text = text.replace("summary: Only on the web archive.", "summary: *grant")
    raw = text.encode()
    ids = [i.id for i in catalogue.parse(raw, RICH, "rich.yaml").items]
    index = ids.index("older-news")
    with pytest.raises(editing.EditError, match=r"rich.yaml:\d+: this item cannot be read on its"):
        replace_in(raw, RICH, index, {"title": "Older"})
