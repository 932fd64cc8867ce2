"""The use case `digest doctor`: will this set-up's mail be delivered, and if not, what to fix.

`doctor` returns a checklist, one `Check` a line: the SMTP relay (connect, TLS, login; no mail
sent), the From domain's DNS (SPF, DMARC, the DKIM key), the catalogue against the big
receivers' rules for bulk senders (Gmail's and Yahoo's, RFC 8058 one-click unsubscribe), and
with `ReadBack` a test copy sent and read back from a mailbox. Nothing here prints: the command
line words the list. A check that cannot be made (no relay configured, a resolver that does not
answer) is a line of its own, never an exception; a catalogue that does not load is.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from digest.app.publishing import load
from digest.app.settings import Settings
from digest.errors import DigestError
from digest.months import Month
from digest.publish.catalogue import aligned

if TYPE_CHECKING:
    from digest.mail.dkim import Signer
    from digest.publish.catalogue import Catalogue, Newsletter
    from digest.send.dns import Answer, Lookup


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist: what was looked at, what was found, and the fix when not ok."""

    topic: str
    verdict: Verdict
    found: str
    fix: str = ""


def ok(topic: str, found: str) -> Check:
    return Check(topic, Verdict.OK, found)


def warn(topic: str, found: str, fix: str) -> Check:
    return Check(topic, Verdict.WARN, found, fix)


def fail(topic: str, found: str, fix: str) -> Check:
    return Check(topic, Verdict.FAIL, found, fix)


@dataclass(frozen=True, slots=True)
class ReadBack:
    """`--to ADDR --read URL`: where the test copy goes, the mailbox it is read back from."""

    to: str
    mailbox: str
    within: float = 60.0  # seconds to wait for the copy
    every: float = 2.0  # seconds between looks


def doctor(
    settings: Settings,
    now: datetime,
    *,
    read: ReadBack | None = None,
    timeout: float = 5.0,
    pause: Callable[[float], None] | None = None,
) -> list[Check]:
    """Check the set-up end to end and return the checklist (`timeout`: each DNS answer's bound).

    `pause` is how the read-back waits between looks (time.sleep unless given).
    """
    from digest.send import mailbox
    from digest.send.dns import Lookup

    if read is not None:  # a mistyped URL stops here, before anything is looked up or sent
        mailbox.parse_url(read.mailbox, settings.imap_password)
    catalogue = load(settings)
    newsletter = catalogue.mailing()
    domain = newsletter.sender.address.rpartition("@")[2].lower()
    lookup = Lookup(settings.dns_server, timeout=timeout)
    relay = _relay_host(settings)
    checks = smtp(settings)
    # SPF is judged on the envelope sender's domain: the VERP return path's, with bounces.
    if newsletter.bounces is not None:
        envelope = newsletter.bounces.address.rpartition("@")[2].lower()
        checks += spf(lookup, envelope, relay, "newsletter.bounces.address")
    else:
        checks += spf(lookup, domain, relay)
    checks += dmarc(lookup, domain)
    checks += dkim_dns(lookup, settings, newsletter, domain)
    checks += rules(settings, newsletter, domain)
    if read is not None:
        checks += read_back(settings, catalogue, read, lookup, now, pause)
    return checks


# -- the relay -----------------------------------------------------------------------------------

SMTP_FIXES = {
    "connect": "check the host and port in DIGEST_SMTP_URL and that this machine may reach them "
    "(587 for STARTTLS, 465 for smtps://)",
    "tls": "the relay's certificate must be valid for its host name and issued by an authority "
    "this machine trusts (install the campus CA, or set SSL_CERT_FILE), or use the port that "
    "offers TLS",
    "login": "check the user name in DIGEST_SMTP_URL and DIGEST_SMTP_PASSWORD (Microsoft 365 "
    "and Google refuse plain passwords for most accounts: use an app password or OAuth)",
}
SMTP_TOPICS = {"connect": "SMTP", "tls": "SMTP TLS", "login": "SMTP login"}
SMTP_TIMEOUT = 15.0  # seconds for each reply of the relay


