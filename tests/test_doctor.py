"""`digest doctor` end to end: a real SMTP relay (aiosmtpd, STARTTLS, login), a real DNS server
on loopback serving the records each test publishes, and Dovecot as the mailbox read back."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from conftest import free_port
from dnsserver import Zone
from helpers import item, yaml_catalogue
from imapserver import Account, Dovecot

Run = Callable[..., Result]
PASSWORD = "relay-password-for-tests"  # noqa: S105 -- the tests' own
SECRET = "a-secret-key-of-more-than-32-characters"  # noqa: S105 -- the tests' own
NEWSLETTER = (
    "newsletter:\n"
    '  from: "Campus News <news@example.edu>"\n'
    '  subject: "Campus News — {month:%B %Y}"\n'
    '  schedule: "0 9 1 * *"\n'
    '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
)
SIGNING = "  dkim: {domain: example.edu, selector: s1}\n"
SPF = "v=spf1 ip4:127.0.0.1 -all"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.edu"
ALL_LIST_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post",
]  # fmt: skip
# OpenDKIM's default list signs List-Unsubscribe but not List-Unsubscribe-Post.
OPENDKIM_DEFAULT = [h for h in ALL_LIST_HEADERS if h != b"list-unsubscribe-post"]


# -- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    pem: bytes
    record: str


def rsa_key() -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")


@pytest.fixture(scope="module")
def key() -> Key:
    return rsa_key()


@pytest.fixture(scope="module")
def other_key() -> Key:
    return rsa_key()


# -- the relay: aiosmtpd with STARTTLS and a login, optionally signing and delivering -------------


@dataclass
class Relay:
    """A relay that signs (when `sign` is set) and delivers into a Dovecot mailbox, or keeps."""

    sign: list[bytes] | None = None
    key: bytes = b""
    deliver: Callable[[bytes], None] | None = None
    alter: Callable[[bytes], bytes] = field(default=lambda raw: raw)
    results: str | None = None  # an Authentication-Results header, as a receiver adds one
    kept: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content
        if self.sign is not None:
            raw = (
                dkim.sign(
                    raw,
                    b"s1",
                    b"example.edu",
                    self.key,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=self.sign,
                )
                + raw
            )
        raw = self.alter(raw)
        if self.results:
            raw = f"Authentication-Results: {self.results}\r\n".encode() + raw
        self.kept.append(raw)
        if self.deliver is not None:
            self.deliver(raw)
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"news",
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Smtp:
    port: int
    relay: Relay

    def url(self, password: str = PASSWORD) -> str:
        return f"smtp://news:{password}@127.0.0.1:{self.port}?starttls=required"


@pytest.fixture
def smtp(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Smtp]:
    """A relay on loopback with STARTTLS (a certificate this machine trusts) and a login."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    trusted = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(trusted))
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
    relay = Relay()
    port = free_port()
    controller = Controller(
        relay,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    server = Smtp(port, relay)
    monkeypatch.setenv("DIGEST_SMTP_URL", server.url())
    try:
        yield server
    finally:
        controller.stop()


# -- the set-up ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No delivery settings inherited from the machine running the tests."""
    for name in (
        "DIGEST_SMTP_URL",
        "DIGEST_SMTP_PASSWORD",
        "DIGEST_PUBLIC_URL",
        "DIGEST_SECRET_KEY",
        "DIGEST_DKIM_KEY",
        "DIGEST_DNS_SERVER",
        "DIGEST_IMAP_PASSWORD",
        "DIGEST_STATE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def good(
    dns_server: Zone, smtp: Smtp, key: Key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Zone:
    """A set-up with nothing wrong: SPF, DMARC and DKIM published, one-click on, digest signing."""
    catalogue(tmp_path, SIGNING)
    (tmp_path / "dkim.pem").write_bytes(key.pem)
    monkeypatch.setenv("DIGEST_DKIM_KEY", "dkim.pem")
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://digest.example.edu/")
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    dns_server.txt("example.edu", SPF, "google-site-verification=abc")
    dns_server.txt("_dmarc.example.edu", DMARC)
    dns_server.txt("s1._domainkey.example.edu", key.record)
    return dns_server


def catalogue(tmp_path: Path, extra: str = "", newsletter: str = NEWSLETTER) -> None:
    text = yaml_catalogue(item(date="2025-11-19"), item(id="older", date="2025-10-02"))
    header, items = text.split("items:\n", 1)
    (tmp_path / "items.yaml").write_text(f"{header}{newsletter}{extra}items:\n{items}")
    (tmp_path / "subscribers.csv").write_text("email,name\nchan@example.org,Chan\n")


def lines(result: Result) -> dict[str, str]:
    """Return each check's line (verdict and finding) by topic, with its fix when it has one."""
    found: dict[str, str] = {}
    topic = ""
    for line in result.stdout.splitlines()[:-1]:
        if line.startswith(" "):
            found[topic] += "\n" + line.strip()
            continue
        verdict, rest = line.split(" ", 1)
        topic, _, text = rest.strip().partition("  ")
        topic = topic.strip()
        found[topic] = f"{verdict} {text.strip()}"
    return found


def relay_and_spf(smtp: Smtp) -> str:
    """Return the first six lines of a good set-up's checklist: the relay's and SPF's."""
    return (
        f"ok    SMTP        connected to 127.0.0.1:{smtp.port}\n"
        "ok    SMTP TLS    STARTTLS (TLSv1.3, certificate verified)\n"
        "ok    SMTP login  logged in as news\n"
        "ok    SPF         example.edu: v=spf1 ip4:127.0.0.1 -all\n"
        "ok    SPF relay   ip4:127.0.0.1 covers the relay 127.0.0.1\n"
        "ok    SPF all     -all: receivers distrust mail from hosts the record does not list\n"
    )


# -- the acceptance: a good set-up and a bad one, word for word -----------------------------------


@pytest.mark.usefixtures("good")
def test_a_good_set_up_is_all_ok(run: Run, smtp: Smtp) -> None:
    """Staff see every check pass, and exit 0, when the relay, DNS and catalogue are right."""
    result = run("doctor")
    assert result.stdout == (
        relay_and_spf(smtp)
        + "ok    DMARC       p=quarantine at _dmarc.example.edu (aggregate reports to "
        "mailto:dmarc@example.edu)\n"
        "ok    DKIM key    s1._domainkey.example.edu holds the public half of DIGEST_DKIM_KEY "
        "(rsa-sha256)\n"
        "ok    one-click   List-Unsubscribe https://digest.example.edu/unsubscribe/... with "
        "List-Unsubscribe-Post (RFC 8058), and mailto:news@example.edu?subject=unsubscribe\n"
        "ok    From        news@example.edu: signed as d=example.edu (newsletter.dkim), aligned; "
        "the envelope sender is the same address, so SPF aligns\n"
        "10 checks: 10 ok, 0 warn, 0 FAIL.\n"
    )
    assert result.exit_code == 0
    assert smtp.relay.kept == []  # no mail sent


def test_each_deliberate_mistake_is_its_own_failing_line(
    run: Run, good: Zone, smtp: Smtp, other_key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing DMARC, a mismatched DKIM key and no DIGEST_PUBLIC_URL each fail with their fix."""
    good.forget("_dmarc.example.edu")
    good.forget("s1._domainkey.example.edu")
    good.txt("s1._domainkey.example.edu", other_key.record)
    monkeypatch.delenv("DIGEST_PUBLIC_URL")
    result = run("doctor")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        *relay_and_spf(smtp).splitlines(),
        "FAIL  DMARC       no DMARC record at _dmarc.example.edu (_dmarc.example.edu does not "
        "exist (NXDOMAIN))",
        '                  fix: publish a TXT record at _dmarc.example.edu: "v=DMARC1; p=none; '
        'rua=mailto:dmarc-reports@example.edu" to begin, then p=quarantine once the reports '
        "show your mail passes (Gmail, Yahoo and Outlook.com require DMARC of bulk senders)",
        "FAIL  DKIM key    the key at s1._domainkey.example.edu does not match DIGEST_DKIM_KEY "
        "(a probe signed with DIGEST_DKIM_KEY does not verify with it)",
        "                  fix: publish the public half of DIGEST_DKIM_KEY at "
        "s1._domainkey.example.edu, or point DIGEST_DKIM_KEY at the private key that was "
        "published",
        "FAIL  one-click   DIGEST_PUBLIC_URL is not set: messages offer only "
        "mailto:news@example.edu?subject=unsubscribe, and Gmail and Yahoo require one-click "
        "unsubscribe of bulk senders",
        "                  fix: set DIGEST_PUBLIC_URL to the https:// address of `digest serve` "
        "and DIGEST_SECRET_KEY (32+ characters, the same for serve, send and schedule), so each "
        "message carries its own one-click link and List-Unsubscribe-Post (RFC 8058)",
        "ok    From        news@example.edu: signed as d=example.edu (newsletter.dkim), aligned; "
        "the envelope sender is the same address, so SPF aligns",
        "10 checks: 7 ok, 0 warn, 3 FAIL.",
    ]


# -- the relay -----------------------------------------------------------------------------------


def test_no_smtp_url_says_mail_only_goes_to_the_outbox(
    run: Run, dns_server: Zone, tmp_path: Path
) -> None:
    """Without DIGEST_SMTP_URL nothing is delivered: the doctor must say so, first, and fail."""
    catalogue(tmp_path)
    dns_server.txt("example.edu", SPF)
    result = run("doctor")
    found = lines(result)
    assert found["SMTP"] == (
        "FAIL DIGEST_SMTP_URL is not set: mail only goes to outbox/ (a rehearsal)\n"
        "fix: set DIGEST_SMTP_URL to your relay, like smtp://digest@smtp.example.edu:587"
    )
    assert found["SPF relay"].startswith("warn cannot tell: no relay is configured")
    assert result.exit_code == 1


@pytest.mark.usefixtures("good")
def test_a_refused_login_fails_its_line(
    run: Run, smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong relay password shows as the login line failing, the password never shown."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp.url("wrong-password"))
    result = run("doctor")
    assert lines(result)["SMTP login"] == (
        "FAIL login as news refused (535)\n"
        "fix: check the user name in DIGEST_SMTP_URL and DIGEST_SMTP_PASSWORD (Microsoft 365 and "
        "Google refuse plain passwords for most accounts: use an app password or OAuth)"
    )
    assert "wrong-password" not in result.output
    assert result.exit_code == 1


@pytest.mark.usefixtures("good")
def test_an_untrusted_certificate_fails_the_tls_line(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay whose certificate this machine does not trust fails TLS, and logs in to nothing."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    found = lines(run("doctor"))
    assert found["SMTP TLS"].startswith(
        "FAIL the certificate is not valid: unable to get local issuer certificate\n"
        "fix: the relay's certificate must be valid for its host name"
    )
    assert "SMTP login" not in found


@pytest.mark.usefixtures("good")
def test_a_relay_without_tls_is_a_warning(
    run: Run, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that offers no STARTTLS works, but staff are told their password goes in clear."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    result = run("doctor")
    assert lines(result)["SMTP TLS"] == (
        "warn the server does not offer STARTTLS: the password and every message cross the "
        "network in clear\n"
        "fix: use the relay's port with TLS (587 with STARTTLS, or smtps:// on 465)"
    )
    assert lines(result)["SMTP login"] == (
        "ok no user name in the URL: the relay must accept this host"
    )
    assert result.exit_code == 0


@pytest.mark.usefixtures("good")
def test_nothing_listening_fails_the_connect_line(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong port is one failing line naming where it tried."""
    port = free_port()
    monkeypatch.setenv("DIGEST_SMTP_URL", f"smtp://127.0.0.1:{port}")
    found = lines(run("doctor"))
    assert found["SMTP"].startswith(
        f"FAIL cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused\n"
    )
    assert "SMTP TLS" not in found


# -- SPF, DMARC and the DKIM key -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "topic", "expected"),
    [
        ((), "SPF", "FAIL example.edu has no SPF record (no TXT record starting v=spf1)"),
        (
            (SPF, "v=spf1 include:_spf.example.net ~all"),
            "SPF",
            "FAIL example.edu has 2 SPF records; receivers treat that as an error",
        ),
        (
            ("v=spf1 ip4:127.0.0.1 +all",),
            "SPF all",
            "FAIL +all: any host on the internet may send as example.edu",
        ),
        (
            ("v=spf1 ip4:127.0.0.1 ?all",),
            "SPF all",
            "warn ?all: hosts the record does not list are neutral, not refused",
        ),
        (
            ("v=spf1 ip4:127.0.0.1 ~all",),
            "SPF all",
            "ok ~all: receivers distrust mail from hosts the record does not list",
        ),
        (
            ("v=spf1 ip4:127.0.0.0/8 -all",),
            "SPF relay",
            "ok ip4:127.0.0.0/8 covers the relay 127.0.0.1",
        ),
        (
            ("v=spf1 a:relay.example.edu -all",),
            "SPF relay",
            "ok a:relay.example.edu covers the relay 127.0.0.1",
        ),
        (("v=spf1 mx -all",), "SPF relay", "ok mx covers the relay 127.0.0.1"),
        (
            ("v=spf1 ip4:192.0.2.1 -all",),
            "SPF relay",
            "warn the record lists none of the relay 127.0.0.1's addresses (127.0.0.1)",
        ),
        (
            ("v=spf1 include:_spf.example.net -all",),
            "SPF relay",
            "warn cannot tell: the relay 127.0.0.1 (127.0.0.1) is not listed directly, and "
            "include:_spf.example.net was not followed",
        ),
        (
            ("v=spf1 redirect=_spf.example.edu",),
            "SPF all",
            "ok -all: receivers distrust mail from hosts the record does not list",
        ),
    ],
)
def test_spf_records_are_judged(
    run: Run, good: Zone, records: tuple[str, ...], topic: str, expected: str
) -> None:
    """Each SPF mistake (none, two, +all, the relay left out) shows on its line; good ones pass."""
    good.forget("example.edu")
    good.add("example.edu", "MX", "10 relay.example.edu.")
    good.add("relay.example.edu", "A", "127.0.0.1")
    good.txt("_spf.example.edu", "v=spf1 ip4:127.0.0.1 -all")
    good.txt("example.edu", *records)
    assert lines(run("doctor"))[topic].split("\n")[0] == expected


def test_spf_names_the_include_a_known_relay_needs(dns_server: Zone) -> None:
    """Microsoft 365 sends from spf.protection.outlook.com's hosts: a record without it fails."""
    from digest.app.doctor import spf
    from digest.send.dns import Lookup

    dns_server.txt("example.edu", "v=spf1 ip4:192.0.2.1 -all")
    lookup = Lookup(("127.0.0.1", dns_server.port), timeout=2)
    relay = spf(lookup, "example.edu", "smtp.office365.com")[1]
    assert (relay.verdict, relay.found, relay.fix) == (
        "FAIL",
        "the record does not include:spf.protection.outlook.com, the hosts Microsoft 365 "
        "(smtp.office365.com) sends from",
        "add include:spf.protection.outlook.com to the record at example.edu, before its all",
    )
    dns_server.forget("example.edu")
    dns_server.txt("example.edu", "v=spf1 include:_spf.google.com ~all")
    google = spf(lookup, "example.edu", "smtp-relay.gmail.com")[1]
    assert (google.verdict, google.found) == (
        "ok",
        "include:_spf.google.com covers Google Workspace (smtp-relay.gmail.com)",
    )


def test_a_from_domain_that_does_not_exist(run: Run, dns_server: Zone, tmp_path: Path) -> None:
    """A typo in the From domain is told as a domain that does not exist, with where to fix it."""
    catalogue(tmp_path)
    found = lines(run("doctor"))
    assert found["SPF"] == (
        "FAIL example.edu does not exist (NXDOMAIN)\n"
        "fix: the envelope sender's domain must exist: check newsletter.from in the catalogue"
    )


def test_a_silent_resolver_is_its_own_line(run: Run, good: Zone) -> None:
    """A resolver that does not answer says so and points at DIGEST_DNS_SERVER, not at records."""
    good.silent.add("example.edu")
    found = lines(run("doctor", "--dns-timeout", "0.3"))
    assert found["SPF"] == (
        "FAIL the resolver did not answer for example.edu (no reply in 0.3 s)\n"
        f"fix: make sure the resolver at 127.0.0.1:{good.port} answers from this machine "
        "(DIGEST_DNS_SERVER picks another), then run the doctor again"
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            "v=DMARC1; p=none",
            "warn p=none at _dmarc.example.edu (no rua=: nobody receives reports): receivers "
            "report but enforce nothing; Gmail, Yahoo and Outlook.com accept p=none from bulk "
            "senders\nfix: once the reports show your mail passes, move to p=quarantine, then "
            "p=reject",
        ),
        (
            "v=DMARC1; rua=mailto:d@example.edu",
            "FAIL _dmarc.example.edu has no valid policy (p=missing)\nfix: give the record at "
            "_dmarc.example.edu a policy: p=none, p=quarantine or p=reject",
        ),
        (
            "v=DMARC1; p=reject",
            "ok p=reject at _dmarc.example.edu (no rua=: nobody receives reports)",
        ),
    ],
)
def test_dmarc_policies_are_judged(run: Run, good: Zone, record: str, expected: str) -> None:
    """p=none is a warning with the way forward; a record without a policy fails."""
    good.forget("_dmarc.example.edu")
    good.txt("_dmarc.example.edu", record)
    assert lines(run("doctor"))["DMARC"] == expected


