"""`digest send` through Microsoft 365 or Google with OAuth 2.0: the real CLI, an XOAUTH2 server."""

from __future__ import annotations

import base64
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from conftest import COUNTING_SCRIPT, TOKEN, OAuthServer, TokenScript
from digest.send.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
# The bundled list, without smith.john (whose categories have no November items).
READERS = sorted(
    [
        "chan.taiman@example.org",
        "lee.kawai@example.org",
        "wong.siuming@example.org",
        "cheung.mei@example.org",
        "ng.chiho@example.org",
        "lam.wingsze@example.org",
        "ho.kinfai@example.org",
        "yip.sukyee@example.org",
        "tsang.hiuyan@example.org",
        "leung.kamwah@example.org",
        "garcia.maria@example.org",
    ]
)
SUBJECT = "What's Happening — November 2025"


@pytest.fixture
def office(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TokenScript:
    """The bundled catalogue in tmp_path/office with its token script; the CLI runs elsewhere."""
    for name in ("DIGEST_SMTP_URL", "DIGEST_SMTP_PASSWORD", "DIGEST_STATE"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "office"
    folder.mkdir()
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, folder / name)
    (folder / "token.sh").write_text(COUNTING_SCRIPT, encoding="utf-8")
    # Relative: it runs in the catalogue's folder, wherever `digest` was started.
    monkeypatch.setenv("DIGEST_SMTP_TOKEN_COMMAND", "sh token.sh")
    return TokenScript(folder)


@pytest.fixture
def oauth(oauth_server: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> OAuthServer:
    """The XOAUTH2 server, named in DIGEST_SMTP_URL."""
    monkeypatch.setenv("DIGEST_SMTP_URL", oauth_server.url)
    return oauth_server


@pytest.fixture
def send(run: Callable[..., Result], office: TokenScript) -> Callable[..., Result]:
    """Run `digest send -c office/items.yaml --month 2025-11 --yes ARGS...` from tmp_path."""

    def invoke(*args: str) -> Result:
        catalogue = str(office.folder / "items.yaml")
        return run("send", "-c", catalogue, "--month", "2025-11", "--yes", *args)

    return invoke


# The bundled list is imported into the subscriber store before the first send, and says so.
IMPORTED = "subscribers.csv: imported: 12 added, 0 updated, 0 ended (no longer in the directory).\n"


def statuses(office: TokenScript) -> dict[str, str]:
    ledger = Ledger(office.folder / ".digest" / "state.sqlite3")
    try:
        return {row.address: row.status for row in ledger.deliveries("2025-11")}
    finally:
        ledger.close()


def assert_no_token_anywhere(
    results: list[Result], office: TokenScript, caplog: pytest.LogCaptureFixture, fd: str
) -> None:
    """Assert that no token the script printed shows in output, logs, the ledger or fds 1 and 2."""
    secrets = [TOKEN.format(n) for n in range(1, office.runs + 1)]
    # The SASL string too, as a server's log would show it (base64): digest never logs it.
    secrets += [base64.b64encode(f"Bearer {s}".encode()).decode()[:12] for s in secrets]
    texts = [result.stdout + result.stderr for result in results]
    texts += [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    texts.append(fd)
    for path in (office.folder / ".digest").glob("state.sqlite3*"):
        texts.append(path.read_bytes().decode("latin-1"))
    assert "sekrit" not in "".join(texts)
    assert not [s for s in secrets if any(s in text for text in texts)]


def test_a_send_through_xoauth2_reaches_every_subscriber(
    send: Callable[..., Result],
    oauth: OAuthServer,
    office: TokenScript,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The office's Microsoft 365 mailbox sends the month to everyone, signing in with a token."""
    caplog.set_level(logging.DEBUG)
    oauth.recorder.tokens[TOKEN.format(1)] = 3

    result = send("--connections", "3")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Subject:    {SUBJECT}\n"
        "Items:      3 in 3 categories\n"
        "Recipients: 11 to send\n"
        f"Transport:  {oauth.shown}\n"
        "November 2025: sent 11, already sent 0, deferred 0, failed 0 "
        f"(via {oauth.shown}).\n"
    )
    got = oauth.recorder.by_recipient()
    assert sorted(got) == READERS
    assert all(len(messages) == 1 for messages in got.values())
    assert office.runs == 1
    assert oauth.recorder.signins == [(TOKEN.format(1), True)] * 3
    assert set(statuses(office).values()) == {"sent"}
    assert_no_token_anywhere([result], office, caplog, "".join(capfd.readouterr()))


def test_a_token_that_expires_mid_send_is_fetched_again_once(
    send: Callable[..., Result],
    oauth: OAuthServer,
    office: TokenScript,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A token running out halfway costs one more run of the helper, and nobody's copy."""
    caplog.set_level(logging.DEBUG)
    # The first token is good for one sign-in; the server hangs up after the fourth message, so
    # the send signs in again: the first token is refused, the second accepted.
    oauth.recorder.tokens.update({TOKEN.format(1): 1, TOKEN.format(2): 100})
    oauth.recorder.drop_after = 4

    result = send()

    assert result.exit_code == 0, result.output
    got = oauth.recorder.by_recipient()
    assert sorted(got) == READERS
    # A message in flight at the hang-up may arrive twice, with one Message-ID (as ever).
    assert all(len({r.message_id for r in messages}) == 1 for messages in got.values())
    assert sum(len(messages) for messages in got.values()) <= len(READERS) + 1
    assert office.runs == 2
    assert oauth.recorder.signins == [
        (TOKEN.format(1), True),
        (TOKEN.format(1), False),
        (TOKEN.format(2), True),
    ]
    assert_no_token_anywhere([result], office, caplog, "".join(capfd.readouterr()))


def test_a_token_refused_twice_stops_the_send_and_a_fixed_one_finishes_it(
    send: Callable[..., Result],
    oauth: OAuthServer,
    office: TokenScript,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A revoked app stops the send with what to check; once fixed, everyone gets one copy."""
    caplog.set_level(logging.DEBUG)
    oauth.recorder.tokens[TOKEN.format(1)] = 1  # accepted once; token 2 is refused too

    stopped = send("--connections", "2")

    assert stopped.exit_code == 1
    assert stopped.stderr == IMPORTED + (
        f"{oauth.shown}: the server refused a fresh access token from DIGEST_SMTP_TOKEN_COMMAND "
        """too (535 5.7.8 Username and Password not accepted; {"status": "401", "schemes": """
        '"bearer", "scope": "https://mail.google.com/"}): check that the token is for '
        "provost@example.edu, with the SMTP.Send permission (Microsoft 365) or the "
        "https://mail.google.com/ scope (Google), and that SMTP AUTH is enabled for the mailbox "
        "(see the IT guide, OAuth 2.0)\n"
    )
    assert office.runs == 2
    assert oauth.recorder.signins == [
        (TOKEN.format(1), True),
        (TOKEN.format(1), False),
        (TOKEN.format(2), False),
    ]
    assert oauth.recorder.messages == []
    assert set(statuses(office).values()) == {"pending"}

    oauth.recorder.tokens[TOKEN.format(3)] = 100  # IT grants the permission again
    finished = send("--connections", "2")

    assert finished.exit_code == 0, finished.output
    got = oauth.recorder.by_recipient()
    assert sorted(got) == READERS
    assert all(len(messages) == 1 for messages in got.values())
    assert office.runs == 3
    assert_no_token_anywhere([stopped, finished], office, caplog, "".join(capfd.readouterr()))


def test_a_failing_token_command_stops_the_send_with_its_words(
    send: Callable[..., Result],
    oauth: OAuthServer,
    office: TokenScript,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A helper with no cached sign-in stops the send with its exit status and first stderr line."""
    command = "echo 'no cached credential' >&2; echo 'run: az login' >&2; exit 3"
    monkeypatch.setenv("DIGEST_SMTP_TOKEN_COMMAND", command)

    result = send()

    assert result.exit_code == 1
    assert result.stdout.endswith(f"Transport:  {oauth.shown}\n")
    assert result.stderr == IMPORTED + (
        f"DIGEST_SMTP_TOKEN_COMMAND {command!r} failed with exit status 3: no cached "
        "credential; run it by hand to see why: it must print an access token for the mailbox "
        "in DIGEST_SMTP_URL, and nothing else\n"
    )
    assert oauth.recorder.signins == []
    assert oauth.recorder.messages == []
    assert set(statuses(office).values()) == {"pending"}


def test_a_token_command_without_xoauth2_is_refused_before_anything(
    send: Callable[..., Result],
    oauth: OAuthServer,
    office: TokenScript,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forgetting ?auth=xoauth2 is said at once, instead of a password login that cannot work."""
    url = oauth.url.removesuffix("?auth=xoauth2")
    monkeypatch.setenv("DIGEST_SMTP_URL", url)

    result = send()

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"DIGEST_SMTP_TOKEN_COMMAND is set, but DIGEST_SMTP_URL {url!r} does not ask for "
        "?auth=xoauth2, so its token would never be used (a password login would be tried "
        "instead): add ?auth=xoauth2 to the URL, or unset DIGEST_SMTP_TOKEN_COMMAND\n"
    )
    assert office.runs == 0
    assert oauth.recorder.messages == []
    assert not (office.folder / ".digest").exists()
