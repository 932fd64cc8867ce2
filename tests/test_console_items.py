"""The console's announcements: the list, the form, check messages at the field, saves and
their refusals, the live preview, history and revert (Flask's test client, the bundled items)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import lxml.html
import pytest
from flask import Flask
from flask.testing import FlaskClient

from digest import console
from digest.publish import catalogue

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"  # noqa: S105 -- the tests' own
NOW = datetime(2025, 12, 1, 4, tzinfo=UTC)
TITLE = 'Seminar #3: "AI & Society"'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The bundled catalogue, subscribers and feeds in a folder of their own."""
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    shutil.copytree(ROOT / "feeds", tmp_path / "feeds")
    return tmp_path


@pytest.fixture
def app(project: Path) -> Iterator[Flask]:
    """The console over the project."""
    config = console.Config(
        catalogue_path=project / "items.yaml",
        state_path=project / ".digest" / "state.sqlite3",
        feeds_dir=project / "feeds",
        password=PASSWORD,
        secret_key="s" * 40,
        clock=lambda: NOW,
        outbox=project / "outbox",
    )
    made = console.create_app(config)
    yield made
    console.wait_for_jobs(made)


def csrf_of(html: str) -> str:
    """Return the CSRF token of a page's first form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@pytest.fixture
def staff(app: Flask) -> FlaskClient:
    """A client logged in as Ada."""
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"csrf_token": token, "name": "Ada", "password": PASSWORD, "next": ""}
    )
    assert response.status_code == 303
    return client


def form_of(page: str) -> dict[str, str]:
    """Return the values of the item form's fields as the browser would post them."""
    tree = lxml.html.fromstring(page)
    [form] = tree.xpath("//form[contains(@class, 'item-form')]")
    fields = {}
    for element in form.xpath(".//input[@name] | .//textarea[@name] | .//select[@name]"):
        name = element.get("name")
        if element.tag == "select":
            chosen = element.xpath("./option[@selected]")
            fields[name] = chosen[0].get("value") if chosen else ""
        elif element.tag == "textarea":
            fields[name] = element.text or ""
        else:
            fields[name] = element.get("value") or ""
    return fields


def field_error(page: str, name: str) -> list[str]:
    """Return the messages shown at one field."""
    tree = lxml.html.fromstring(page)
    return [e.text_content() for e in tree.xpath(f"//*[@id='{name}-error']")]


def new_form(staff: FlaskClient, **values: str) -> dict[str, str]:
    """Return the new-item form filled in with `values`."""
    fields = form_of(staff.get("/items/new").get_data(as_text=True))
    fields.update(values)
    return fields


def test_publishing_a_new_item_from_the_form(staff: FlaskClient, project: Path) -> None:
    """Staff add an announcement; items.yaml gains only it, and every feed shows its title."""
    before = (project / "items.yaml").read_bytes()
    fields = new_form(
        staff, title=TITLE, category="engagement", summary="A *talk*.", action="publish"
    )
    assert fields["date"] == "2025-12-01"  # today, in the publication's zone
    response = staff.post("/items/new", data=fields)
    assert response.status_code == 303
    assert response.headers["Location"] == "/items/seminar-3-ai-society"
    after = (project / "items.yaml").read_bytes()
    assert after.startswith(before)
    assert after[len(before) :].decode() == (
        "\n  - id: seminar-3-ai-society\n"
        "    title: 'Seminar #3: \"AI & Society\"'\n"
        "    date: 2025-12-01\n"
        "    category: engagement\n"
        "    summary: A *talk*.\n"
    )
    page = staff.get(response.headers["Location"]).get_data(as_text=True)
    assert "Saved seminar-3-ai-society: it is now published (save 1)." in page
    assert "Feeds rebuilt:" in page
    assert 'id="status">published<' in page
    assert form_of(page)["id"] == "seminar-3-ai-society"
    assert "by Ada" in page  # the history
    feed = feedparser.parse((project / "feeds" / "all.atom.xml").read_bytes())
    assert feed.entries[0].title == TITLE


def test_a_check_error_is_shown_at_its_field_with_what_was_typed(staff: FlaskClient) -> None:
    """A bad date comes back at the date field in `digest check`'s words; nothing is lost."""
    fields = new_form(staff, title=TITLE, date="2025-11-31", category="engagement", summary="")
    fields["action"] = "draft"
    response = staff.post("/items/new", data=fields)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_error(page, "date") == [
        "'2025-11-31' is not a real date (day is out of range for month)"
    ]
    assert field_error(page, "summary") == ["is required"]
    assert form_of(page)["title"] == TITLE  # what was typed is still there
    assert lxml.html.fromstring(page).xpath("//input[@name='date']/@aria-invalid") == ["true"]


