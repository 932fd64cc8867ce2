"""Every digest's footer links to the reader's own preferences page, beside the unsubscribe link."""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from lxml import html as lxml_html
from markupsafe import escape

from conftest import SmtpServer
from digest import console
from digest.mail import newsletter
from digest.months import Month
from digest.publish import catalogue as catalogue_module
from digest.send import delivery, subscribers
from digest.send.ledger import Ledger
from digest.send.tokens import Tokens
from digest.send.unsubscribe import Links
from helpers import NOW

ROOT = Path(__file__).resolve().parent.parent
SECRET = "k" * 40
PUBLIC = "https://digest.example.edu/"
NOVEMBER = Month.parse("2025-11")
LINK = re.compile(r"https://digest\.example\.edu/preferences/([A-Za-z0-9_-]+)")
TEXT_LINE = re.compile(r"^Manage your subscription \(categories, pause\): (\S+)$", re.MULTILINE)
Run = Callable[..., Result]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled catalogue and list in tmp_path, and no settings inherited."""
    for name in (
        "DIGEST_SMTP_URL",
        "DIGEST_SMTP_PASSWORD",
        "DIGEST_STATE",
        "DIGEST_PUBLIC_URL",
        "DIGEST_SECRET_KEY",
        "DIGEST_DKIM_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return tmp_path


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer) -> SmtpServer:
    """Sends go to the test SMTP server, with public pages and their secret key."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("DIGEST_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    return smtp_server


def pages(project: Path) -> Flask:
    """The real console with its public pages, on the send's state database."""
    config = console.Config(
        catalogue_path=project / "items.yaml",
        state_path=project / ".digest" / "state.sqlite3",
        feeds_dir=project / "feeds",
        password="correct horse battery staple",  # noqa: S106 -- the tests' own
        secret_key=SECRET,
        clock=lambda: NOW,
        public_url=PUBLIC,
    )
    return console.create_app(config)


def parsed(data: bytes) -> EmailMessage:
    found = message_from_bytes(data, policy=policy.default)
    assert isinstance(found, EmailMessage)
    return found


def parts(message: EmailMessage) -> tuple[str, str]:
    """Return (html, text) of a digest message, decoded."""
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part is not None
    assert text_part is not None
    text = str(text_part.get_content()).replace("\r\n", "\n")
    return str(html_part.get_content()).replace("\r\n", "\n"), text


def footer_links(message: EmailMessage) -> tuple[str, str]:
    """Return the preferences URL of the HTML footer and of the text footer."""
    page, text = parts(message)
    root = lxml_html.fromstring(page)
    (footer,) = root.find_class("footer")
    anchors = {a.text_content(): a.get("href") for a in footer.iter("a")}
    assert list(anchors) == [
        "View in browser",
        "Follow the feeds",
        "Unsubscribe",
        "Manage your subscription",
    ]
    assert anchors["Unsubscribe"].startswith(f"{PUBLIC}unsubscribe/")
    found = TEXT_LINE.search(text)
    assert found, text
    # Beside the unsubscribe line, as in the HTML.
    assert text[: found.start()].rstrip("\n").rsplit("\n", 1)[-1].startswith("Unsubscribe: ")
    return anchors["Manage your subscription"], found.group(1)


def token_of(url: str) -> str:
    found = LINK.fullmatch(url)
    assert found, url
    return found.group(1)


def test_each_reader_gets_a_link_to_their_own_preferences_page(
    run: Run, project: Path, public: SmtpServer
) -> None:
    """Each reader's footer (HTML and text) opens their own preferences page, nobody else's."""
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    received = public.recorder.messages
    assert len(received) == 11
    client = pages(project).test_client()
    everyone = {m.rcpt_tos[0].lower() for m in received}
    for delivered in received:
        (reader,) = delivered.rcpt_tos
        in_html, in_text = footer_links(parsed(delivered.data))
        assert in_html == in_text
        token = token_of(in_html)
        assert reader.split("@")[0] not in token  # no address in clear
        page = client.get(f"/preferences/{token}")
        assert page.status_code == 200
        shown = page.get_data(as_text=True)
        assert f"<strong>{reader.lower()}</strong>: subscribed" in shown
        assert [other for other in everyone - {reader.lower()} if other in shown] == []


