"""Bounce messages as servers write them, for the `digest bounces` tests: DSNs, ARF, others."""

from __future__ import annotations

from email.utils import make_msgid


def dsn(
    to: str,
    recipient: str,
    status: str,
    *,
    message_id: str = "<digest.2025-11.000000000000000000000000@example.edu>",
    name: str = "",
) -> bytes:
    """Return an RFC 3464 delivery status notification, as Postfix writes one, delivered to `to`
    (a VERP address, say) about `recipient`, with the enhanced `status` ("5.1.1", "4.2.2")."""
    action = "failed" if status.startswith("5") else "delayed"
    reply = "550 5.1.1 User unknown" if status.startswith("5") else "452 4.2.2 Mailbox full"
    own = make_msgid(idstring=name or None, domain="mx1.provost.example.edu")
    return f"""Return-Path: <>
Delivered-To: {to}
Date: Tue, 2 Dec 2025 09:12:31 +0800
From: MAILER-DAEMON@mx1.provost.example.edu (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b-{name}"
Message-Id: {own}

--b-{name}
Content-Type: text/plain; charset=utf-8

This is the mail system at host mx1.provost.example.edu.

<{recipient}>: host mx.example.org[192.0.2.25] said: {reply}

--b-{name}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.provost.example.edu

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {reply}

--b-{name}
Content-Type: text/rfc822-headers

Return-Path: <{to}>
From: Office of the Provost <provost@example.edu>
To: {recipient}
Subject: What's Happening - November 2025
Message-ID: {message_id}

--b-{name}--
""".replace("\n", "\r\n").encode()


def complaint(to: str, recipient: str, original_sender: str) -> bytes:
    """Return an RFC 5965 feedback report (a spam complaint) about the digest to `recipient`."""
    return f"""Return-Path: <scomp@aol.net>
From: AOL Feedback Loop <scomp@aol.net>
To: {to}
Subject: Email Feedback Report
Date: Wed, 3 Dec 2025 03:14:15 -0500
Message-ID: <arf-{recipient.partition("@")[0]}@aol.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf"

--arf
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report.

--arf
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: AOL SComp
Version: 1
Original-Mail-From: <{original_sender}>
Original-Rcpt-To: <{recipient}>

--arf
Content-Type: message/rfc822
Content-Disposition: inline

Return-Path: <{original_sender}>
From: Office of the Provost <provost@example.edu>
To: {recipient}
Subject: What's Happening - November 2025
Message-ID: <digest.2025-11.ffffffffffffffffffffffff@example.edu>

The November digest.

--arf--
""".replace("\n", "\r\n").encode()


AUTOREPLY = b"""From: Lam Wing Sze <lam.wingsze@example.org>
To: provost@example.edu
Subject: Automatic reply: What's Happening - November 2025
Auto-Submitted: auto-replied
Message-ID: <away-1@example.org>
Date: Tue, 2 Dec 2025 10:00:00 +0800

I am away until January.
""".replace(b"\n", b"\r\n")

ORDINARY = (
    b"""From: A Colleague <colleague@example.edu>
To: bounces@provost.example.edu
Subject: Lunch on Friday?
Message-ID: <lunch-1@example.edu>
Date: Tue, 2 Dec 2025 11:00:00 +0800

Are you free?
""".replace(b"\n", b"\r\n"),
    b"""From: IT Services <it@example.edu>
To: bounces@provost.example.edu
Subject: Planned maintenance
Message-ID: <maintenance-1@example.edu>
Date: Tue, 2 Dec 2025 12:00:00 +0800

The mail server restarts on Sunday.
""".replace(b"\n", b"\r\n"),
)
