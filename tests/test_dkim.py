"""DKIM signing: every message a send, a test copy or a rehearsal makes verifies with dkimpy."""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import dkim as dkimpy
import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import SmtpServer
from digest.errors import DigestError
from digest.mail import dkim
from digest.months import Month
from digest.publish import catalogue
from digest.send import delivery, subscribers
from digest.send.ledger import Ledger
from digest.send.transport import SmtpTransport, parse_url
from helpers import NOW

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
WHERE = catalogue.Dkim(domain="example.edu", selector="digest2026")
RECORD_NAME = b"digest2026._domainkey.example.edu."
BLOCK = "  dkim: {domain: example.edu, selector: digest2026}\n"
SECRET = "s" * 40
Run = Callable[..., Result]


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    """A 2048-bit RSA key in PKCS#8, as `openssl genrsa` writes it."""
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture
def rsa_key(tmp_path: Path, rsa_pem: bytes) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(rsa_pem)
    return path


@pytest.fixture
def ed_key(tmp_path: Path) -> Path:
    path = tmp_path / "dkim-ed25519.pem"
    path.write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    return path


def dns_for(*signers: dkim.Signer) -> Callable[..., bytes | None]:
    """Return a dnsfunc for dkimpy that serves each signer's TXT record, as its DNS would."""
    records = {f"{s.name}.".encode(): s.record.encode() for s in signers}

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return txt


def verifies(data: bytes, signer: dkim.Signer) -> bool:
    return bool(dkimpy.verify(data, dnsfunc=dns_for(signer)))


def tags(data: bytes) -> dict[str, str]:
    """Return the tags of the message's DKIM-Signature, unfolded."""
    parsed = message_from_bytes(data, policy=policy.compat32)
    value = re.sub(r"\s+", "", str(parsed["DKIM-Signature"]))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def signed_names(data: bytes) -> list[str]:
    return tags(data)["h"].split(":")


MESSAGE = (
    b"From: Office of the Provost <provost@example.edu>\r\n"
    b"To: reader@example.org\r\n"
    b"Subject: What's Happening\r\n"
    b"Date: Mon, 01 Dec 2025 09:00:00 +0800\r\n"
    b"Message-ID: <digest.2025-11.x@provost.example.edu>\r\n"
    b'List-Id: "What\'s Happening" <whats-happening.provost.example.edu>\r\n'
    b"List-Unsubscribe: <https://digest.example.edu/unsubscribe/t>,\r\n"
    b" <mailto:provost@example.edu?subject=unsubscribe>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Dear reader,\r\n\r\nThe digest.\r\n"
)


# -- the Signer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_signed_message_verifies_with_both_unsubscribe_headers_signed(
    kind: str, rsa_key: Path, ed_key: Path
) -> None:
    """Receivers accept the signature, and offer one-click unsubscribe (RFC 8058) for it."""
    signer = dkim.load(rsa_key if kind == "rsa" else ed_key, WHERE)
    signed = signer.sign(MESSAGE)
    assert signed.endswith(MESSAGE)  # only a header in front: the message is as it was
    assert verifies(signed, signer)
    found = tags(signed)
    assert found["a"] == f"{kind}-sha256"
    assert (found["c"], found["d"], found["s"]) == ("relaxed/relaxed", "example.edu", "digest2026")
    names = signed_names(signed)
    for name in ("from", "to", "subject", "date", "message-id", "list-id", "mime-version"):
        assert name in names
    assert "list-unsubscribe" in names
    assert "list-unsubscribe-post" in names


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: What's Happening", b"Subject: What's happening"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"),
        (b"The digest.", b"The Digest."),
        (b"Dear reader", b"Dear reader!"),
    ],
)
def test_message_altered_after_signing_fails(old: bytes, new: bytes, rsa_key: Path) -> None:
    """A header or body changed on the way is caught: the signature no longer verifies."""
    signer = dkim.load(rsa_key, WHERE)
    signed = signer.sign(MESSAGE)
    altered = signed.replace(old, new)
    assert altered != signed
    assert not verifies(altered, signer)


