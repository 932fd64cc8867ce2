"""A Stencil writes each recipient's message without the email package: byte for byte `build`'s."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from digest.errors import RenderError
from digest.mail import message
from digest.months import Month
from digest.publish import catalogue
from digest.publish.catalogue import Mailbox

ROOT = Path(__file__).resolve().parent.parent
PUBLICATION = catalogue.load(ROOT / "items.yaml").publication
MONTH = Month(2025, 11)
GREETING, LINK = "TOKEN-GREETING", "TOKEN-LINK"
SENDER = Mailbox("Office of the Provost", "provost@example.edu")
UNSUBSCRIBE = "mailto:provost@example.edu?subject=unsubscribe"


def envelope(recipient: Mailbox, subject: str, one_click: str | None) -> message.Envelope:
    return message.Envelope(
        SENDER, "provost@example.edu", recipient, subject, UNSUBSCRIBE, one_click
    )


def personal(name: str | None, link: str) -> tuple[dict[str, str], dict[str, str]]:
    greeting = f"Dear {name}," if name else "Dear colleague,"
    text = {GREETING: greeting, LINK: link}
    return {token: html.escape(value) for token, value in text.items()}, text


def both(
    html_template: str,
    text_template: str,
    recipient: Mailbox,
    one_click: str | None,
    date: datetime,
    subject: str = "What's Happening — November 2025",
    copy: int = 0,
) -> tuple[bytes | None, bytes | None]:
    """Return (the stencil's bytes, build's bytes) for one recipient; None where each declines."""
    stencil = message.Stencil(
        PUBLICATION,
        MONTH,
        envelope(Mailbox(None, "anyone@example.org"), subject, one_click and "https://x.test/"),
        html_template,
        text_template,
        (GREETING, LINK),
    )
    html_values, text_values = personal(recipient.name, one_click or UNSUBSCRIBE)
    filled = stencil.fill(recipient, one_click, date, html_values, text_values, copy)
    page, text = substitute(html_template, html_values), substitute(text_template, text_values)
    try:
        built = message.build(
            PUBLICATION, MONTH, envelope(recipient, subject, one_click), page, text, date, copy=copy
        ).as_bytes()
    except RenderError:
        built = None
    return filled, built


def substitute(template: str, values: dict[str, str]) -> str:
    """Return `template` with each token's place filled: one pass, no value searched."""
    return re.sub(f"{GREETING}|{LINK}", lambda found: values[found.group()], template)


HTML = (
    '<!DOCTYPE html>\n<html><body style="margin:0">\n'
    f'<p style="font-family:Georgia,serif;color:#1a1a1a">{GREETING}</p>\n'
    + "<h2>Institutional Advancement — 學院</h2><p>"
    + "An announcement = news. " * 12
    + "</p>\n"
    + f'<p><a href="{LINK}">Unsubscribe</a> · <a href="https://x.test/">Feeds</a></p>\n'
    "</body></html>"
)
TEXT = f"{GREETING}\n\nAdvancement\n.\nA line that ends in a space \n\nUnsubscribe: {LINK}\n"
SENT = datetime(2025, 12, 1, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "recipient",
    [
        Mailbox("Chan Tai-man", "chan@example.org"),
        Mailbox(None, "person000001@faculty.example.org"),
        Mailbox("Prof. Chan Tai-man", "chan@example.org"),
        Mailbox("Zoë Müller", "zoe@example.org"),
        Mailbox("陳大文", "chan@example.org"),
        Mailbox("O'Brien, Pat", "pat.obrien+news@example.org"),
        Mailbox("A very long name " * 5, "a.very.long.address.indeed@faculty.example.org"),
    ],
)
@pytest.mark.parametrize("one_click", [None, "https://news.example.edu/u/eyJhIjoxfQ.c2ln"])
def test_stencil_writes_what_build_writes(recipient: Mailbox, one_click: str | None) -> None:
    """Every ordinary subscriber gets the stencil's bytes, identical to the email package's."""
    filled, built = both(HTML, TEXT, recipient, one_click, SENT)
    assert filled is not None
    assert filled == built


@pytest.mark.parametrize("copy", [1, 3])
def test_stencil_writes_a_resent_copy_as_build_does(copy: int) -> None:
    """A resent copy made from the stencil carries the new copy's Message-ID, as build's does."""
    recipient = Mailbox("Chan Tai-man", "chan@example.org")
    filled, built = both(HTML, TEXT, recipient, None, SENT, copy=copy)
    assert filled is not None
    assert filled == built
    assert f".r{copy}@".encode() in filled
    first, _ = both(HTML, TEXT, recipient, None, SENT)
    assert first != filled


