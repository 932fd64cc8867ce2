"""The email itself: what a mail client parses out of the bytes we send."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.errors import RenderError
from digest.mail import message
from digest.months import Month
from digest.publish import catalogue
from digest.publish.catalogue import Mailbox

ROOT = Path(__file__).resolve().parent.parent
NOVEMBER = Month(2025, 11)
SENT = datetime(2025, 12, 1, 1, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def publication() -> catalogue.Publication:
    return catalogue.load(ROOT / "items.yaml").publication


def envelope(**changes: object) -> message.Envelope:
    fields: dict[str, object] = {
        "sender": Mailbox("Office of the Provost", "provost@example.edu"),
        "reply_to": "provost@example.edu",
        "recipient": Mailbox("Prof. Chan Tai-man", "chan@example.org"),
        "subject": "What's Happening — November 2025",
        "unsubscribe": "mailto:provost@example.edu?subject=unsubscribe",
    }
    fields.update(changes)
    return message.Envelope(**fields)  # type: ignore[arg-type]


def parsed(publication: catalogue.Publication, **changes: object) -> EmailMessage:
    built = message.build(publication, NOVEMBER, envelope(**changes), "<p>Hi</p>", "Hi\n", SENT)
    result = message_from_bytes(bytes(built), policy=policy.default)
    assert isinstance(result, EmailMessage)
    return result


def test_message_parses_into_text_and_html(publication: catalogue.Publication) -> None:
    """Every mail client finds a plain-text and an HTML version, text first."""
    email = parsed(publication)
    assert email.get_content_type() == "multipart/alternative"
    parts = list(email.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    # On the wire every line ends in CRLF, as SMTP requires.
    assert parts[0].get_content() == "Hi\r\n"
    assert parts[1].get_content() == "<p>Hi</p>\r\n"
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_non_ascii_subject_is_encoded_and_decodes(publication: catalogue.Publication) -> None:
    """An em dash or Chinese in the subject shows correctly, sent as RFC 2047 ASCII."""
    subject = "What's Happening — 十一月 November 2025 📰"
    built = message.build(publication, NOVEMBER, envelope(subject=subject), "<p>x</p>", "x", SENT)
    raw = bytes(built)
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    header_block.decode("ascii")  # nothing but ASCII on the wire
    assert b"=?utf-8?" in header_block
    assert message_from_bytes(raw, policy=policy.default)["Subject"] == subject


def test_headers_a_mail_client_needs(publication: catalogue.Publication) -> None:
    """From, To, Date, Message-ID and the list headers that drive 'Unsubscribe' buttons."""
    email = parsed(publication)
    assert email["From"] == "Office of the Provost <provost@example.edu>"
    assert email["To"] == '"Prof. Chan Tai-man" <chan@example.org>'
    assert email["Reply-To"] == "provost@example.edu"
    assert email["Date"] == "Mon, 01 Dec 2025 01:00:00 +0000"
    assert email["List-Id"] == '"What\'s Happening" <whats-happening.provost.example.edu>'
    assert email["List-Unsubscribe"] == "<mailto:provost@example.edu?subject=unsubscribe>"
    assert email["List-Unsubscribe-Post"] is None
    assert email["MIME-Version"] == "1.0"


def test_https_unsubscribe_offers_one_click(publication: catalogue.Publication) -> None:
    """With a web unsubscribe address, mail clients offer one-click unsubscribe (RFC 8058)."""
    email = parsed(publication, unsubscribe="https://provost.example.edu/unsubscribe/abc")
    assert email["List-Unsubscribe"] == "<https://provost.example.edu/unsubscribe/abc>"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_message_id_is_stable_per_month_and_recipient(publication: catalogue.Publication) -> None:
    """A resent copy carries the same Message-ID, so mail clients show it once."""
    first = message.message_id(publication, NOVEMBER, "chan@example.org")
    assert first == message.message_id(publication, NOVEMBER, " CHAN@example.org ")
    assert first != message.message_id(publication, Month(2025, 12), "chan@example.org")
    assert first != message.message_id(publication, NOVEMBER, "lee@example.org")
    assert first.startswith("<digest.2025-11.")
    assert first.endswith("@provost.example.edu>")
    assert parsed(publication)["Message-ID"] == first


def test_each_copy_has_its_own_message_id_and_the_first_keeps_the_old_one(
    publication: catalogue.Publication,
) -> None:
    """A resent copy needs its own Message-ID; the first copy keeps the id earlier digests sent."""
    first = message.message_id(publication, NOVEMBER, "chan@example.org")
    # As digest wrote it before copies were counted.
    assert first == "<digest.2025-11.302fb215f26e63e524f6fe3c@provost.example.edu>"
    assert message.message_id(publication, NOVEMBER, "chan@example.org", 0) == first
    second = message.message_id(publication, NOVEMBER, " Chan@example.org", 1)
    assert second == "<digest.2025-11.302fb215f26e63e524f6fe3c.r1@provost.example.edu>"
    assert message.message_id(publication, NOVEMBER, "chan@example.org", 2) not in (first, second)
    built = message.build(publication, NOVEMBER, envelope(), "<p>Hi</p>", "Hi\n", SENT, copy=1)
    assert built["Message-ID"] == message.message_id(
        publication, NOVEMBER, envelope().recipient.address, 1
    )


@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n", "\x00", "\u2028", "\u2029", "\x85"])
@pytest.mark.parametrize("field", ["subject", "name", "unsubscribe", "reply_to"])
def test_line_breaks_never_reach_a_header(
    publication: catalogue.Publication, breaker: str, field: str
) -> None:
    """A line break in any header value is refused: no header injection (CVE-2024-6923)."""
    evil = f"x{breaker}Bcc: victim@example.org"
    changes: dict[str, object] = {
        "subject": {"subject": evil},
        "name": {"recipient": Mailbox(evil, "chan@example.org")},
        "unsubscribe": {"unsubscribe": f"mailto:a@example.edu{breaker}Bcc: v@example.org"},
        "reply_to": {"reply_to": f"a@example.edu{breaker}Bcc: v@example.org"},
    }[field]
    with pytest.raises(RenderError, match="line break"):
        message.build(publication, NOVEMBER, envelope(**changes), "<p>x</p>", "x", SENT)


def test_trailing_newline_in_subject_is_refused(publication: catalogue.Publication) -> None:
    """The exact CVE-2024-6923 shape, a value ending in a newline, never ends the header block."""
    with pytest.raises(RenderError):
        message.build(publication, NOVEMBER, envelope(subject="Hello\n"), "<p>x</p>", "x", SENT)


names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(name=names, subject=names.filter(lambda s: s.strip()))
def test_any_name_and_subject_add_no_header(
    publication: catalogue.Publication, name: str, subject: str
) -> None:
    """Whatever a subscriber's name or a title holds, the message has one From, one To, no Bcc."""
    built = message.build(
        publication,
        NOVEMBER,
        envelope(recipient=Mailbox(name, "chan@example.org"), subject=subject),
        "<p>x</p>",
        "x",
        SENT,
    )
    email = message_from_bytes(bytes(built), policy=policy.default)
    keys = [key.lower() for key in email]
    assert keys.count("from") == 1
    assert keys.count("to") == 1
    assert "bcc" not in keys
    assert "cc" not in keys
    assert email["To"].addresses[0].addr_spec == "chan@example.org"
    # Every character of the name survives; whitespace does not always: unfolding collapses runs
    # of spaces, and Python's parser puts a space between the encoded-words of a long name.
    assert "".join(email["To"].addresses[0].display_name.split()) == "".join(name.split())