def smtp(settings: Settings) -> list[Check]:
    """Open a session with the relay, as a send does, and send nothing."""
    from digest.send import transport

    if settings.uses_outbox:
        return [
            fail(
                "SMTP",
                "DIGEST_SMTP_URL is not set: mail only goes to outbox/ (a rehearsal)",
                "set DIGEST_SMTP_URL to your relay, like smtp://digest@smtp.example.edu:587",
            )
        ]
    try:
        parsed = transport.parse_url(
            str(settings.smtp_url), settings.smtp_password, settings.smtp_token_command
        )
    except DigestError as exc:
        return [fail("SMTP", str(exc), "correct DIGEST_SMTP_URL")]
    checks = []
    # A relay silent for this long will not do for a send either; the doctor says so sooner.
    probed = dataclasses.replace(parsed, timeout=SMTP_TIMEOUT)
    for step in transport.probe(probed, workdir=settings.home):
        topic = SMTP_TOPICS[step.step]
        if step.passed or (step.passed is None and step.step == "login"):
            checks.append(ok(topic, step.detail))
        elif step.passed is None:
            checks.append(
                warn(
                    topic,
                    f"{step.detail}: the password and every message cross the network in clear",
                    "use the relay's port with TLS (587 with STARTTLS, or smtps:// on 465)",
                )
            )
        else:
            checks.append(fail(topic, step.detail, SMTP_FIXES[step.step]))
    return checks


def _relay_host(settings: Settings) -> str | None:
    from digest.send import transport

    if settings.uses_outbox:
        return None
    try:
        parsed = transport.parse_url(
            str(settings.smtp_url), settings.smtp_password, settings.smtp_token_command
        )
    except DigestError:
        return None
    return parsed.host.lower()


# -- SPF -----------------------------------------------------------------------------------------

# Relays whose sending hosts are named by one include: (their providers' documentation).
KNOWN_RELAYS = {
    "smtp.office365.com": ("Microsoft 365", "spf.protection.outlook.com"),
    "smtp.gmail.com": ("Google", "_spf.google.com"),
    "smtp-relay.gmail.com": ("Google Workspace", "_spf.google.com"),
}


def _resolver_fix(lookup: Lookup) -> str:
    return (
        f"make sure {lookup.describe()} answers from this machine (DIGEST_DNS_SERVER picks "
        "another), then run the doctor again"
    )


def _missing(lookup: Lookup, answer_kind: str, fix: str) -> str:
    return _resolver_fix(lookup) if answer_kind in ("timeout", "error") else fix


def spf(
    lookup: Lookup, domain: str, relay: str | None, setting: str = "newsletter.from"
) -> list[Check]:
    """Check the SPF record of the envelope sender's `domain` (the From address's, or with
    newsletter.bounces the return path's, named by `setting`): one, listing the relay, ending in
    ~all or -all."""
    answer = lookup.txt(domain)
    records = [v for v in answer.values if re.match(r"(?i)v=spf1(\s|$)", v)]
    example = f'"v=spf1 {_include_for(relay) or "ip4:RELAY-ADDRESS"} -all"'
    if answer.kind == "nxdomain":
        return [
            fail(
                "SPF",
                answer.describe(),
                f"the envelope sender's domain must exist: check {setting} in the catalogue",
            )
        ]
    if not records:
        why = f"{domain} has no SPF record (no TXT record starting v=spf1)"
        if answer.kind in ("timeout", "error"):
            why = answer.describe()
        fix = f"publish one TXT record at {domain}: {example}"
        return [fail("SPF", why, _missing(lookup, answer.kind, fix))]
    if len(records) > 1:
        return [
            fail(
                "SPF",
                f"{domain} has {len(records)} SPF records; receivers treat that as an error",
                "merge them into one TXT record starting v=spf1",
            )
        ]
    record = records[0]
    terms = record.split()[1:]
    redirect = next((t[9:] for t in terms if t.lower().startswith("redirect=")), None)
    checks = [ok("SPF", f"{domain}: {record}")]
    if redirect and not any(_mechanism(t)[1] == "all" for t in terms):
        followed = [v for v in lookup.txt(redirect).values if v.lower().startswith("v=spf1")]
        terms += followed[0].split()[1:] if len(followed) == 1 else []
    checks.append(_spf_relay(lookup, domain, terms, relay))
    checks.append(_spf_all(domain, terms))
    return checks


def _include_for(relay: str | None) -> str | None:
    known = KNOWN_RELAYS.get(relay or "")
    return f"include:{known[1]}" if known else None


