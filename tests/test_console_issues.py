"""The month page's issue form: the intro, the items in order and the subject saved into
`newsletter.issues`, check messages at the field, a refused save, the history, the rebuild, and
the preview's widths and colour schemes (Flask's test client, the bundled items)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from flask import Flask
from flask.testing import FlaskClient

from digest import console
from digest.app import editing
from digest.app.settings import Settings
from digest.console.web import console_of
from digest.months import Month
from digest.publish import catalogue

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"  # noqa: S105 -- the tests' own
NOW = datetime(2025, 12, 1, 4, tzinfo=UTC)
MONTH = "2025-11"
NOVEMBER = [
    "medical-school-preparations",
    "talk-william-mobley-empathy-and-compassion",
    "gptx-collaboration",
]
NOTE = 'A note from the **Provost**: "thank you" #1 — 谢谢 🎉'


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


@pytest.fixture
def staff(app: Flask) -> FlaskClient:
    """A client logged in as Ada."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    response = client.post(
        "/login",
        data={"csrf_token": token.group(1), "name": "Ada", "password": PASSWORD, "next": ""},
    )
    assert response.status_code == 303
    return client


def issue_form(page: str) -> dict[str, str]:
    """Return the issue form's fields as the browser would post them."""
    tree = lxml.html.fromstring(page)
    [form] = tree.xpath("//form[contains(@class, 'issue-form')]")
    fields = {}
    for element in form.xpath(".//input[@name] | .//textarea[@name]"):
        if element.tag == "textarea":
            fields[element.get("name")] = element.text or ""
        else:
            fields[element.get("name")] = element.get("value") or ""
    return fields


def errors_at(page: str, name: str) -> list[str]:
    """Return the messages shown at one field of the issue form."""
    tree = lxml.html.fromstring(page)
    return [e.text_content() for e in tree.xpath(f"//*[@id='issue-{name}-error']")]


def plan_of(project: Path) -> catalogue.IssuePlan | None:
    """Return what the catalogue on disk sets for November."""
    loaded = catalogue.load(project / "items.yaml")
    assert loaded.newsletter is not None
    return loaded.newsletter.plan(Month.parse(MONTH))


def test_the_form_offers_the_months_items_in_their_order(staff: FlaskClient) -> None:
    """Staff see November's three items numbered 1 to 3 as the digest shows them now."""
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    assert [fields[f"position-{i}"] for i in NOVEMBER] == ["1", "2", "3"]
    assert fields["shown"] == ",".join(NOVEMBER)
    assert fields["intro"] == ""
    assert fields["subject"] == ""
    others = [k for k, v in fields.items() if k.startswith("position-") and not v]
    assert others, "items of other months are offered, left out"


def test_saving_a_note_and_an_order_writes_only_the_issue(
    staff: FlaskClient, project: Path
) -> None:
    """The note and the new order land in newsletter.issues; every other line is unchanged."""
    path = project / "items.yaml"
    before = path.read_bytes()
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    order = [NOVEMBER[2], NOVEMBER[0], NOVEMBER[1]]
    fields.update({f"position-{i}": str(n) for n, i in enumerate(order, 1)})
    fields.update(intro=NOTE + "\n\nSecond paragraph.", subject="From the Provost: {month:%B %Y}")
    response = staff.post(f"/months/{MONTH}/issue", data=fields)
    assert response.status_code == 303, response.get_data(as_text=True)
    after = path.read_bytes()
    kept = [
        line
        for line in after.splitlines(keepends=True)
        if line not in before.splitlines(keepends=True)
    ]
    assert all(line.startswith(b"  ") for line in kept)
    assert [
        line
        for line in before.splitlines(keepends=True)
        if line not in after.splitlines(keepends=True)
    ] == []
    plan = plan_of(project)
    assert plan is not None
    assert plan.intro == NOTE + "\n\nSecond paragraph."
    assert plan.items == tuple(order)
    assert plan.subject == "From the Provost: {month:%B %Y}"
    page = staff.get(f"/months/{MONTH}").get_data(as_text=True)
    assert "Saved the 2025-11 issue (save 1)." in page
    assert "Feeds rebuilt" in page
    titles = lxml.html.fromstring(page).xpath("//ul[@class='items']//span[@class='title']")
    assert len(titles) == 3
    [edit] = editing.history(_settings(staff), f"issue {MONTH}")
    assert edit.staff == "Ada"
    assert "+  issues:" in edit.diff
    preview = staff.get(f"/months/{MONTH}/preview").get_data(as_text=True)
    assert preview.index("Provost") < preview.index("Second paragraph.")


def _settings(staff: FlaskClient) -> Settings:
    found: Settings = console_of(staff.application).config.settings
    return found