def test_one_click_url_is_offered_first_and_stays_readable(
    publication: catalogue.Publication,
) -> None:
    """Mail clients find the one-click URL, plain and whole, before the mailto fallback."""
    url = "https://digest.example.edu/unsubscribe/" + "A" * 40 + "." + "B" * 43
    built = message.build(publication, NOVEMBER, envelope(one_click=url), "<p>Hi</p>", "Hi\n", SENT)
    raw = bytes(built).decode("ascii")
    # Folded at 78 columns, the email package would have made encoded words of the URL.
    assert (
        f"\r\nList-Unsubscribe: <{url}>, <mailto:provost@example.edu?subject=unsubscribe>\r\n"
        in raw
    )
    assert "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert "=?utf-8?" not in raw.split("\r\n\r\n", 1)[0].split("List-Unsubscribe:", 1)[1]


def test_one_click_url_cannot_inject_headers(publication: catalogue.Publication) -> None:
    """A line break smuggled into the unsubscribe URL is refused, not sent as a new header."""
    with pytest.raises(RenderError, match="one-click unsubscribe URL"):
        message.build(
            publication,
            NOVEMBER,
            envelope(one_click="https://x.example/u\r\nBcc: all@example.org"),
            "<p>Hi</p>",
            "Hi\n",
            SENT,
        )