def test_stencil_message_reads_back_personalised() -> None:
    """A mail client finds the recipient's own greeting, link, To and Message-ID."""
    one_click = "https://news.example.edu/u/abc"
    filled, _ = both(HTML, TEXT, Mailbox("Zoë Müller", "zoe@example.org"), one_click, SENT)
    assert filled is not None
    parsed = message_from_bytes(filled, policy=policy.default)
    assert parsed["To"] == "Zoë Müller <zoe@example.org>"
    assert parsed["Message-ID"] == message.message_id(PUBLICATION, MONTH, "zoe@example.org")
    assert parsed["List-Unsubscribe"] == f"<{one_click}>, <{UNSUBSCRIBE}>"
    text, page = (part.get_content() for part in parsed.iter_parts())  # type: ignore[attr-defined]
    assert text.startswith("Dear Zoë Müller,")
    assert "Dear Zoë Müller," in page
    assert f'href="{one_click}"' in page
    assert GREETING not in filled.decode("ascii")
    assert LINK not in filled.decode("ascii")
    # RFC 2045: no encoded line longer than 76 characters.
    assert max(len(line) for line in filled.split(b"\r\n")) <= 998
    body = filled.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


@pytest.mark.parametrize(
    "name", [GREETING, LINK, GREETING + LINK, f"{LINK} {GREETING}", LINK + LINK, "TOKEN-" + LINK]
)
def test_a_name_made_of_tokens_is_only_a_name(name: str) -> None:
    """A reader named like a placeholder is greeted by that name, the link only where it was."""
    one_click = "https://news.example.edu/u/abc"
    filled, built = both(HTML, TEXT, Mailbox(name, "chan@example.org"), one_click, SENT)
    assert filled is not None
    assert filled == built
    parsed = message_from_bytes(filled, policy=policy.default)
    text, page = (part.get_content() for part in parsed.iter_parts())  # type: ignore[attr-defined]
    assert text.splitlines()[0] == f"Dear {name},"
    assert f">Dear {name},</p>" in page
    assert (text.count(one_click), page.count(one_click)) == (1, 1)


def test_stencil_declines_what_only_build_can_judge() -> None:
    """A line break in a name, a naive date, a non-ASCII address: build decides (and refuses)."""
    for recipient, date in [
        (Mailbox("Chan\r\nBcc: victim@example.org", "chan@example.org"), SENT),
        (Mailbox("Chan", "chan@example.org"), SENT.replace(tzinfo=None)),
        (Mailbox("Chan", "chän@example.org"), SENT),
    ]:
        filled, _ = both(HTML, TEXT, recipient, None, date)
        assert filled is None