def test_an_unknown_id_is_shown_at_the_items(staff: FlaskClient, project: Path) -> None:
    """A mistyped id is refused at the items list with the check's suggestion; nothing written."""
    before = (project / "items.yaml").read_bytes()
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    fields["add"] = "gptx-colaboration-x"
    response = staff.post(f"/months/{MONTH}/issue", data=fields)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    [message] = errors_at(page, "items")
    assert "'gptx-colaboration-x' is not the id of any item" in message
    assert issue_form(page)["add"] == "gptx-colaboration-x"  # kept as typed
    assert (project / "items.yaml").read_bytes() == before


def test_a_bad_subject_is_shown_at_the_subject(staff: FlaskClient, project: Path) -> None:
    """A subject template that does not format is refused at the subject field."""
    before = (project / "items.yaml").read_bytes()
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    fields["subject"] = "News for {month:%B"
    response = staff.post(f"/months/{MONTH}/issue", data=fields)
    assert response.status_code == 422
    assert errors_at(response.get_data(as_text=True), "subject")
    assert (project / "items.yaml").read_bytes() == before


def test_a_position_that_is_no_number_is_refused(staff: FlaskClient, project: Path) -> None:
    """A place typed as a word is refused at the items list, naming what was typed."""
    before = (project / "items.yaml").read_bytes()
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    fields[f"position-{NOVEMBER[0]}"] = "first"
    response = staff.post(f"/months/{MONTH}/issue", data=fields)
    assert response.status_code == 422
    [message] = errors_at(response.get_data(as_text=True), "items")
    assert "'first' is not a position" in message
    assert (project / "items.yaml").read_bytes() == before


def test_a_save_racing_a_hand_edit_is_refused_with_the_diff(
    staff: FlaskClient, project: Path
) -> None:
    """The file edited by hand after the page opened: the save is refused, showing the change."""
    path = project / "items.yaml"
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    by_hand = path.read_bytes() + b"# reviewed by Bo\n"
    path.write_bytes(by_hand)
    fields["intro"] = "From the Provost."
    response = staff.post(f"/months/{MONTH}/issue", data=fields)
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    [diff] = lxml.html.fromstring(page).xpath("//*[@id='conflict']//pre")
    assert "+# reviewed by Bo" in diff.text_content()
    assert path.read_bytes() == by_hand
    again = issue_form(page)
    assert again["intro"] == "From the Provost."
    assert staff.post(f"/months/{MONTH}/issue", data=again).status_code == 303
    plan = plan_of(project)
    assert plan is not None
    assert plan.intro == "From the Provost."
    assert path.read_bytes().endswith(b"# reviewed by Bo\n")


def test_clearing_the_form_removes_the_months_entry(staff: FlaskClient, project: Path) -> None:
    """Emptying the intro and subject and keeping the dates' order gives back the file as it was."""
    path = project / "items.yaml"
    before = path.read_bytes()
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    fields["intro"] = "A short note."
    assert staff.post(f"/months/{MONTH}/issue", data=fields).status_code == 303
    assert path.read_bytes() != before
    fields = issue_form(staff.get(f"/months/{MONTH}").get_data(as_text=True))
    fields["intro"] = ""
    assert staff.post(f"/months/{MONTH}/issue", data=fields).status_code == 303
    assert path.read_bytes() == before


def test_the_preview_is_offered_at_two_widths_and_two_schemes(staff: FlaskClient) -> None:
    """The month page frames the digest at 375 px in dark, and the frame's page is dark."""
    page = staff.get(f"/months/{MONTH}?width=375&scheme=dark").get_data(as_text=True)
    [frame] = lxml.html.fromstring(page).xpath("//iframe[@id='look']")
    assert frame.get("class") == "preview w375 dark"
    assert frame.get("src") == f"/months/{MONTH}/preview?scheme=dark"
    links = lxml.html.fromstring(page).xpath("//nav[@class='preview-look']//a/@href")
    assert f"/months/{MONTH}?width=600&scheme=dark" in links
    assert f"/months/{MONTH}?width=375&scheme=light" in links
    dark = staff.get(f"/months/{MONTH}/preview?scheme=dark").get_data(as_text=True)
    light = staff.get(f"/months/{MONTH}/preview").get_data(as_text=True)
    assert "prefers-color-scheme" not in dark
    assert "@media all" in dark
    assert "@media not all" in light
    odd = staff.get(f"/months/{MONTH}?width=9999&scheme=<b>").get_data(as_text=True)
    [frame] = lxml.html.fromstring(odd).xpath("//iframe[@id='look']")
    assert frame.get("class") == "preview w600 light"