@pytest.mark.parametrize(
    "added",
    [
        b"List-Unsubscribe: <https://elsewhere.example.com/u>\r\n",
        b"Reply-To: someone@elsewhere.example.com\r\n",
        b"Subject: A second subject\r\n",
    ],
)
def test_header_added_after_signing_fails(added: bytes, rsa_key: Path) -> None:
    """A second List-Unsubscribe, or a Reply-To the sender never wrote, breaks the signature."""
    signer = dkim.load(rsa_key, WHERE)
    signed = signer.sign(MESSAGE)
    head, _, body = signed.partition(b"\r\n\r\n")
    assert verifies(head + b"\r\n\r\n" + body, signer)
    assert not verifies(head + b"\r\n" + added.rstrip(b"\r\n") + b"\r\n\r\n" + body, signer)


def test_absent_headers_are_signed_as_absent(rsa_key: Path) -> None:
    """Without one-click, nobody on the way can add a List-Unsubscribe-Post of their own."""
    plain = MESSAGE.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"")
    signer = dkim.load(rsa_key, WHERE)
    signed = signer.sign(plain)
    assert verifies(signed, signer)
    names = signed_names(signed)
    assert names.count("list-unsubscribe-post") == 1  # none there, and none may be added
    assert names.count("list-unsubscribe") == 2  # the one there, and no second
    head, _, body = signed.partition(b"\r\n\r\n")
    added = head + b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n" + body
    assert not verifies(added, signer)