_TERM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.-]*)(?:[:=](.*)|(/.*))?")


def _mechanism(term: str) -> tuple[str, str, str]:
    """Split an SPF term into qualifier, name (lower case) and argument: ~all, ip4:10.0.0.0/8."""
    match = _TERM.fullmatch(term)
    if match is None:
        return "+", term.lower(), ""
    return match.group(1) or "+", match.group(2).lower(), match.group(3) or match.group(4) or ""


def _spf_relay(lookup: Lookup, domain: str, terms: list[str], relay: str | None) -> Check:
    topic = "SPF relay"
    if relay is None:
        return warn(
            topic,
            "cannot tell: no relay is configured (DIGEST_SMTP_URL)",
            "set DIGEST_SMTP_URL, then run the doctor again",
        )
    mechanisms = [_mechanism(t) for t in terms]
    known = KNOWN_RELAYS.get(relay)
    if known:
        provider, include = known
        if any(q != "-" and n == "include" and a.lower() == include for q, n, a in mechanisms):
            return ok(topic, f"include:{include} covers {provider} ({relay})")
        return fail(
            topic,
            f"the record does not include:{include}, the hosts {provider} ({relay}) sends from",
            f"add include:{include} to the record at {domain}, before its all",
        )
    addresses = _relay_addresses(lookup, relay)
    if not addresses:
        return warn(
            topic,
            f"cannot tell: {relay} has no address this resolver knows",
            "check DIGEST_SMTP_URL's host name",
        )
    for qualifier, name, argument in mechanisms:
        if qualifier == "-" or name not in ("ip4", "ip6", "a", "mx"):
            continue
        covered = _covers(lookup, domain, name, argument, addresses)
        if covered:
            term = name + (f":{argument}" if argument else "")
            shown = relay if covered == relay else f"{relay} ({covered})"
            return ok(topic, f"{term} covers the relay {shown}")
    listed = ", ".join(addresses)
    followed = [f"{n}:{a}" for _, n, a in mechanisms if n in ("include", "exists", "redirect")]
    if followed:
        return warn(
            topic,
            f"cannot tell: the relay {relay} ({listed}) is not listed directly, and "
            f"{', '.join(followed)} was not followed",
            f"if those do not name the relay's sending hosts, add ip4:/ip6: for them at {domain}",
        )
    return warn(
        topic,
        f"the record lists none of the relay {relay}'s addresses ({listed})",
        f"add ip4:/ip6: for the relay's sending hosts (or the include: its operator gives) at "
        f"{domain}, unless the relay hands mail on to hosts that are listed",
    )


def _relay_addresses(lookup: Lookup, relay: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(relay.strip("[]")))]
    except ValueError:
        return list(lookup.addresses(relay).values)


def _covers(lookup: Lookup, domain: str, name: str, argument: str, addresses: list[str]) -> str:
    """Return the relay address the mechanism covers (one level of a and mx), else ""."""
    target, _, cidr = argument.partition("/")
    if name in ("ip4", "ip6"):
        networks = [_network(argument)]
    else:
        host = target or domain
        names = [host] if name == "a" else list(lookup.mx(host).values)
        suffix = f"/{cidr}" if cidr else ""
        networks = [
            _network(f"{value}{suffix}") for n in names for value in lookup.addresses(n).values
        ]
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if any(network is not None and ip in network for network in networks):
            return address
    return ""


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _spf_all(domain: str, terms: list[str]) -> Check:
    topic = "SPF all"
    ending = next((t for t in reversed(terms) if _mechanism(t)[1] == "all"), None)
    fix = f"end the record at {domain} with -all (or ~all)"
    if ending in ("-all", "~all"):
        return ok(topic, f"{ending}: receivers distrust mail from hosts the record does not list")
    if ending == "?all":
        return warn(topic, "?all: hosts the record does not list are neutral, not refused", fix)
    if ending is None:
        return warn(topic, "the record has no all: hosts it does not list are neutral", fix)
    return fail(topic, f"{ending}: any host on the internet may send as {domain}", fix)


# -- DMARC ---------------------------------------------------------------------------------------


