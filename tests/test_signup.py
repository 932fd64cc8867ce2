"""The public pages of the store: sign-up with double opt-in, preferences, and their defences."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import SmtpServer
from digest import console
from digest.app import signup
from digest.send.ledger import Ledger
from digest.send.store import Store
from digest.send.tokens import Tokens
from helpers import NOW

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s" * 40
PUBLIC = "http://127.0.0.1:8000"
STATE = Path(".digest/state.sqlite3")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Path:
    """The bundled catalogue in tmp_path, the working directory; the state on the engine of the
    run (the public pages work alike on SQLite and PostgreSQL)."""
    if database_url is not None:
        monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(project: Path, smtp_server: SmtpServer, clock: Clock) -> Flask:
    """The console with public pages, mailing through the test SMTP server."""
    config = console.Config(
        catalogue_path=Path("items.yaml"),
        state_path=STATE,
        feeds_dir=Path("feeds"),
        password="correct horse battery staple",  # noqa: S106 -- the tests' own
        secret_key=SECRET,
        clock=clock,
        public_url=PUBLIC,
        smtp_url=smtp_server.url,
        database_url=os.environ.get("DIGEST_DATABASE_URL"),
    )
    return console.create_app(config)


def state(project: Path) -> Ledger:
    """Return the project's state database, on the engine of the run."""
    return Ledger(project / STATE, url=os.environ.get("DIGEST_DATABASE_URL"))


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_up(client: FlaskClient, email: str, *categories: str, **extra: str) -> tuple[int, str]:
    token = csrf_of(client.get("/subscribe").get_data(as_text=True))
    data = {"csrf_token": token, "email": email, "name": "Ada", **extra}
    response = client.post("/subscribe", data={**data, "categories": list(categories)})
    return response.status_code, response.get_data(as_text=True)


def link_in(smtp: SmtpServer, index: int = -1) -> str:
    body = smtp.recorder.messages[index].message.get_body(("plain",))
    assert body is not None
    found = re.search(rf"{re.escape(PUBLIC)}(/confirm/\S+)", str(body.get_content()))
    assert found
    return found.group(1)


def rows(project: Path) -> dict[str, object]:
    if not (project / STATE).exists() and "DIGEST_DATABASE_URL" not in os.environ:
        return {}
    with state(project) as ledger:
        return dict(Store(ledger).rows())


def events(project: Path) -> int:
    with state(project) as ledger:
        return len(ledger.query("SELECT id FROM subscriber_events"))


def test_sign_up_confirm_and_choose(app: Flask, smtp_server: SmtpServer, project: Path) -> None:
    """A reader signs up, confirms from the mail and changes categories; the store follows."""
    client = app.test_client()
    status, page = sign_up(client, "Reader@example.org", "visit", "engagement")
    assert status == 200
    assert "Check your inbox" in page
    assert [m.rcpt_tos for m in smtp_server.recorder.messages] == [["Reader@example.org"]]
    assert rows(project)["reader@example.org"].status == "pending"  # type: ignore[attr-defined]

    link = link_in(smtp_server)
    shown = client.get(link)
    assert shown.status_code == 200
    assert rows(project)["reader@example.org"].status == "pending"  # type: ignore[attr-defined]
    confirmed = client.post(link, data={"csrf_token": csrf_of(shown.get_data(as_text=True))})
    assert confirmed.status_code == 200
    row = rows(project)["reader@example.org"]
    assert (row.status, row.categories, row.source) == (  # type: ignore[attr-defined]
        "active", {"visit", "engagement"}, "signup",
    )  # fmt: skip
    assert row.confirmed_via == "confirmation link, from 127.0.0.1"  # type: ignore[attr-defined]

    page = confirmed.get_data(as_text=True)
    preferences = re.search(r'action="(/preferences/[^"]+)"', page)
    assert preferences
    changed = client.post(
        preferences.group(1),
        data={"csrf_token": csrf_of(page), "action": "categories", "categories": ["recognition"]},
    )
    assert changed.status_code == 200
    assert rows(project)["reader@example.org"].categories == {"recognition"}  # type: ignore[attr-defined]
    # On PostgreSQL every page wrote there, and no SQLite file was made beside the catalogue.
    assert (project / STATE).exists() is ("DIGEST_DATABASE_URL" not in os.environ)