def test_an_image_needs_its_alt_text(staff: FlaskClient) -> None:
    """An image URL without alt text is refused at the alt field."""
    fields = new_form(
        staff,
        title="Pictured",
        category="visit",
        summary="S",
        image_url="https://provost.example.edu/a.jpg",
        action="publish",
    )
    page = staff.post("/items/new", data=fields).get_data(as_text=True)
    assert field_error(page, "image_alt") == ["is required"]


def test_a_save_racing_a_hand_edit_shows_the_diff_and_keeps_both(
    staff: FlaskClient, project: Path
) -> None:
    """Someone edits items.yaml while the form is open: the save is refused with what changed."""
    path = project / "items.yaml"
    fields = form_of(staff.get("/items/medical-school-preparations").get_data(as_text=True))
    hand = path.read_text().replace("feed_limit: 50", "feed_limit: 40")
    path.write_text(hand)
    fields.update(title="Preparations for the Medical School", action="save")
    response = staff.post("/items/medical-school-preparations", data=fields)
    page = response.get_data(as_text=True)
    assert response.status_code == 409
    assert path.read_text() == hand
    assert "-  feed_limit: 50\n+  feed_limit: 40" in lxml.html.fromstring(page).xpath(
        "string(//pre[@class='diff'])"
    )
    again = form_of(page)
    assert again["title"] == "Preparations for the Medical School"
    again["action"] = "save"
    assert staff.post("/items/medical-school-preparations", data=again).status_code == 303
    loaded = catalogue.load(path)
    assert loaded.publication.feed_limit == 40
    assert loaded.items[0].title == "Preparations for the Medical School"


def test_retire_and_revert_from_the_history(staff: FlaskClient, project: Path) -> None:
    """Retiring makes a draft; the history's revert publishes it again, as a new save."""
    fields = form_of(staff.get("/items/medical-school-preparations").get_data(as_text=True))
    fields["action"] = "retire"
    staff.post("/items/medical-school-preparations", data=fields)
    assert catalogue.load(project / "items.yaml").items[0].draft
    page = staff.get("/items/medical-school-preparations").get_data(as_text=True)
    assert "+    draft: true" in page
    token = csrf_of(page)
    response = staff.post("/edits/1/revert", data={"csrf_token": token})
    assert response.status_code == 303
    assert not catalogue.load(project / "items.yaml").items[0].draft
    page = staff.get("/items/medical-school-preparations").get_data(as_text=True)
    assert "<strong>revert 1</strong> by Ada" in page
    assert (project / "items.yaml").read_bytes() == (ROOT / "items.yaml").read_bytes()


def test_the_list_filters_by_status_category_month_and_words(staff: FlaskClient) -> None:
    """The list narrows to what staff look for."""

    def ids(query: str) -> list[str]:
        page = staff.get(f"/items?{query}").get_data(as_text=True)
        return lxml.html.fromstring(page).xpath("//table[@id='items']//td[1]/small/text()")

    everything = ids("")
    assert len(everything) == len(catalogue.load(ROOT / "items.yaml").items)
    assert ids("status=draft") == []
    assert ids("q=medical+school") == ["medical-school-preparations"]
    assert ids("month=2025-11&category=institutional-advancement") == [
        "medical-school-preparations"
    ]
    assert set(ids("section=features")) < set(everything)


def test_the_preview_is_sanitized_markdown(staff: FlaskClient) -> None:
    """The live preview renders Markdown as the feeds do, with scripts removed."""
    token = csrf_of(staff.get("/items/new").get_data(as_text=True))
    response = staff.post(
        "/items/preview",
        data={"csrf_token": token, "markdown": "**bold** <script>alert(1)</script>"},
    )
    html = response.get_data(as_text=True)
    assert "<strong>bold</strong>" in html
    assert "<script" not in html
    assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
    assert staff.post("/items/preview", data={"markdown": "x"}).status_code == 403


def test_the_id_is_shown_read_only_and_never_changes(staff: FlaskClient, project: Path) -> None:
    """A posted id is ignored: an item's id is its identity in every feed."""
    fields = form_of(staff.get("/items/medical-school-preparations").get_data(as_text=True))
    fields.update(id="renamed", title="Renamed", action="save")
    response = staff.post("/items/medical-school-preparations", data=fields)
    assert response.headers["Location"] == "/items/medical-school-preparations"
    assert catalogue.load(project / "items.yaml").items[0].id == "medical-school-preparations"
    page = staff.get("/items/medical-school-preparations").get_data(as_text=True)
    assert 'name="id" value="medical-school-preparations" readonly' in page


def test_an_unknown_item_is_not_found(staff: FlaskClient) -> None:
    """A mistyped item address says so."""
    assert staff.get("/items/no-such-item").status_code == 404