def test_without_public_url_the_footer_has_no_preferences_link(
    run: Run, project: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DIGEST_PUBLIC_URL the digest is sent exactly as before: no preferences link."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    cat = catalogue_module.load(project / "items.yaml")
    with Ledger(project / ".digest" / "state.sqlite3") as ledger:
        rows = ledger.deliveries(str(NOVEMBER))
        assert len(rows) == 11
        for row in rows:
            (delivered,) = [m for m in smtp_server.recorder.messages if m.rcpt_tos == [row.address]]
            assert b"preferences" not in delivered.data.lower()
            # The parts are today's: the frozen rendering, personalised as before.
            frozen = ledger.render(str(NOVEMBER), row.selection)
            assert frozen is not None
            assert newsletter.PREFERENCES_TOKEN not in frozen.html + frozen.text
            made = newsletter.Rendered(frozen.subject, frozen.html, frozen.text, 0)
            expected = made.personalise(row.name, cat.mailing().unsubscribe)
            page, text = parts(parsed(delivered.data))
            assert (page, text) == expected


def freeze_as_before(project: Path) -> None:
    """Freeze November as a send before preferences links did, with its one-click links; stop."""
    cat = catalogue_module.load(project / "items.yaml")
    listed, _ = subscribers.of_catalogue(cat)
    with Ledger(project / ".digest" / "state.sqlite3") as ledger:
        plan = delivery.prepare(cat, listed, NOVEMBER, ledger, NOW)
        assert plan is not None
        assert len(plan.todo) == 11


def test_month_frozen_before_the_link_is_finished_as_it_was_frozen(
    run: Run, project: Path, public: SmtpServer
) -> None:
    """A send resumed after the upgrade gives the rest what the frozen month had: no link,
    no "catalogue changed" warning, and a reader whose choice is new gets the link."""
    freeze_as_before(project)
    with (project / "subscribers.csv").open("a", encoding="utf-8") as listing:
        listing.write(
            "new.reader@example.org,New Reader,engagement\n"
        )  # a selection not frozen then
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    assert "changed" not in result.output
    received = {m.rcpt_tos[0]: parsed(m.data) for m in public.recorder.messages}
    assert len(received) == 12
    new = received.pop("new.reader@example.org")
    client = pages(project).test_client()
    token = token_of(footer_links(new)[0])
    assert "<strong>new.reader@example.org</strong>" in client.get(f"/preferences/{token}").text
    one_click = Links(SECRET, PUBLIC).url
    with Ledger(project / ".digest" / "state.sqlite3") as ledger:
        rows = {r.address: r for r in ledger.deliveries(str(NOVEMBER))}
        for address, message in received.items():
            frozen = ledger.render(str(NOVEMBER), rows[address].selection)
            assert frozen is not None
            made = newsletter.Rendered(frozen.subject, frozen.html, frozen.text, 0)
            assert parts(message) == made.personalise(rows[address].name, one_click(address))
            assert "Manage your subscription" not in parts(message)[1]


def test_month_frozen_with_links_is_not_sent_without_public_pages(
    run: Run, project: Path, public: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A half-sent month whose links need the public pages stops, saying what to set back."""
    monkeypatch.setenv("DIGEST_SMTP_URL", "smtp://127.0.0.1:9")  # never reached: it stops first
    cat = catalogue_module.load(project / "items.yaml")
    listed, _ = subscribers.of_catalogue(cat)
    with Ledger(project / ".digest" / "state.sqlite3") as ledger:
        plan = delivery.prepare(cat, listed, NOVEMBER, ledger, NOW, preferences=lambda a: a)
        assert plan is not None
        frozen_at = plan.frozen_at.replace("T", " ")[:16]
    monkeypatch.delenv("DIGEST_PUBLIC_URL")
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 1
    assert (
        f"the November 2025 digest was frozen on {frozen_at} UTC with a link to each reader's "
        "preferences page, and DIGEST_PUBLIC_URL is not set now: set DIGEST_PUBLIC_URL and "
        "DIGEST_SECRET_KEY as they were to send the rest"
    ) in result.output
    assert public.recorder.messages == []


def test_test_copies_and_the_outbox_carry_the_link(
    run: Run, project: Path, public: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A [TEST] copy and a rehearsal's files show the preferences link a reader will see."""
    result = run("send", "--month", "2025-11", "--to", "tester@example.org")
    assert result.exit_code == 0, result.output
    (copy,) = public.recorder.messages
    assert b"\r\nSubject: [TEST] " in copy.data
    in_html, in_text = footer_links(parsed(copy.data))
    assert in_html == in_text
    read = Tokens(SECRET).read("preferences", token_of(in_html), NOW)
    assert read == {"a": "tester@example.org"}

    monkeypatch.delenv("DIGEST_SMTP_URL")
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    files = sorted((project / "outbox").glob("*.eml"))
    assert len(files) == 11
    for path in files:
        message = parsed(path.read_bytes())
        token = token_of(footer_links(message)[0])
        addressed = str(message["To"].addresses[0].addr_spec).lower()
        assert Tokens(SECRET).read("preferences", token, NOW) == {"a": addressed}


HOSTILE_NAMES = [
    '"><script>alert(1)</script>',
    "Ann <b>Bold</b> & Co",
    "DIGEST-PERSONAL-PREFERENCES-5f0c2e",
    "Eve' onmouseover='alert(1)",
]


def test_hostile_names_and_addresses_never_become_markup(
    run: Run, project: Path, public: SmtpServer
) -> None:
    """A reader's name or address shows as text; the links around it stay as they were."""
    with (project / "subscribers.csv").open("w", encoding="utf-8", newline="") as listing:
        writer = csv.writer(listing)
        writer.writerow(["email", "name"])
        writer.writerows([f"x{n}+a&b'c@example.org", name] for n, name in enumerate(HOSTILE_NAMES))
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    received = public.recorder.messages
    assert len(received) == len(HOSTILE_NAMES)
    client = pages(project).test_client()
    for delivered in received:
        message = parsed(delivered.data)
        root = lxml_html.fromstring(parts(message)[0])
        assert root.findall(".//script") == []
        assert root.findall(".//b") == []
        assert not any(k.startswith("on") for el in root.iter() for k in el.attrib)
        in_html, in_text = footer_links(message)
        assert in_html == in_text
        (reader,) = delivered.rcpt_tos
        shown = client.get(f"/preferences/{token_of(in_html)}").text
        assert f"<strong>{escape(reader.lower())}</strong>" in shown


def test_html_values_are_escaped() -> None:
    """Whatever a preferences URL holds, it fills the footer as an attribute's text."""
    html_values, text_values = newsletter.personal_values(
        "<b>x</b>", "mailto:a@example.org", 'https://x.example/p/"><script>'
    )
    assert html_values[newsletter.PREFERENCES_TOKEN] == (
        "https://x.example/p/&quot;&gt;&lt;script&gt;"
    )
    assert text_values[newsletter.PREFERENCES_TOKEN] == 'https://x.example/p/"><script>'
    assert newsletter.PREFERENCES_TOKEN not in newsletter.personal_values(None, "u")[0]


def test_settings_need_the_key_before_anything_is_sent(
    run: Run, project: Path, public: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With public pages but no secret key, the send stops before a message goes."""
    monkeypatch.delenv("DIGEST_SECRET_KEY")
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 1
    assert "DIGEST_SECRET_KEY is not set" in result.output
    assert public.recorder.messages == []