names = st.one_of(
    st.none(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30),
    st.text(st.sampled_from("abcXYZ .,'\"()<>@:;[]\\-=?+é學"), max_size=30),
    # Names made of the tokens and their pieces: a value is never taken for a token.
    st.lists(
        st.sampled_from([GREETING, LINK, "TOKEN-", "GREETING", "LINK", " ", "é"]), max_size=5
    ).map("".join),
)
atoms = st.text(st.sampled_from("abcxyz019!#$%&'*+/=?^_`{|}~-"), min_size=1, max_size=10)
addresses = st.one_of(
    st.builds(lambda a, b, d: f"{a}.{b}@{d}.example.org", atoms, atoms, atoms.filter(str.isalnum)),
    st.builds(lambda a: f"{a}@example.org", atoms),
    st.sampled_from(['"q q"@example.org', "a..b@example.org", "x@[127.0.0.1]", "ü@example.org"]),
)
lines = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)
templates = st.lists(
    st.one_of(
        lines, st.builds(lambda a, t, b: a + t + b, lines, st.sampled_from([GREETING, LINK]), lines)
    ),
    max_size=12,
).map("\n".join)
dates = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5))]),
)
one_clicks = st.one_of(
    st.none(),
    st.builds(
        lambda t: f"https://news.example.edu/u/{t}",
        st.text(st.characters(codec="ascii"), max_size=60),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, addresses, one_clicks, dates, templates, templates, st.text(max_size=60))
@example(None, "a@example.org", None, SENT, f"{GREETING}", f"x\n{LINK}", "s")
def test_stencil_never_differs_from_build(
    name: str | None,
    address: str,
    one_click: str | None,
    date: datetime,
    html_template: str,
    text_template: str,
    subject: str,
) -> None:
    """Whatever the name, address, link, date or text: the stencil's bytes are build's, or None."""
    try:
        filled, built = both(
            html_template, text_template, Mailbox(name, address), one_click, date, subject
        )
    except RenderError:
        return  # the subject itself cannot be a header: no stencil, and build refuses it too
    if filled is not None:
        assert filled == built
        # Undotted exactly when no line starts with a dot: the transport then does not look.
        assert isinstance(filled, message.Undotted) == (not dotted(filled))


def dotted(data: bytes) -> bool:
    return data.startswith(b".") or b"\n." in data


def test_only_a_message_without_a_line_that_starts_with_a_dot_is_undotted() -> None:
    """A recipient whose own line starts with a dot (the greeting's continuation after a soft
    break, here) gets plain bytes, which the transport dot-stuffs; the others Undotted ones."""
    text = f"{GREETING}\n\nUnsubscribe: {LINK}\n"
    long = "A" * 70 + ".dot"  # "Dear AAA...": broken after 75 characters, right before the dot
    for name, expected in [("Chan Tai-man", False), (long, True), (".Chan", False)]:
        recipient = Mailbox(name, "c@example.org")
        filled, built = both(HTML.replace("·", ""), text, recipient, None, SENT)
        assert filled == built
        assert filled is not None
        assert dotted(filled) == expected
        assert isinstance(filled, message.Undotted) == (not expected)
    # A constant line with a dot: nobody's message is Undotted.
    filled, _ = both(HTML, TEXT, Mailbox("Chan Tai-man", "c@example.org"), None, SENT)
    assert filled is not None
    assert b"\r\n.\r\n" in filled
    assert not isinstance(filled, message.Undotted)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=120).map(lambda line: line.replace(b"\r", b"").replace(b"\n", b"")))
@example(b"")
@example(b"x" * 76)
@example(b"x" * 77)
@example(b"ends in a space ")
@example(b"tab\t")
@example(b"a = b")
def test_a_line_is_encoded_as_the_email_package_encodes_it(line: bytes) -> None:
    """The quick look at a line that needs no encoding gives what quoted-printable gives."""
    assert message._encoded_line(line) == message._quoted_printable([line])


def test_a_skeleton_it_does_not_understand_makes_it_decline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the email package ever write a header differently, build makes every message."""
    monkeypatch.setattr(message, "format_datetime", lambda date: "somehow else")
    filled, built = both(HTML, TEXT, Mailbox("Chan Tai-man", "chan@example.org"), None, SENT)
    assert filled is None
    assert built is not None


def test_one_stencil_gives_each_recipient_their_own_date_and_lines() -> None:
    """What a Stencil keeps from one recipient to the next (a Date, an encoded line) is not
    handed to the next one when theirs differs, even by a time zone."""
    stencil = message.Stencil(
        PUBLICATION,
        MONTH,
        envelope(Mailbox(None, "anyone@example.org"), "Subject", None),
        HTML,
        TEXT,
        (GREETING, LINK),
    )
    moment = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
    hong_kong = moment.astimezone(timezone(timedelta(hours=8)))
    recipients = [
        (Mailbox("Chan Tai Man", "chan@example.org"), moment),
        (Mailbox("Lee Ka Wai", "lee@example.org"), hong_kong),
        (Mailbox("Chan Tai Man", "chan2@example.org"), hong_kong),
        (Mailbox(None, "anon@example.org"), moment + timedelta(microseconds=999_999)),
        (Mailbox(None, "anon2@example.org"), moment + timedelta(seconds=1)),
        (Mailbox(None, "early@example.org"), datetime(1969, 12, 31, 23, 59, 59, 500, tzinfo=UTC)),
        (Mailbox(None, "epoch@example.org"), datetime(1970, 1, 1, tzinfo=UTC)),
    ]
    for recipient, date in recipients:
        html_values, text_values = personal(recipient.name, UNSUBSCRIBE)
        filled = stencil.fill(recipient, None, date, html_values, text_values)
        built = message.build(
            PUBLICATION, MONTH, envelope(recipient, "Subject", None), *both_parts(recipient), date
        ).as_bytes()
        assert filled == built


def both_parts(recipient: Mailbox) -> tuple[str, str]:
    html_values, text_values = personal(recipient.name, UNSUBSCRIBE)
    return substitute(HTML, html_values), substitute(TEXT, text_values)