def test_sign_up_answer_is_the_same_for_known_and_unknown(
    app: Flask, smtp_server: SmtpServer, project: Path
) -> None:
    """Nobody can tell from the sign-up page whether an address is on the list."""
    client = app.test_client()
    _, unknown = sign_up(client, "new@example.org")
    _, known = sign_up(client, "new@example.org")
    assert re.sub(r'value="[^"]+"', "", unknown) == re.sub(r'value="[^"]+"', "", known)
    assert len(smtp_server.recorder.messages) == 2


def test_confirmation_mails_are_limited_per_address(
    app: Flask, smtp_server: SmtpServer, clock: Clock
) -> None:
    """Nobody can flood someone's inbox with confirmation mails: 3 a day, then 429."""
    client = app.test_client()
    answers = [sign_up(client, "victim@example.org")[0] for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    assert len(smtp_server.recorder.messages) == 3
    status, page = sign_up(client, "victim@example.org")
    assert status == 429
    assert "Traceback" not in page
    clock.now += timedelta(days=1, seconds=1)
    assert sign_up(client, "victim@example.org")[0] == 200


def test_sign_ups_are_limited_per_client(app: Flask, smtp_server: SmtpServer) -> None:
    """One client posting sign-up after sign-up is stopped with a 429."""
    client = app.test_client()
    answers = [sign_up(client, f"p{n}@example.org")[0] for n in range(11)]
    assert answers == [200] * 10 + [429]


def test_honeypot_is_answered_alike_and_sends_nothing(
    app: Flask, smtp_server: SmtpServer, project: Path
) -> None:
    """A bot filling the hidden field gets the usual page, and nobody gets mail or a row."""
    status, page = sign_up(app.test_client(), "bot@example.org", website="http://spam")
    assert (status, "Check your inbox" in page) == (200, True)
    assert smtp_server.recorder.messages == []
    assert rows(project) == {}


def test_bad_address_names_the_field(app: Flask, smtp_server: SmtpServer) -> None:
    """A mistyped address is shown next to the form, and nothing is sent."""
    status, page = sign_up(app.test_client(), "not-an-address")
    assert status == 400
    assert "Email: &#39;not-an-address&#39; is not an email address" in page
    assert smtp_server.recorder.messages == []


def test_forms_without_csrf_are_refused(app: Flask, smtp_server: SmtpServer, project: Path) -> None:
    """A form posted from another site (no CSRF token) changes nothing: 403."""
    client = app.test_client()
    sign_up(client, "reader@example.org")
    link = link_in(smtp_server)
    assert client.post("/subscribe", data={"email": "x@example.org"}).status_code == 403
    assert client.post(link).status_code == 403
    assert rows(project)["reader@example.org"].status == "pending"  # type: ignore[attr-defined]
    assert len(smtp_server.recorder.messages) == 1


def test_tokens_for_another_purpose_forged_or_expired_are_refused(
    app: Flask, smtp_server: SmtpServer, project: Path, clock: Clock
) -> None:
    """A preferences link cannot confirm, a forged or old link does nothing: 400, no record."""
    client = app.test_client()
    sign_up(client, "reader@example.org")
    link = link_in(smtp_server)
    token = link.rsplit("/", 1)[1]
    csrf = csrf_of(client.get("/subscribe").get_data(as_text=True))
    before = events(project)
    tokens = Tokens(SECRET)
    preferences = tokens.make("preferences", {"a": "reader@example.org"}, NOW)
    forged = Tokens("x" * 40).make("confirm", {"e": "reader@example.org"}, NOW)
    for bad in (preferences, forged, token[:-4], "nonsense"):
        assert client.get(f"/confirm/{bad}").status_code == 400
        assert client.post(f"/confirm/{bad}", data={"csrf_token": csrf}).status_code == 400
    confirm_token = token
    assert client.get(f"/preferences/{confirm_token}").status_code == 400
    refused = client.post(
        f"/preferences/{confirm_token}", data={"csrf_token": csrf, "action": "unsubscribe"}
    )
    assert refused.status_code == 400
    clock.now += timedelta(hours=48, seconds=1)
    assert client.post(link, data={"csrf_token": csrf}).status_code == 400
    assert events(project) == before
    assert rows(project)["reader@example.org"].status == "pending"  # type: ignore[attr-defined]


def test_token_carries_no_address_in_clear() -> None:
    """A link in a mail or a proxy's log must not show whose it is."""
    token = Tokens(SECRET).make("preferences", {"a": "reader@example.org"}, NOW)
    assert "reader" not in token
    import base64

    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"reader" not in raw


def test_preferences_pause_unsubscribe_and_come_back(
    app: Flask, project: Path, clock: Clock
) -> None:
    """A reader pauses, unsubscribes and resubscribes from their link; no import undoes it."""
    settings = app.extensions["digest_console"].config.settings
    with state(project) as ledger:
        from digest.send import store

        Store(ledger).change(lambda r: store.add(r, "a@example.org", None, None, "ada", NOW), NOW)
    token = signup.preferences_token(settings, "a@example.org", NOW)
    client = app.test_client()
    page = client.get(f"/preferences/{token}").get_data(as_text=True)
    csrf = csrf_of(page)

    def post(**data: str) -> int:
        return client.post(f"/preferences/{token}", data={"csrf_token": csrf, **data}).status_code

    assert post(action="pause", months="2") == 200
    assert rows(project)["a@example.org"].paused_until == "2026-03-02T00:00:00+00:00"  # type: ignore[attr-defined]
    assert post(action="pause", months="99") == 400
    assert post(action="resume") == 200
    assert rows(project)["a@example.org"].paused_until is None  # type: ignore[attr-defined]
    assert post(action="unsubscribe") == 200
    assert rows(project)["a@example.org"].status == "unsubscribed"  # type: ignore[attr-defined]
    assert post(action="resubscribe") == 200
    assert rows(project)["a@example.org"].status == "active"  # type: ignore[attr-defined]


def test_get_never_changes_anything(app: Flask, smtp_server: SmtpServer, project: Path) -> None:
    """Link scanners fetch every link: a GET of any public page records nothing."""
    client = app.test_client()
    sign_up(client, "reader@example.org")
    before = events(project)
    client.get(link_in(smtp_server))
    token = Tokens(SECRET).make("preferences", {"a": "reader@example.org"}, NOW)
    client.get(f"/preferences/{token}")
    client.get("/subscribe")
    assert events(project) == before


@pytest.mark.parametrize("purpose", ["confirm", "preferences"])
def test_tokens_survive_a_restart(purpose: str) -> None:
    """A link mailed before a restart still works after it: only the secret key matters."""
    made = Tokens(SECRET).make(purpose, {"a": "x@example.org"}, NOW)
    assert Tokens(SECRET).read(purpose, made, NOW) == {"a": "x@example.org"}
    assert (
        Tokens(SECRET).read(purpose, made, NOW + timedelta(hours=49), timedelta(hours=48)) is None
    )


def test_feed_page_has_a_sign_up_form_only_with_a_public_url(project: Path) -> None:
    """Without DIGEST_PUBLIC_URL the feed page says nothing about email; with it, a form."""
    from digest.publish import catalogue, site

    loaded = catalogue.load(Path("items.yaml"))
    plain = site.render(loaded, NOW)["index.html"].decode()
    public = site.render(loaded, NOW, signup=PUBLIC + "/")["index.html"].decode()
    assert "mail" not in plain.lower()
    assert f'<form method="get" action="{PUBLIC}/subscribe">' in public
    assert (ROOT / "feeds" / "index.html").read_text(encoding="utf-8") != public


def test_a_bounced_reader_cannot_resubscribe_from_an_old_preferences_link(
    app: Flask, project: Path
) -> None:
    """An old link must not put a dead mailbox back on the list: only staff, with a reason, can."""
    from digest.send import store

    settings = app.extensions["digest_console"].config.settings
    with state(project) as ledger:
        kept = Store(ledger)
        kept.change(lambda r: store.add(r, "a@example.org", None, None, "ada", NOW), NOW)
        report = store.Bounce("r1@mx", "a@example.org", "2025-11", store.BounceKind.HARD, "5.1.1")
        kept.record_bounce(report, store.BounceRules(), NOW)
    token = signup.preferences_token(settings, "a@example.org", NOW)
    client = app.test_client()
    csrf = csrf_of(client.get(f"/preferences/{token}").get_data(as_text=True))
    answer = client.post(
        f"/preferences/{token}", data={"csrf_token": csrf, "action": "resubscribe"}
    )
    assert answer.status_code == 400
    assert "ask the digest&#39;s staff" in answer.get_data(as_text=True)
    assert rows(project)["a@example.org"].status == "bounced"  # type: ignore[attr-defined]
