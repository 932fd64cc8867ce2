"""The installation's settings: read once from the environment, with paths beside the catalogue."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from digest.app import settings
from digest.errors import DigestError

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = Path("/srv/digest/items.yaml")


def test_defaults_are_beside_the_catalogue() -> None:
    """The ledger and the outbox belong to the catalogue, wherever the command is run from."""
    found = settings.load(CATALOGUE, {})
    assert found.state_path == Path("/srv/digest/.digest/state.sqlite3")
    assert found.outbox == Path("/srv/digest/outbox")
    assert found.default("feeds") == Path("/srv/digest/feeds")
    assert found.uses_outbox
    assert found.one_click() is None


def test_the_environment_is_read_once_into_one_object() -> None:
    """Every DIGEST_* variable lands in Settings, blanks count as unset, and --state wins."""
    environ = {
        "DIGEST_SMTP_URL": "  smtp://digest@mail.example.edu:587  ",
        "DIGEST_SMTP_PASSWORD": "secret",
        "DIGEST_STATE": "/var/lib/digest/state.sqlite3",
        "DIGEST_PUBLIC_URL": "https://digest.example.edu/",
        "DIGEST_SECRET_KEY": "k" * 32,
        "DIGEST_CONSOLE_PASSWORD": "",
        "DIGEST_TRUSTED_PROXIES": "1",
        "DIGEST_EDITOR_GIT_COMMIT": "1",
    }
    found = settings.load(CATALOGUE, environ)
    assert found.editor_git_commit
    assert not settings.load(CATALOGUE, {}).editor_git_commit
    assert found.smtp_url == "smtp://digest@mail.example.edu:587"
    assert not found.uses_outbox
    assert found.state_path == Path("/var/lib/digest/state.sqlite3")
    assert found.console_password is None
    assert found.trusted_proxies == 1
    one_click = found.one_click()
    assert one_click is not None
    assert one_click("a@example.org").startswith("https://digest.example.edu/unsubscribe/")
    given = settings.load(CATALOGUE, environ, state_path=Path("elsewhere.sqlite3"))
    assert given.state_path == Path("elsewhere.sqlite3")
    assert "secret" not in repr(found)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"DIGEST_PUBLIC_URL": "http://digest.example.edu/"},
            "DIGEST_PUBLIC_URL 'http://digest.example.edu/' must be the https:// address",
        ),
        (
            {"DIGEST_PUBLIC_URL": "https://digest.example.edu/?x=1"},
            "DIGEST_PUBLIC_URL 'https://digest.example.edu/?x=1' must be the https:// address",
        ),
        (
            {"DIGEST_EDITOR_GIT_COMMIT": "sure"},
            "DIGEST_EDITOR_GIT_COMMIT 'sure' is not 1 or 0",
        ),
        (
            {"DIGEST_TRUSTED_PROXIES": "many"},
            "DIGEST_TRUSTED_PROXIES 'many' is not a number of proxies",
        ),
    ],
)
def test_a_bad_variable_is_named_once_at_start(environ: dict[str, str], message: str) -> None:
    """A mistyped variable stops the command before anything runs, naming the variable."""
    with pytest.raises(DigestError, match=message.replace("?", r"\?")):
        settings.load(CATALOGUE, environ)


def test_the_token_command_is_read_once_and_kept_out_of_sight() -> None:
    """DIGEST_SMTP_TOKEN_COMMAND reaches the transport as typed, blank is unset, and never shows."""
    command = "msal-token --client-secret-file /etc/digest/secret"
    found = settings.load(CATALOGUE, {"DIGEST_SMTP_TOKEN_COMMAND": f"  {command}\n"})
    assert found.smtp_token_command == command
    assert "client-secret" not in repr(found)
    assert settings.load(CATALOGUE, {"DIGEST_SMTP_TOKEN_COMMAND": "  "}).smtp_token_command is None
    assert "DIGEST_SMTP_TOKEN_COMMAND" in settings.VARIABLES


def test_a_public_url_needs_a_long_secret_key() -> None:
    """One-click links signed with a throwaway key would break: a short key is refused."""
    found = settings.load(
        CATALOGUE, {"DIGEST_PUBLIC_URL": "https://d.example.edu/", "DIGEST_SECRET_KEY": "short"}
    )
    with pytest.raises(DigestError, match="DIGEST_SECRET_KEY is shorter than 32 characters"):
        found.one_click()


def test_a_send_from_another_folder_keeps_its_state_beside_the_catalogue(
    run: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`digest send -c /srv/digest/items.yaml` from a home folder uses the catalogue's ledger."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, project / name)
    monkeypatch.delenv("DIGEST_STATE", raising=False)
    monkeypatch.delenv("DIGEST_SMTP_URL", raising=False)
    result = run("send", "-c", str(project / "items.yaml"), "--month", "2025-11", "--yes")
    assert result.exit_code == 0, result.output
    assert (project / ".digest" / "state.sqlite3").exists()
    assert len(list((project / "outbox").glob("*.eml"))) == 11
    assert not (tmp_path / ".digest").exists()
    assert not (tmp_path / "outbox").exists()


def test_only_one_shot_commands_freeze_the_collector(
    run: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler runs for months: its sends never pin what they load in memory for good."""
    import gc
    import threading
    from datetime import UTC, datetime

    from digest.app import sending
    from digest.months import Month

    for name in ("items.yaml", "subscribers.csv"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.delenv("DIGEST_SMTP_URL", raising=False)
    frozen: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    found = settings.load(tmp_path / "items.yaml", {})
    for _ in range(2):
        outcome = sending.scheduled_send(
            found,
            Month.parse("2025-11"),
            threading.Event(),
            lambda: datetime(2026, 1, 1, tzinfo=UTC),
            lambda line: None,
        )
        assert outcome.decision == "rehearsed"
    assert frozen == []
    assert run("send", "--month", "2025-11", "--yes").exit_code == 0
    assert frozen == [1]


def test_dkim_key_and_dns_server_are_read() -> None:
    """The DKIM key is found beside the catalogue; the doctor's resolver is an address and port."""
    found = settings.load(
        CATALOGUE, {"DIGEST_DKIM_KEY": "keys/dkim.pem", "DIGEST_DNS_SERVER": "127.0.0.1:5353"}
    )
    assert found.dkim_key == Path("/srv/digest/keys/dkim.pem")
    assert found.dns_server == ("127.0.0.1", 5353)
    assert settings.load(CATALOGUE, {"DIGEST_DNS_SERVER": "[::1]"}).dns_server == ("::1", 53)
    assert settings.load(CATALOGUE, {"DIGEST_DKIM_KEY": "/etc/k.pem"}).dkim_key == Path(
        "/etc/k.pem"
    )
    assert settings.load(CATALOGUE, {}).dns_server is None


@pytest.mark.parametrize("value", ["dns.example.edu", "127.0.0.1:0", "127.0.0.1:x", "[::1]:99999"])
def test_a_bad_dns_server_is_named(value: str) -> None:
    """A resolver given by name or with a bad port is refused, naming the variable and the form."""
    with pytest.raises(DigestError, match=r"DIGEST_DNS_SERVER .* is not a resolver's address"):
        settings.load(CATALOGUE, {"DIGEST_DNS_SERVER": value})


def test_imap_password_is_read_and_never_shown() -> None:
    """The doctor's mailbox password comes from DIGEST_IMAP_PASSWORD and stays out of any repr."""
    found = settings.load(CATALOGUE, {"DIGEST_IMAP_PASSWORD": "mailbox-secret"})
    assert found.imap_password == "mailbox-secret"  # noqa: S105 -- the test's own
    assert "mailbox-secret" not in repr(found)
    assert settings.load(CATALOGUE, {}).imap_password is None
    assert "DIGEST_IMAP_PASSWORD" in settings.VARIABLES