def test_dmarc_of_a_parent_domain_counts(run: Run, good: Zone, tmp_path: Path, key: Key) -> None:
    """A From on a subdomain is covered by the organisation's record (its sp= policy)."""
    catalogue(tmp_path, SIGNING, NEWSLETTER.replace("news@example.edu>", "news@lists.example.edu>"))
    good.txt("lists.example.edu", SPF)
    good.forget("_dmarc.example.edu")
    good.txt("_dmarc.example.edu", "v=DMARC1; p=none; sp=reject")
    found = lines(run("doctor"))
    assert found["DMARC"] == (
        "ok p=reject at _dmarc.example.edu (a parent domain) (no rua=: nobody receives reports)"
    )
    assert found["From"].startswith("ok news@lists.example.edu: signed as d=example.edu")


def test_two_dmarc_records_fail(run: Run, good: Zone) -> None:
    """Two DMARC records make receivers use neither: that must fail."""
    good.txt("_dmarc.example.edu", "v=DMARC1; p=none")
    assert lines(run("doctor"))["DMARC"] == (
        "FAIL _dmarc.example.edu has 2 DMARC records; receivers use none\nfix: keep one"
    )


def test_dkim_without_a_key_and_a_key_without_dkim(
    run: Run, good: Zone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a DKIM set-up signs nothing: each half alone is a failing line with the other half."""
    monkeypatch.delenv("DIGEST_DKIM_KEY")
    found = lines(run("doctor"))
    assert found["DKIM"] == (
        "FAIL newsletter.dkim names s1._domainkey.example.edu, but DIGEST_DKIM_KEY is not set: "
        "nothing is signed\n"
        "fix: set DIGEST_DKIM_KEY to the PEM file of the private key published there"
    )
    assert found["DKIM key"] == "ok a key is published at s1._domainkey.example.edu"
    catalogue(tmp_path)
    monkeypatch.setenv("DIGEST_DKIM_KEY", "dkim.pem")
    assert lines(run("doctor"))["DKIM"] == (
        "FAIL DIGEST_DKIM_KEY is set, but the catalogue has no newsletter.dkim: nothing is "
        "signed\nfix: add newsletter.dkim: {domain: example.edu, selector: SELECTOR} with the "
        "selector the public key is published under"
    )


def test_no_signing_at_all_is_a_warning(
    run: Run, good: Zone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without digest's own signing the relay must sign: staff are told, and how to check."""
    catalogue(tmp_path)
    monkeypatch.delenv("DIGEST_DKIM_KEY")
    found = lines(run("doctor"))
    assert found["DKIM"].startswith(
        "warn digest does not sign (no newsletter.dkim): the relay must sign as example.edu\n"
    )
    assert found["From"] == (
        "ok news@example.edu: the envelope sender is the same address, so SPF aligns; DKIM "
        "alignment is the relay's signature's (--read)"
    )


def test_an_unpublished_key_fails(run: Run, good: Zone, key: Key) -> None:
    """A selector with nothing published fails with the very record to publish."""
    good.forget("s1._domainkey.example.edu")
    assert lines(run("doctor"))["DKIM key"] == (
        "FAIL no key at s1._domainkey.example.edu: s1._domainkey.example.edu does not exist "
        "(NXDOMAIN)\nfix: publish the public half of DIGEST_DKIM_KEY at s1._domainkey.example.edu "
        f'as a TXT record "{key.record}"'
    )


def test_an_ed25519_key_is_checked_too(run: Run, good: Zone, tmp_path: Path) -> None:
    """An Ed25519 DKIM key (RFC 8463) matches its published half, whatever the key type."""
    private = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "dkim.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    good.forget("s1._domainkey.example.edu")
    good.txt("s1._domainkey.example.edu", f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}")
    assert lines(run("doctor"))["DKIM key"] == (
        "ok s1._domainkey.example.edu holds the public half of DIGEST_DKIM_KEY (ed25519-sha256)"
    )


def test_a_signing_domain_not_aligned_with_from_fails(run: Run, good: Zone, tmp_path: Path) -> None:
    """Signing as another domain than From's cannot pass DMARC: the catalogue's line says so."""
    catalogue(tmp_path, "  dkim: {domain: mail.example.net, selector: s1}\n")
    result = run("doctor")
    assert result.exit_code == 1
    assert result.output.startswith(
        "items.yaml:19: newsletter.dkim.domain: 'mail.example.net' does not align with the From "
        "address's domain 'example.edu', so DMARC would fail for every message"
    )


# -- the catalogue against the big receivers' rules ----------------------------------------------


def test_one_click_needs_the_secret_key(
    run: Run, good: Zone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DIGEST_PUBLIC_URL without DIGEST_SECRET_KEY signs no links: one-click fails, with a fix."""
    monkeypatch.delenv("DIGEST_SECRET_KEY")
    assert lines(run("doctor"))["one-click"] == (
        "FAIL DIGEST_PUBLIC_URL is set, but DIGEST_SECRET_KEY is missing or too short to sign "
        "links\nfix: set DIGEST_SECRET_KEY (32+ characters, the same for serve, send and "
        "schedule): python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )


def test_a_plain_https_unsubscribe_page_is_not_one_click(
    run: Run, good: Zone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One unsubscribe page for everyone cannot know who clicked: it is not one-click."""
    monkeypatch.delenv("DIGEST_PUBLIC_URL")
    page = "https://news.example.edu/unsubscribe"
    catalogue(
        tmp_path, SIGNING, NEWSLETTER.replace("mailto:news@example.edu?subject=unsubscribe", page)
    )
    assert lines(run("doctor"))["one-click"].startswith(
        f"FAIL DIGEST_PUBLIC_URL is not set: every message offers the one page {page}, which "
        "cannot tell who asked, so a one-click POST unsubscribes nobody\n"
    )


# -- the test copy, read back from a mailbox -----------------------------------------------------


@pytest.fixture
def mailbox(
    smtp: Smtp,
    dovecot: Dovecot,
    imap_user: Account,
    key: Key,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Account:
    """The relay signs with the published key, as a well set up OpenDKIM would; Dovecot gets it.

    This machine trusts both the relay's and Dovecot's certificates (STARTTLS on both).
    """
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(ca.cert_pem.bytes() + dovecot.ca_file.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    smtp.relay.sign = ALL_LIST_HEADERS
    smtp.relay.key = key.pem
    smtp.relay.deliver = lambda raw: dovecot.deliver(imap_user, raw)
    monkeypatch.setenv("DIGEST_IMAP_PASSWORD", imap_user.password)
    return imap_user


def read(run: Run, account: Account, *more: str) -> Result:
    return run("doctor", "--to", "tester@example.org", "--read", account.url(), *more)


def test_a_test_copy_is_sent_found_and_checked(
    run: Run, good: Zone, mailbox: Account, smtp: Smtp, dovecot: Dovecot
) -> None:
    """The received copy verifies, aligns and signs both unsubscribe headers: all ok, exit 0."""
    dovecot.deliver(mailbox, b"From: someone@example.org\r\nSubject: keep me\r\n\r\nHello.\r\n")
    smtp.relay.results = (
        "mx.example.org; spf=pass smtp.mailfrom=example.edu; dkim=pass header.d=example.edu; "
        "dmarc=pass"
    )
    result = read(run, mailbox)
    found = lines(result)
    message_id = smtp.relay.kept[0].split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    assert found["test copy"] == (f"ok sent the 2025-11 digest to tester@example.org: {message_id}")
    assert found["received"] == f"ok in {mailbox.url()}"
    assert found["DKIM signature"] == "ok verifies (d=example.edu, s=s1, rsa-sha256)"
    assert found["DKIM alignment"] == "ok d=example.edu aligns with the From domain example.edu"
    assert found["DKIM headers"] == "ok h= covers List-Unsubscribe and List-Unsubscribe-Post"
    assert found["receiver"] == (
        "ok Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.edu; "
        "dkim=pass header.d=example.edu; dmarc=pass"
    )
    assert result.stdout.endswith("16 checks: 16 ok, 0 warn, 0 FAIL.\n")
    assert result.exit_code == 0
    assert b"Subject: [TEST] Campus News" in smtp.relay.kept[0]
    from digest.send.mailbox import Mailbox, parse_url

    with Mailbox(parse_url(mailbox.url(), mailbox.password)) as box:
        assert len(box.uids()) == 2  # the other message is still there, and the copy
        assert box.search("UNSEEN") == box.uids()


def test_a_signature_that_leaves_out_list_unsubscribe_post_fails(
    run: Run, good: Zone, mailbox: Account, smtp: Smtp
) -> None:
    """OpenDKIM's default header list silently breaks one-click: the doctor must catch it."""
    smtp.relay.sign = OPENDKIM_DEFAULT
    found = lines(read(run, mailbox))
    assert found["DKIM signature"] == "ok verifies (d=example.edu, s=s1, rsa-sha256)"
    assert found["DKIM headers"] == (
        "FAIL h= leaves out list-unsubscribe-post: receivers will not offer one-click (RFC 8058)\n"
        "fix: sign both list headers (digest's own signing does; OpenDKIM's default list leaves "
        "List-Unsubscribe-Post out: add it to its SignHeaders)"
    )


def test_a_copy_altered_after_signing_fails(
    run: Run, good: Zone, mailbox: Account, smtp: Smtp
) -> None:
    """A relay that adds a footer after signing breaks DKIM: the signature line fails."""
    smtp.relay.alter = lambda raw: raw + b"\r\n-- \r\nSent through the campus relay\r\n"
    result = read(run, mailbox)
    assert lines(result)["DKIM signature"].startswith(
        "FAIL does not verify (d=example.edu, s=s1): body hash mismatch"
    )
    assert result.exit_code == 1


def test_an_unsigned_copy_and_a_failing_receiver_verdict(
    run: Run,
    good: Zone,
    mailbox: Account,
    smtp: Smtp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No signature at all, and the receiver's dmarc=fail, each fail their line."""
    catalogue(tmp_path)  # digest does not sign: no newsletter.dkim, no key
    monkeypatch.delenv("DIGEST_DKIM_KEY")
    smtp.relay.sign = None
    smtp.relay.results = "mx.example.org; dkim=none; dmarc=fail header.from=example.edu"
    found = lines(read(run, mailbox))
    assert found["DKIM signature"] == (
        "FAIL the received copy carries no DKIM-Signature\n"
        "fix: turn on DKIM: newsletter.dkim and DIGEST_DKIM_KEY, or signing at the relay"
    )
    assert found["receiver"].startswith(
        "FAIL Authentication-Results: mx.example.org; dkim=none; dmarc=fail"
    )


def test_a_copy_that_never_arrives_ends_the_wait(
    run: Run, good: Zone, mailbox: Account, smtp: Smtp
) -> None:
    """A copy the mailbox never gets fails after the bounded wait instead of hanging."""
    smtp.relay.deliver = None
    found = lines(read(run, mailbox, "--wait", "0"))
    assert found["received"] == (
        f"FAIL not in {mailbox.url()} after 0 s\n"
        "fix: check that mail to tester@example.org lands in that folder (a spam folder: name it "
        "in the URL), and look for a bounce in the sender's mailbox"
    )


def test_a_mailbox_that_refuses_the_login_sends_nothing(
    run: Run, good: Zone, mailbox: Account, smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong mailbox password is found before any copy is sent."""
    monkeypatch.setenv("DIGEST_IMAP_PASSWORD", "wrong")
    found = lines(read(run, mailbox))
    assert found["mailbox"] == (
        f"FAIL {mailbox.url()}: [AUTHENTICATIONFAILED] Authentication failed.\n"
        "fix: check the --read URL and DIGEST_IMAP_PASSWORD"
    )
    assert smtp.relay.kept == []


def test_read_needs_to_and_a_mailbox_url(run: Run, good: Zone) -> None:
    """--to without --read is wrong usage; a mistyped URL is an error before anything is sent."""
    alone = run("doctor", "--to", "tester@example.org")
    assert alone.exit_code == 2
    assert "--to and --read go together" in alone.output
    typo = run("doctor", "--to", "not-an-address", "--read", "imap://u@127.0.0.1/INBOX")
    assert typo.exit_code == 2
    assert "Invalid value for '--to': 'not-an-address' is not an email address" in typo.output
    bad = run("doctor", "--to", "tester@example.org", "--read", "pop3://u@h/INBOX")
    assert (bad.exit_code, bad.stdout) == (1, "")
    assert bad.stderr == (
        "--read 'pop3://u@h/INBOX' must look like imaps://user@mail.example.edu/INBOX "
        "(or imap:// with STARTTLS)\n"
    )


@pytest.mark.usefixtures("good")
def test_an_implicit_tls_relay_is_probed(
    run: Run, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An smtps:// relay (port 465 style) shows its TLS as implicit, and logs in."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    port = free_port()
    controller = Controller(
        Relay(),
        hostname="127.0.0.1",
        port=port,
        ssl_context=context,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        monkeypatch.setenv("DIGEST_SMTP_URL", f"smtps://news:{PASSWORD}@127.0.0.1:{port}")
        found = lines(run("doctor"))
    finally:
        controller.stop()
    assert found["SMTP TLS"] == "ok implicit TLS (TLSv1.3, certificate verified)"
    assert found["SMTP login"] == "ok logged in as news"


def test_an_unreadable_dkim_key_fails(
    run: Run, good: Zone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DIGEST_DKIM_KEY naming a missing file says so, with the fix."""
    monkeypatch.setenv("DIGEST_DKIM_KEY", "nowhere.pem")
    result = run("doctor")
    assert lines(result)["DKIM"].startswith("FAIL ")
    assert (
        "nowhere.pem: cannot read the DKIM key (DIGEST_DKIM_KEY): No such file or directory"
        in lines(result)["DKIM"]
    )
    assert result.exit_code == 1


def test_text_from_dns_cannot_drive_the_terminal(run: Run, good: Zone) -> None:
    """A DNS record holding terminal escapes is shown with them defused, not obeyed."""
    good.forget("example.edu")
    good.txt("example.edu", "v=spf1 ip4:127.0.0.1 -all \x1b[2J\x1b]0;owned\x07")
    line = lines(run("doctor"))["SPF"]
    assert line == "ok example.edu: v=spf1 ip4:127.0.0.1 -all ?[2J?]0;owned?"


def test_a_bad_smtp_url_is_a_failing_line(
    run: Run, good: Zone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped DIGEST_SMTP_URL fails its line with the reason; the other checks still run."""
    monkeypatch.setenv("DIGEST_SMTP_URL", "smtp://news:hunter2@127.0.0.1:25?tls=yes")
    result = run("doctor")
    assert lines(result)["SMTP"] == (
        "FAIL DIGEST_SMTP_URL 'smtp://news:***@127.0.0.1:25?tls=yes': the options are "
        "?starttls=required, ?pipelining=off and ?auth=xoauth2 (joined with &)\n"
        "fix: correct DIGEST_SMTP_URL"
    )
    assert "hunter2" not in result.output
    assert lines(result)["DMARC"].startswith("ok p=quarantine")


def test_a_catalogue_without_a_newsletter_is_an_error(
    run: Run, dns_server: Zone, tmp_path: Path
) -> None:
    """Without a newsletter there is no mail to check: a clear error and exit 1, no checklist."""
    (tmp_path / "items.yaml").write_text(yaml_catalogue(item()))
    result = run("doctor")
    assert (result.exit_code, result.stdout) == (1, "")
    assert "newsletter" in result.stderr


def test_the_mailbox_may_be_read_over_imaps(run: Run, good: Zone, mailbox: Account) -> None:
    """An imaps:// mailbox (TLS from the start, port 993 style) finds the copy the same way."""
    url = mailbox.url(tls=True)
    result = run("doctor", "--to", "tester@example.org", "--read", url)
    assert lines(result)["received"] == f"ok in {url}"
    assert result.exit_code == 0


def test_a_silent_resolver_for_dmarc_points_at_the_resolver(run: Run, good: Zone) -> None:
    """A DMARC lookup that times out must not tell IT to publish a record that may exist."""
    good.silent.add("_dmarc.example.edu")
    assert lines(run("doctor", "--dns-timeout", "0.3"))["DMARC"] == (
        "FAIL the resolver did not answer for _dmarc.example.edu (no reply in 0.3 s)\n"
        f"fix: make sure the resolver at 127.0.0.1:{good.port} answers from this machine "
        "(DIGEST_DNS_SERVER picks another), then run the doctor again"
    )


def test_a_mailbox_session_lost_while_waiting_is_a_failing_line(
    good: Zone, mailbox: Account, smtp: Smtp, dovecot: Dovecot, tmp_path: Path
) -> None:
    """A mailbox server that hangs up during the wait gives a failing line, not a crash."""
    import os
    from datetime import UTC, datetime

    from digest.app import doctor, settings

    smtp.relay.deliver = None
    configured = settings.load(tmp_path / "items.yaml", os.environ)
    back = doctor.ReadBack("tester@example.org", mailbox.url(), within=60, every=1)
    checks = doctor.doctor(
        configured,
        datetime(2026, 1, 1, tzinfo=UTC),
        read=back,
        pause=lambda _: dovecot.kick(mailbox),
    )
    last = checks[-1]
    assert (last.topic, last.verdict, last.fix) == ("received", "FAIL", "run the doctor again")
    assert last.found.startswith(f"{mailbox.url()}: search failed: ")


@pytest.mark.parametrize(
    ("bounces", "said"),
    [
        (
            "bounces@news.example.edu",
            "the envelope sender is bounces+...@news.example.edu (newsletter.bounces), aligned, "
            "so SPF aligns when that domain's SPF allows the relay",
        ),
        (
            "bounces@bulk.example.net",
            "the envelope sender is bounces+...@bulk.example.net (newsletter.bounces), another "
            "domain, so SPF cannot align: DMARC rests on DKIM alone",
        ),
    ],
)
def test_the_from_check_names_the_verp_return_path(
    run: Run, good: Zone, tmp_path: Path, bounces: str, said: str
) -> None:
    """With newsletter.bounces, IT must read which envelope domain SPF is checked against."""
    catalogue(tmp_path, newsletter=NEWSLETTER + SIGNING + f"  bounces: {{address: {bounces}}}\n")
    assert lines(run("doctor"))["From"] == (
        f"ok news@example.edu: signed as d=example.edu (newsletter.dkim), aligned; {said}"
    )


def test_with_bounces_spf_is_judged_on_the_return_paths_domain(
    run: Run, good: Zone, tmp_path: Path
) -> None:
    """Receivers check SPF on the envelope sender: with VERP, the bounce address's domain. A
    return path on a domain without SPF must fail, though the From domain's record is good."""
    setting = "  bounces: {address: bounces@news.example.edu}\n"
    catalogue(tmp_path, newsletter=NEWSLETTER + SIGNING + setting)
    found = lines(run("doctor"))
    assert found["SPF"] == (
        "FAIL news.example.edu does not exist (NXDOMAIN)\n"
        "fix: the envelope sender's domain must exist: check newsletter.bounces.address in the "
        "catalogue"
    )
    good.txt("news.example.edu", "v=spf1 ip4:127.0.0.1 -all")
    found = lines(run("doctor"))
    assert found["SPF"] == "ok news.example.edu: v=spf1 ip4:127.0.0.1 -all"
    assert found["SPF relay"] == "ok ip4:127.0.0.1 covers the relay 127.0.0.1"
