"""The subscriber list in the staff console: counts, search, a person's history, staff changes."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from digest import console
from digest.send.ledger import Ledger
from digest.send.store import Store
from test_console import csrf_of, log_in, make_config

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(".digest/state.sqlite3")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled catalogue and subscriber list in tmp_path, the working directory."""
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def staff(project: Path) -> FlaskClient:
    """Ada, logged in to a console over the bundled project, its list imported."""
    app: Flask = console.create_app(make_config(project))
    client = app.test_client()
    assert log_in(client) == 303
    page = client.get("/subscribers").get_data(as_text=True)
    upload = (project / "subscribers.csv").read_bytes()
    preview = client.post(
        "/subscribers/import",
        data={"csrf_token": csrf_of(page), "file": (io.BytesIO(upload), "subscribers.csv")},
        content_type="multipart/form-data",
    )
    assert preview.status_code == 200
    assert not (project / STATE).exists() or not rows(project)  # a preview writes nothing
    text = preview.get_data(as_text=True)
    assert "subscribers.csv: would import (nothing imported: a dry run): 12 added" in text
    applied = client.post(
        "/subscribers/import",
        data={"csrf_token": csrf_of(text), "apply": "yes", "name": "subscribers.csv",
              "text": upload.decode()},
    )  # fmt: skip
    assert applied.status_code == 303
    return client


def rows(project: Path) -> dict[str, object]:
    with Ledger(project / STATE) as ledger:
        return dict(Store(ledger).rows())


def test_counts_search_and_filters(staff: FlaskClient) -> None:
    """Staff see how many are in each state and find a person by name, status or category."""
    page = staff.get("/subscribers").get_data(as_text=True)
    assert "active: <strong>12</strong>" in page
    assert "every category: 8" in page
    found = staff.get("/subscribers?query=cheung").get_data(as_text=True)
    assert re.findall(r'<td><a href="/subscribers/([^"]+)"', found) == ["cheung.mei@example.org"]
    visit = staff.get("/subscribers?category=visit&source=directory").get_data(as_text=True)
    assert "tsang.hiuyan@example.org" in visit
    assert "cheung.mei@example.org" not in visit
    assert "<p>0 rows.</p>" in staff.get("/subscribers?status=pending").get_data(as_text=True)


def test_remove_and_resubscribe_need_a_reason_and_are_recorded(
    staff: FlaskClient, project: Path
) -> None:
    """A staff override of someone's choice needs a reason, and the history names who did it."""
    page = staff.get("/subscribers/lee.kawai@example.org").get_data(as_text=True)
    csrf = csrf_of(page)
    staff.post("/subscribers/lee.kawai@example.org/remove", data={"csrf_token": csrf})
    assert rows(project)["lee.kawai@example.org"].status == "unsubscribed"  # type: ignore[attr-defined]
    no_reason = staff.post(
        "/subscribers/lee.kawai@example.org/resubscribe", data={"csrf_token": csrf, "reason": " "}
    )
    assert no_reason.status_code == 303
    assert rows(project)["lee.kawai@example.org"].status == "unsubscribed"  # type: ignore[attr-defined]
    staff.post(
        "/subscribers/lee.kawai@example.org/resubscribe",
        data={"csrf_token": csrf, "reason": "asked by phone"},
    )
    assert rows(project)["lee.kawai@example.org"].status == "active"  # type: ignore[attr-defined]
    history = staff.get("/subscribers/lee.kawai@example.org").get_data(as_text=True)
    assert "staff:Ada</td><td>unsubscribed" in history
    assert "staff:Ada</td><td>resubscribed by staff: asked by phone" in history


def test_add_and_export(staff: FlaskClient, project: Path) -> None:
    """Staff add a reader by hand and download the whole list."""
    csrf = csrf_of(staff.get("/subscribers").get_data(as_text=True))
    added = staff.post(
        "/subscribers/add",
        data={"csrf_token": csrf, "email": "new@example.org", "categories": ["visit"]},
    )
    assert added.headers["Location"].endswith("/subscribers/new@example.org")
    exported = staff.get("/subscribers/export.csv")
    assert exported.mimetype == "text/csv"
    assert "new@example.org,,active,visit,staff,no," in exported.get_data(as_text=True)


def test_unknown_address_page_is_a_404(staff: FlaskClient) -> None:
    """A mistyped address in the URL says it is not in the store."""
    response = staff.get("/subscribers/nobody@example.org")
    assert response.status_code == 404
    assert "not in the subscriber store" in response.get_data(as_text=True)
