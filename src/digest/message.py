"""Build the email a subscriber receives: multipart/alternative, with list headers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from digest.catalogue import Mailbox, Publication
from digest.errors import RenderError
from digest.months import Month

# Python 3.11.7's email package lets a trailing newline in a header value end the header block
# (CVE-2024-6923), so every value that reaches a header is checked here, never by the library.
_HEADER_BREAKERS = re.compile("[\r\n\x00\x85\u2028\u2029]")

PLACEHOLDER_RECIPIENT = Mailbox("Subscriber", "subscriber@example.org")


@dataclass(frozen=True, slots=True)
class Envelope:
    """The addressing of one digest message."""

    sender: Mailbox
    reply_to: str | None
    recipient: Mailbox
    subject: str
    unsubscribe: str
    # The recipient's own https:// one-click unsubscribe URL (RFC 8058), when the console is public.
    one_click: str | None = None


def header_safe(value: str, what: str) -> str:
    """Return `value` if it cannot break out of its header; raise RenderError otherwise."""
    found = _HEADER_BREAKERS.search(value)
    if found:
        raise RenderError(
            f"{what} contains U+{ord(found.group()):04X}, a line break, and cannot go into an "
            f"email header: {value!r}"
        )
    return value


def address(mailbox: Mailbox, what: str) -> Address:
    """Return a header-safe Address for `mailbox`."""
    name = header_safe((mailbox.name or "").strip(), f"the {what} name")
    addr = header_safe(mailbox.address, f"the {what} address")
    try:
        return Address(display_name=name, addr_spec=addr)
    except (ValueError, IndexError) as exc:
        raise RenderError(f"the {what} address {addr!r} is not valid: {exc}") from exc


def message_id(publication: Publication, month: Month, recipient: str) -> str:
    """Return the Message-ID of `month`'s digest to `recipient`: the same on every attempt."""
    digest = hashlib.sha256(f"{month}\0{recipient.strip().lower()}".encode()).hexdigest()[:24]
    return f"<digest.{month}.{digest}@{publication.host}>"


def list_id(publication: Publication) -> str:
    """Return the List-Id header (RFC 2919): the publication's name and a label on its host."""
    words = re.sub(r"['’]", "", publication.title.lower())  # What's -> whats, not what-s
    label = re.sub(r"[^a-z0-9]+", "-", words).strip("-") or "digest"
    phrase = publication.title.replace("\\", "").replace('"', "")
    return f'"{phrase}" <{label}.{publication.host}>'


def build(
    publication: Publication,
    month: Month,
    envelope: Envelope,
    html: str,
    text: str,
    date: datetime,
) -> EmailMessage:
    """Return the message: text and HTML alternatives, From/To/Subject/Date and list headers."""
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = address(envelope.sender, "sender")
    message["To"] = address(envelope.recipient, "recipient")
    if envelope.reply_to:
        message["Reply-To"] = header_safe(envelope.reply_to, "the reply-to address")
    message["Subject"] = header_safe(envelope.subject, "the subject")
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id(publication, month, envelope.recipient.address)
    message["List-Id"] = header_safe(list_id(publication), "the list id")
    unsubscribe = header_safe(envelope.unsubscribe, "the unsubscribe address")
    targets = [unsubscribe]
    if envelope.one_click:
        targets.insert(0, header_safe(envelope.one_click, "the one-click unsubscribe URL"))
    message["List-Unsubscribe"] = ", ".join(f"<{target}>" for target in targets)
    if any(target.startswith("https://") for target in targets):
        # RFC 8058: mail clients may unsubscribe with one POST, without opening a page.
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    if envelope.one_click:
        # A one-click URL is longer than 78 characters: folded at that width, the email package
        # would turn it into RFC 2047 encoded words, which no mail client reads as a URL. Header
        # lines may be 998 long (RFC 5322); the parts, already encoded, are not affected.
        message.policy = message.policy.clone(max_line_length=998)
    return message