def dmarc(lookup: Lookup, domain: str) -> list[Check]:
    """Check the DMARC record of the From domain, or failing that of a parent domain."""
    topic = "DMARC"
    name = f"_dmarc.{domain}"
    example = f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"'
    fix = (
        f"publish a TXT record at {name}: {example} to begin, then p=quarantine once the "
        "reports show your mail passes (Gmail, Yahoo and Outlook.com require DMARC of bulk senders)"
    )
    found, where, first = _dmarc_record(lookup, domain)
    if found is None and first.kind in ("timeout", "error"):
        return [fail(topic, first.describe(), _resolver_fix(lookup))]
    if found is None:
        return [fail(topic, f"no DMARC record at {name} ({first.describe()})", fix)]
    if len(found) > 1:
        return [
            fail(topic, f"{where} has {len(found)} DMARC records; receivers use none", "keep one")
        ]
    tags = _tags(found[0])
    inherited = where != name
    policy = (tags.get("sp") if inherited else None) or tags.get("p", "")
    at = f"{where}{' (a parent domain)' if inherited else ''}"
    rua = tags.get("rua")
    reports = f"aggregate reports to {rua}" if rua else "no rua=: nobody receives reports"
    if policy.lower() not in ("none", "quarantine", "reject"):
        return [
            fail(
                topic,
                f"{at} has no valid policy (p={policy or 'missing'})",
                f"give the record at {where} a policy: p=none, p=quarantine or p=reject",
            )
        ]
    if policy.lower() == "none":
        return [
            warn(
                topic,
                f"p=none at {at} ({reports}): receivers report but enforce nothing; Gmail, "
                "Yahoo and Outlook.com accept p=none from bulk senders",
                "once the reports show your mail passes, move to p=quarantine, then p=reject",
            )
        ]
    return [ok(topic, f"p={policy.lower()} at {at} ({reports})")]


def _dmarc_record(lookup: Lookup, domain: str) -> tuple[list[str] | None, str, Answer]:
    """Return the DMARC records of the nearest of `domain` and its parents, where, and the first
    answer (for saying why there is none).

    No public suffix list: the parents are asked down to two labels (example.edu.hk asks
    _dmarc.example.edu.hk, then _dmarc.edu.hk), which finds an organisation's record above a
    subdomain From; a public suffix has no record, so asking it costs a lookup and finds none.
    """
    labels = domain.split(".")
    first = None
    for start in range(len(labels) - 1):
        name = "_dmarc." + ".".join(labels[start:])
        answer = lookup.txt(name)
        first = first or answer
        if answer.kind in ("timeout", "error"):
            return None, name, answer
        records = [v for v in answer.values if re.match(r"v\s*=\s*DMARC1\s*(;|$)", v)]
        if records:
            return records, name, first
    assert first is not None  # noqa: S101 -- a domain has two labels or more
    return None, f"_dmarc.{domain}", first


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, equals, value = part.partition("=")
        if equals:
            tags[key.strip().lower()] = value.strip()
    return tags


# -- DKIM: the key in DNS and the one in DIGEST_DKIM_KEY ------------------------------------------


def dkim_dns(
    lookup: Lookup, settings: Settings, newsletter: Newsletter, domain: str
) -> list[Check]:
    """Check that digest signs (or say who must) and that the published key is the key's."""
    topic = "DKIM"
    signing = newsletter.dkim
    if signing is None and settings.dkim_key is None:
        return [
            warn(
                topic,
                f"digest does not sign (no newsletter.dkim): the relay must sign as {domain}",
                "set newsletter.dkim and DIGEST_DKIM_KEY to sign here, or turn on DKIM for "
                f"{domain} at the relay (Microsoft 365 and Google Workspace offer it); "
                "--to ADDR --read URL shows whether copies arrive signed",
            )
        ]
    if signing is None:
        return [
            fail(
                topic,
                "DIGEST_DKIM_KEY is set, but the catalogue has no newsletter.dkim: "
                "nothing is signed",
                f"add newsletter.dkim: {{domain: {domain}, selector: SELECTOR}} with the selector "
                "the public key is published under",
            )
        ]
    name = f"{signing.selector}._domainkey.{signing.domain}"
    checks = []
    signer: Signer | None = None
    if settings.dkim_key is None:
        checks.append(
            fail(
                topic,
                f"newsletter.dkim names {name}, but DIGEST_DKIM_KEY is not set: nothing is signed",
                "set DIGEST_DKIM_KEY to the PEM file of the private key published there",
            )
        )
    else:
        from digest.mail import dkim as signing_key

        try:
            signer = signing_key.load(settings.dkim_key, signing)
        except DigestError as exc:
            checks.append(fail(topic, str(exc), "point DIGEST_DKIM_KEY at the PEM private key"))
    checks.append(_published_key(lookup, name, signer))
    return checks