def test_key_in_pkcs1_verifies(tmp_path: Path) -> None:
    """A key written by an older OpenSSL (BEGIN RSA PRIVATE KEY) signs as well."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    path = tmp_path / "old.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).replace(b"\n", b"\r\n")  # saved on Windows, too
    )
    signer = dkim.load(path, WHERE)
    assert verifies(signer.sign(MESSAGE), signer)
    assert signer.advice is not None
    assert "1024-bit RSA key: it works, but 2048" in signer.advice


def test_public_record_is_the_keys_own(rsa_key: Path, rsa_pem: bytes) -> None:
    """The TXT record the office publishes holds this key's public half, and nothing private."""
    signer = dkim.load(rsa_key, WHERE)
    key = serialization.load_pem_private_key(rsa_pem, None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert signer.record == f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    assert signer.name == "digest2026._domainkey.example.edu"
    assert signer.advice is None
    shown = repr(signer)
    assert not any(line in shown for line in key_lines(rsa_pem))


def key_lines(data: bytes) -> list[str]:
    return [line for line in data.decode().splitlines() if line and not line.startswith("-----")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the DKIM key (DIGEST_DKIM_KEY): No such file or directory"),
        (b"not a key\n", "not a PEM private key"),
        ("truncated", "not a PEM private key"),
        ("public", "not a PEM private key"),
        ("ec", "DKIM signs with RSA or Ed25519 keys, and this is another kind of key"),
        ("short", "the DKIM key is a 768-bit RSA key, and receivers ignore signatures"),
        ("encrypted", "the DKIM key is protected by a passphrase"),
    ],
)
def test_unusable_key_is_refused_with_its_file(
    content: bytes | str | None, message: str, tmp_path: Path, rsa_pem: bytes
) -> None:
    """A key that cannot sign is named with the fix, and not one byte of it is printed."""
    path = tmp_path / "dkim.pem"
    secret = rsa_pem
    if content == "truncated":
        content = rsa_pem[: len(rsa_pem) // 2] + b"\n-----END PRIVATE KEY-----\n"
    elif content == "public":
        key = serialization.load_pem_private_key(rsa_pem, None)
        content = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif content == "ec":
        content = secret = pem(ec.generate_private_key(ec.SECP256R1()))
    elif content == "short":
        content = secret = (DATA / "dkim-768.pem").read_bytes()
    elif content == "encrypted":
        key = serialization.load_pem_private_key(rsa_pem, None)
        content = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    if isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(DigestError) as raised:
        dkim.load(path, WHERE)
    text = str(raised.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    for line in key_lines(secret):
        assert line not in text
        assert line[:16] not in text


# -- a send --------------------------------------------------------------------------------------


def bundled_with_dkim() -> catalogue.Catalogue:
    text = (ROOT / "items.yaml").read_text(encoding="utf-8")
    marker = "  subscribers: subscribers.csv\n"
    assert marker in text
    changed = text.replace(marker, marker + BLOCK)
    return catalogue.parse(changed.encode(), ROOT / "items.yaml", "items.yaml")


def one_click(address: str) -> str:
    return f"https://digest.example.edu/unsubscribe/{address.split('@')[0]}.sig"


def test_every_message_of_a_send_verifies_and_only_the_signature_is_new(
    tmp_path: Path, rsa_key: Path, smtp_server: SmtpServer
) -> None:
    """Each subscriber's copy verifies, and is otherwise the very bytes an unsigned send makes."""
    cat = bundled_with_dkim()
    signer = dkim.load(rsa_key, WHERE)
    listed = subscribers.load(
        ROOT / "subscribers.csv", [c.slug for c in cat.publication.categories]
    )
    with Ledger(tmp_path / "state.sqlite3") as ledger:
        plan = delivery.prepare(cat, listed, Month(2025, 11), ledger, NOW)
        assert plan is not None
        summary = plan.execute(
            SmtpTransport(parse_url(smtp_server.url)),
            clock=lambda: NOW,
            connections=2,
            unsubscribe=one_click,
            signer=signer,
        )
        unsigned = delivery.Composer(plan, one_click)
        expected = {row.address: unsigned(row, NOW) for row in plan.todo}
    assert summary.sent == len(plan.todo) == 11
    for received in smtp_server.recorder.messages:
        data = received.data
        assert verifies(data, signer), received.rcpt_tos
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_names(data))
        # The stencil's bytes, with the signature the only part made for this message.
        head, _, rest = data.partition(b"\r\nFrom: ")
        assert head.startswith(b"DKIM-Signature: ")
        assert b"From: " + rest == expected[received.rcpt_tos[0]]


def test_a_send_without_dkim_is_not_signed(tmp_path: Path, smtp_server: SmtpServer) -> None:
    """Where the relay signs, digest adds no signature of its own."""
    cat = catalogue.load(ROOT / "items.yaml")
    listed = subscribers.load(
        ROOT / "subscribers.csv", [c.slug for c in cat.publication.categories]
    )
    with Ledger(tmp_path / "state.sqlite3") as ledger:
        plan = delivery.prepare(cat, listed, Month(2025, 11), ledger, NOW)
        assert plan is not None
        plan.execute(SmtpTransport(parse_url(smtp_server.url)), clock=lambda: NOW)
    assert smtp_server.recorder.messages
    assert not any(b"DKIM-Signature" in m.data for m in smtp_server.recorder.messages)


# -- end to end: the command line ------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled catalogue with newsletter.dkim, its list, and no settings inherited."""
    for name in (
        "DIGEST_SMTP_URL",
        "DIGEST_SMTP_PASSWORD",
        "DIGEST_STATE",
        "DIGEST_PUBLIC_URL",
        "DIGEST_SECRET_KEY",
        "DIGEST_DKIM_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    text = (ROOT / "items.yaml").read_text(encoding="utf-8")
    marker = "  subscribers: subscribers.csv\n"
    (tmp_path / "items.yaml").write_text(text.replace(marker, marker + BLOCK), encoding="utf-8")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    return tmp_path


def signed_by(rsa_key: Path) -> dkim.Signer:
    return dkim.load(rsa_key, WHERE)


def test_send_with_dkim_and_one_click_verifies_for_everyone(
    run: Run,
    project: Path,
    rsa_key: Path,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`digest send` signs every copy: each verifies, with list-unsubscribe-post in h=."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("DIGEST_PUBLIC_URL", "https://digest.example.edu/")
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    monkeypatch.setenv("DIGEST_DKIM_KEY", rsa_key.name)  # read beside the catalogue
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    received = smtp_server.recorder.messages
    assert len(received) == 11
    signer = signed_by(rsa_key)
    for message in received:
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in message.data
        assert verifies(message.data, signer), message.rcpt_tos
        assert "list-unsubscribe-post" in signed_names(message.data)
        assert "list-unsubscribe" in signed_names(message.data)


def test_test_copies_are_signed(
    run: Run, project: Path, ed_key: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A [TEST] copy is signed as the real digest is, so a tester sees what readers will see."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("DIGEST_DKIM_KEY", str(ed_key))
    result = run("send", "--month", "2025-11", "--to", "tester@example.org")
    assert result.exit_code == 0, result.output
    (copy,) = smtp_server.recorder.messages
    assert b"\r\nSubject: [TEST] " in copy.data
    assert verifies(copy.data, dkim.load(ed_key, WHERE))
    assert tags(copy.data)["a"] == "ed25519-sha256"


def test_outbox_rehearsal_is_signed(
    run: Run, project: Path, rsa_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rehearsal's files carry the signature, so a person can check it before a real send."""
    monkeypatch.setenv("DIGEST_DKIM_KEY", str(rsa_key))
    result = run("send", "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    files = sorted((project / "outbox").glob("*.eml"))
    assert len(files) == 11
    signer = signed_by(rsa_key)
    for path in files:
        assert verifies(path.read_bytes(), signer), path.name


def test_scheduled_send_is_signed(project: Path, rsa_key: Path, smtp_server: SmtpServer) -> None:
    """The scheduler's monthly run signs as `digest send` does: it is the same path."""
    import threading
    from datetime import UTC, datetime

    from digest.app import sending, settings

    found = settings.load(
        project / "items.yaml",
        {"DIGEST_SMTP_URL": smtp_server.url, "DIGEST_DKIM_KEY": str(rsa_key)},
    )
    outcome = sending.scheduled_send(
        found,
        Month(2025, 11),
        threading.Event(),
        lambda: datetime(2026, 1, 1, tzinfo=UTC),
        lambda line: None,
    )
    assert outcome.decision == "sent"
    signer = signed_by(rsa_key)
    assert len(smtp_server.recorder.messages) == 11
    assert all(verifies(m.data, signer) for m in smtp_server.recorder.messages)


def test_dkim_block_without_key_is_refused_before_anything_is_sent(
    run: Run, project: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The office is never left believing it signs: check and send both say the key is missing."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    refusal = (
        "items.yaml: newsletter.dkim asks for every message to be signed as example.edu, but "
        "DIGEST_DKIM_KEY is not set: set it to the PEM file of the private key whose public "
        "half is published at digest2026._domainkey.example.edu, or remove newsletter.dkim to "
        "leave signing to the relay\n"
    )
    for args in (("check",), ("send", "--month", "2025-11", "--yes"),
                 ("send", "--month", "2025-11", "--to", "tester@example.org"),
                 ("send", "--month", "2025-11", "--dry-run")):  # fmt: skip
        result = run(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", refusal), args
    assert smtp_server.recorder.messages == []
    assert not (project / ".digest").exists()


def test_key_without_dkim_block_is_refused(
    run: Run, project: Path, rsa_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key with no domain to sign as is a mistake to fix, not a send without a signature."""
    shutil.copy(ROOT / "items.yaml", project / "items.yaml")
    monkeypatch.setenv("DIGEST_DKIM_KEY", str(rsa_key))
    refusal = (
        f"DIGEST_DKIM_KEY is set ({rsa_key}), but items.yaml has no newsletter.dkim, so digest "
        "does not know which domain and selector to sign as: add `dkim: {domain: ..., "
        "selector: ...}` under newsletter, or unset DIGEST_DKIM_KEY to leave signing to the "
        "relay\n"
    )
    for args in (("check",), ("send", "--month", "2025-11", "--yes")):
        result = run(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", refusal), args
    assert not (project / "outbox").exists()


def test_short_key_is_refused_by_check_and_send(
    run: Run, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key receivers would ignore is refused with the command that makes a good one."""
    shutil.copy(DATA / "dkim-768.pem", project / "dkim.pem")
    monkeypatch.setenv("DIGEST_DKIM_KEY", "dkim.pem")
    refusal = (
        "dkim.pem: the DKIM key is a 768-bit RSA key, and receivers ignore "
        "signatures from keys under 1024 bits (RFC 8301); make a 2048-bit one with `openssl "
        "genrsa -out dkim.pem 2048` and publish its p= at digest2026._domainkey.example.edu\n"
    )
    for args in (("check",), ("send", "--month", "2025-11", "--yes")):
        result = run(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", refusal), args
    assert not (project / "outbox").exists()


def test_check_passes_with_a_good_key_and_warns_of_a_1024_bit_one(
    run: Run, project: Path, rsa_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`digest check` accepts a working key, and says when a longer one is recommended."""
    monkeypatch.setenv("DIGEST_DKIM_KEY", str(rsa_key))
    good = run("check")
    assert (good.exit_code, good.stderr) == (0, "")
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    (project / "old.pem").write_bytes(pem(short))
    monkeypatch.setenv("DIGEST_DKIM_KEY", "old.pem")
    warned = run("check")
    assert warned.exit_code == 0
    assert warned.stdout == good.stdout
    assert warned.stderr == (
        "warning: old.pem is a 1024-bit RSA key: it works, but 2048 bits are "
        "recommended (RFC 8301); make one with `openssl genrsa -out dkim.pem 2048` and publish "
        "its p= under a new selector\n"
    )
