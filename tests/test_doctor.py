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
SECRET = "a-secret-key-of-more-than-32-characters"
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


# -- the acceptance: a good set-up and a bad one, word for word -----------------------------------


@pytest.mark.usefixtures("good")
def test_a_good_set_up_is_all_ok(run: Run, smtp: Smtp) -> None:
    """Staff see every check pass, and exit 0, when the relay, DNS and catalogue are right."""
    result = run("doctor")
    assert result.stdout == (
        f"ok    SMTP        connected to 127.0.0.1:{smtp.port}\n"
        "ok    SMTP TLS    STARTTLS (TLSv1.3, certificate verified)\n"
        "ok    SMTP login  logged in as news\n"
        "ok    SPF         example.edu: v=spf1 ip4:127.0.0.1 -all\n"
        "ok    SPF relay   ip4:127.0.0.1 covers the relay 127.0.0.1\n"
        "ok    SPF all     -all: receivers distrust mail from hosts the record does not list\n"
        "ok    DMARC       p=quarantine at _dmarc.example.edu (aggregate reports to "
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
    run: Run, good: Zone, other_key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing DMARC, a DKIM key that does not match and no DIGEST_PUBLIC_URL each show with a fix."""
    good.forget("_dmarc.example.edu")
    good.forget("s1._domainkey.example.edu")
    good.txt("s1._domainkey.example.edu", other_key.record)
    monkeypatch.delenv("DIGEST_PUBLIC_URL")
    result = run("doctor")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[6:] == [
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