def _published_key(lookup: Lookup, name: str, signer: Signer | None) -> Check:
    topic = "DKIM key"
    answer = lookup.txt(name)
    record = signer.record if signer else "v=DKIM1; k=rsa; p=..."
    fix = f'publish the public half of DIGEST_DKIM_KEY at {name} as a TXT record "{record}"'
    if not answer.found:
        return fail(
            topic, f"no key at {name}: {answer.describe()}", _missing(lookup, answer.kind, fix)
        )
    if len(answer.values) > 1:
        return fail(topic, f"{name} has {len(answer.values)} TXT records", "keep one key there")
    tags = _tags(answer.values[0])
    if not tags.get("p"):
        return fail(topic, f"the key at {name} is empty (p=): revoked", fix)
    if signer is None:
        return ok(topic, f"a key is published at {name}")
    matched, why = key_matches(signer, lookup)
    if matched:
        return ok(topic, f"{name} holds the public half of DIGEST_DKIM_KEY ({why})")
    return fail(
        topic,
        f"the key at {name} does not match DIGEST_DKIM_KEY ({why})",
        f"publish the public half of DIGEST_DKIM_KEY at {name}, or point DIGEST_DKIM_KEY at the "
        "private key that was published",
    )


# -- the big receivers' rules ---------------------------------------------------------------------


def rules(settings: Settings, newsletter: Newsletter, domain: str) -> list[Check]:
    """Check the catalogue against Gmail's and Yahoo's rules for bulk senders (and RFC 8058)."""
    return [_one_click(settings, newsletter), _from_aligned(newsletter, domain)]


def _one_click(settings: Settings, newsletter: Newsletter) -> Check:
    topic = "one-click"
    given = newsletter.unsubscribe
    rules = "(32+ characters, the same for serve, send and schedule)"
    if settings.public_url is None:
        fix = (
            "set DIGEST_PUBLIC_URL to the https:// address of `digest serve` and "
            f"DIGEST_SECRET_KEY {rules}, so each message carries its own one-click link and "
            "List-Unsubscribe-Post (RFC 8058)"
        )
        if given.startswith("https://"):
            found = (
                f"DIGEST_PUBLIC_URL is not set: every message offers the one page {given}, "
                "which cannot tell who asked, so a one-click POST unsubscribes nobody"
            )
        else:
            found = (
                f"DIGEST_PUBLIC_URL is not set: messages offer only {given}, and Gmail and "
                "Yahoo require one-click unsubscribe of bulk senders"
            )
        return fail(topic, found, fix)
    try:
        settings.one_click()
    except DigestError:
        return fail(
            topic,
            "DIGEST_PUBLIC_URL is set, but DIGEST_SECRET_KEY is missing or too short to sign links",
            f"set DIGEST_SECRET_KEY {rules}: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    link = f"{settings.public_url.rstrip('/')}/unsubscribe/..."
    return ok(topic, f"List-Unsubscribe {link} with List-Unsubscribe-Post (RFC 8058), and {given}")


def _from_aligned(newsletter: Newsletter, domain: str) -> Check:
    topic = "From"
    address = newsletter.sender.address
    spf = "the envelope sender is the same address, so SPF aligns"
    if newsletter.bounces is not None:  # VERP: the envelope sender is bounces+TOKEN@domain
        bounce_domain = newsletter.bounces.address.rpartition("@")[2]
        shape = newsletter.bounces.address.replace("@", "+...@")
        spf = (
            f"the envelope sender is {shape} (newsletter.bounces), "
            + ("aligned, so SPF aligns when that domain's SPF allows the relay"
               if aligned(bounce_domain, address.rpartition("@")[2])
               else "another domain, so SPF cannot align: DMARC rests on DKIM alone")
        )  # fmt: skip
    if newsletter.dkim is None:
        return ok(topic, f"{address}: {spf}; DKIM alignment is the relay's signature's (--read)")
    # The catalogue refuses a signing domain that does not align with From (items.yaml's line).
    signer = newsletter.dkim.domain
    return ok(topic, f"{address}: signed as d={signer} (newsletter.dkim), aligned; {spf}")


# -- the test copy, read back ---------------------------------------------------------------------


def read_back(
    settings: Settings,
    catalogue: Catalogue,
    read: ReadBack,
    lookup: Lookup,
    now: datetime,
    pause: Callable[[float], None] | None,
) -> list[Check]:
    """Send a [TEST] copy of the latest month to `read.to`, find it in the mailbox, check it."""
    from digest.app import sending
    from digest.errors import MailboxError
    from digest.mail import newsletter as mail
    from digest.send import mailbox as mailboxes

    topic = "test copy"
    where = mailboxes.parse_url(read.mailbox, settings.imap_password)
    if settings.uses_outbox:
        return [
            fail(topic, "not sent: a copy in outbox/ reaches no mailbox", "set DIGEST_SMTP_URL")
        ]
    issues = mail.issues(catalogue, now)
    if not issues:
        return [fail(topic, "nothing to send: no item is published", "publish an item first")]
    try:
        box = mailboxes.Mailbox(where)
    except MailboxError as exc:
        return [fail("mailbox", str(exc), "check the --read URL and DIGEST_IMAP_PASSWORD")]
    with box:
        try:
            sent = sending.send_tests(settings, issues[0].month, (read.to,), now)
        except DigestError as exc:
            return [fail(topic, f"not sent: {exc}", "see the SMTP lines above")]
        if sent.failures:
            return [fail(topic, f"refused: {sent.failures[0]}", f"check {read.to} is right")]
        message_id = sent.message_ids[read.to]
        checks = [ok(topic, f"sent {_month_name(issues[0].month)} to {read.to}: {message_id}")]
        try:
            raw = mailboxes.wait_for(
                box, message_id, within=read.within, every=read.every, pause=pause or time.sleep
            )
        except MailboxError as exc:  # the session broke off while waiting
            return [*checks, fail("received", str(exc), "run the doctor again")]
    if raw is None:
        return [
            *checks,
            fail(
                "received",
                f"not in {where.describe()} after {read.within:g} s",
                f"check that mail to {read.to} lands in that folder (a spam folder: name it in "
                "the URL), and look for a bounce in the sender's mailbox",
            ),
        ]
    checks.append(ok("received", f"in {where.describe()}"))
    domain = catalogue.mailing().sender.address.rpartition("@")[2].lower()
    return checks + received(raw, domain, lookup)


def _month_name(month: Month) -> str:
    return f"the {month} digest"


def received(raw: bytes, domain: str, lookup: Lookup) -> list[Check]:
    """Check a received copy: its DKIM signature and what it covers, and the receiver's verdict."""
    from email import message_from_bytes, policy

    parsed = message_from_bytes(raw, policy=policy.compat32)
    signatures = [_tags(" ".join(str(v).split())) for v in parsed.get_all("DKIM-Signature") or []]
    checks = []
    if not signatures:
        checks.append(
            fail(
                "DKIM signature",
                "the received copy carries no DKIM-Signature",
                "turn on DKIM: newsletter.dkim and DIGEST_DKIM_KEY, or signing at the relay",
            )
        )
    else:
        checks += _signature(raw, signatures, domain, lookup, parsed.get("List-Unsubscribe-Post"))
    return checks + _authentication_results(parsed.get_all("Authentication-Results") or [])


def _signature(
    raw: bytes, signatures: list[dict[str, str]], domain: str, lookup: Lookup, post: object
) -> list[Check]:
    results = [dkim_verify(raw, index, lookup) for index in range(len(signatures))]
    order = sorted(
        range(len(signatures)),
        key=lambda i: (not results[i][0], not aligned(signatures[i].get("d", ""), domain)),
    )
    best = order[0]
    tags, (verified, why) = signatures[best], results[best]
    signer = tags.get("d", "").lower()
    named = f"d={signer}, s={tags.get('s', '')}"
    if verified:
        first = ok("DKIM signature", f"verifies ({named}, {tags.get('a', '')})")
    else:
        first = fail(
            "DKIM signature",
            f"does not verify ({named}): {why}",
            "compare the DKIM key line above; a relay that adds a footer breaks the signature",
        )
    if aligned(signer, domain):
        second = ok("DKIM alignment", f"d={signer} aligns with the From domain {domain}")
    else:
        second = fail(
            "DKIM alignment",
            f"d={signer} does not align with the From domain {domain}",
            f"sign as {domain} (newsletter.dkim.domain, or the relay's DKIM set-up)",
        )
    signed = {h.strip().lower() for h in tags.get("h", "").split(":")}
    wanted = ("list-unsubscribe", "list-unsubscribe-post")
    left = [h for h in wanted if h not in signed]
    if post is None:
        third = fail(
            "DKIM headers",
            "the copy has no List-Unsubscribe-Post (one-click is off: see the one-click line)",
            "set DIGEST_PUBLIC_URL and DIGEST_SECRET_KEY",
        )
    elif left:
        third = fail(
            "DKIM headers",
            f"h= leaves out {' and '.join(left)}: receivers will not offer one-click (RFC 8058)",
            "sign both list headers (digest's own signing does; OpenDKIM's default list leaves "
            "List-Unsubscribe-Post out: add it to its SignHeaders)",
        )
    else:
        third = ok("DKIM headers", "h= covers List-Unsubscribe and List-Unsubscribe-Post")
    return [first, second, third]


_RESULTS = re.compile(r"\b(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)


def _authentication_results(headers: list[str]) -> list[Check]:
    topic = "receiver"
    if not headers:
        return [ok(topic, "the receiving server added no Authentication-Results")]
    checks = []
    for header in headers:
        text = " ".join(str(header).split())
        said = {(m.group(1).lower(), m.group(2).lower()) for m in _RESULTS.finditer(text)}
        bad = sorted(f"{k}={v}" for k, v in said if v in ("fail", "permerror", "temperror"))
        soft = sorted(f"{k}={v}" for k, v in said if v in ("softfail", "neutral", "none"))
        shown = text if len(text) <= 160 else text[:157] + "..."
        fix = "see the SPF, DMARC and DKIM lines above for which record to correct"
        if bad:
            checks.append(fail(topic, f"Authentication-Results: {shown}", fix))
        elif soft:
            checks.append(warn(topic, f"Authentication-Results: {shown}", fix))
        else:
            checks.append(ok(topic, f"Authentication-Results: {shown}"))
    return checks


def dkim_txt(lookup: Lookup) -> Callable[..., bytes | None]:
    """Return dkimpy's `dnsfunc`: TXT records from the doctor's resolver."""
    import dkim

    def txt(name: bytes, timeout: float = 5.0) -> bytes | None:
        answer = lookup.txt(name.decode("ascii", "replace").rstrip("."))
        if answer.kind in ("timeout", "error"):
            raise dkim.DnsTimeoutError(answer.describe())
        return answer.values[0].encode() if answer.values else None

    return txt


_NO_MATCH = "the signature does not match the message"


def dkim_verify(raw: bytes, index: int, lookup: Lookup) -> tuple[bool, str]:
    """Verify the message's `index`th DKIM signature with dkimpy; return whether, and why not."""
    import dkim

    try:
        verified = dkim.DKIM(raw, minkey=1024).verify(idx=index, dnsfunc=dkim_txt(lookup))
    except dkim.DKIMException as exc:
        return False, str(exc) or type(exc).__name__
    return bool(verified), "" if verified else _NO_MATCH


def key_matches(signer: Signer, lookup: Lookup) -> tuple[bool, str]:
    """Sign a probe as every message is signed, and verify it with the published key."""
    from digest.mail.dkim import SigningError

    probe = (
        f"From: doctor@{signer.domain}\r\nTo: doctor@{signer.domain}\r\n"
        "Subject: digest doctor\r\n\r\nA probe signed with DIGEST_DKIM_KEY.\r\n"
    ).encode()
    try:
        signed = signer.sign(probe)
    except SigningError as exc:
        return False, str(exc)
    verified, why = dkim_verify(signed, 0, lookup)
    if verified:
        return True, signer.algorithm
    if why == _NO_MATCH:
        why = "a probe signed with DIGEST_DKIM_KEY does not verify with it"
    return False, why
