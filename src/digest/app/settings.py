"""Everything `digest` takes from its environment, read once and checked once.

Front ends (the command line, the scheduler, the console) build one `Settings` at start from the
`DIGEST_*` variables and their own options; every other module gets what it needs from it, never
from `os.environ`. Default paths are relative to the catalogue's folder, not to wherever the
command happens to run, so `digest send -c /srv/digest/items.yaml` from a home directory finds
the same ledger and outbox as the scheduler started in /srv/digest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.send.ledger import Ledger

# The variables read, with what each is for: `digest --help` and the IT guide list the same.
VARIABLES = {
    "DIGEST_SMTP_URL": "where mail goes: smtp://user@host:587, smtps://...; unset: outbox/",
    "DIGEST_SMTP_PASSWORD": "the SMTP password, when it is not in the URL",
    "DIGEST_SMTP_TOKEN_COMMAND": (
        "with ?auth=xoauth2 in DIGEST_SMTP_URL: a shell command that prints an OAuth 2.0 "
        "access token (msal, oauth2l, a vault), run in the catalogue's folder"
    ),
    "DIGEST_STATE": "the state database (default .digest/state.sqlite3 beside the catalogue)",
    "DIGEST_DATABASE_URL": (
        "the state database as a URL: sqlite:///PATH (a file, the default) or "
        "postgresql://user@host:5432/db (password in the URL or PGPASSWORD)"
    ),
    "DIGEST_PUBLIC_URL": "the https:// address where `digest serve` is reached from outside",
    "DIGEST_SECRET_KEY": "signs console sessions, unsubscribe links, VERP return paths (32+ chars)",
    "DIGEST_CONSOLE_PASSWORD": "the staff console's password",
    "DIGEST_TRUSTED_PROXIES": "how many reverse proxies stand before `digest serve` (default 0)",
    "DIGEST_LEDGER_WAIT": "seconds a send waits for a locked ledger (`digest send --ledger-wait`)",
    "DIGEST_DKIM_KEY": "the PEM file of the DKIM private key, with newsletter.dkim in items.yaml",
    "DIGEST_DNS_SERVER": "the resolver `digest doctor` asks, host[:port] (default: the system's)",
    "DIGEST_EDITOR_GIT_COMMIT": "1: the console's editor commits each save to git (default 0)",
    "DIGEST_IMAP_PASSWORD": "the password of the mailbox `digest doctor --read` opens",
    "DIGEST_BOUNCE_SOURCE": "the bounce mailbox `digest schedule` reads every 15 minutes",
    "DIGEST_BOUNCE_PASSWORD": "the IMAP password of the bounce mailbox (`digest bounces`)",
}

SECRET_KEY_LENGTH = 32
CONSOLE_PASSWORD_LENGTH = 12


@dataclass(frozen=True, slots=True)
class Settings:
    """The installation: the catalogue, where state and output go, and how mail leaves."""

    catalogue_path: Path
    state_path: Path
    outbox: Path
    smtp_url: str | None = field(default=None, repr=False)
    smtp_password: str | None = field(default=None, repr=False)
    smtp_token_command: str | None = field(default=None, repr=False)
    public_url: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    console_password: str | None = field(default=None, repr=False)
    trusted_proxies: int = 0
    ledger_wait: float = 30.0  # `digest send --ledger-wait` (DIGEST_LEDGER_WAIT, read by click)
    dkim_key: Path | None = None  # DIGEST_DKIM_KEY, relative to the catalogue's folder
    dns_server: tuple[str, int] | None = None  # DIGEST_DNS_SERVER; None: the system's resolver
    editor_git_commit: bool = False  # DIGEST_EDITOR_GIT_COMMIT: commit each console save
    imap_password: str | None = field(default=None, repr=False)  # DIGEST_IMAP_PASSWORD
    # DIGEST_DATABASE_URL when it names PostgreSQL; None: the SQLite file `state_path`. With
    # PostgreSQL, `state_path`'s folder still holds this machine's send locks.
    database_url: str | None = field(default=None, repr=False)

    @property
    def has_state(self) -> bool:
        """Return whether there is a state database to read (a PostgreSQL one always is)."""
        return self.database_url is not None or self.state_path.exists()

    def ledger(self, **options: Any) -> Ledger:
        """Open the state database: `Ledger(state_path, url=database_url, **options)`."""
        from digest.send.ledger import Ledger

        return Ledger(self.state_path, url=self.database_url, **options)

    # DIGEST_BOUNCE_SOURCE: the mailbox `digest schedule` reads bounces from (imap://, imaps://,
    # maildir:, mbox:); DIGEST_BOUNCE_PASSWORD: its IMAP password.
    bounce_source: str | None = None
    bounce_password: str | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        """Return the catalogue's folder, which default paths are relative to."""
        return self.catalogue_path.parent

    @property
    def uses_outbox(self) -> bool:
        """Return whether messages go to outbox/ (a rehearsal) rather than an SMTP server."""
        return not self.smtp_url

    def default(self, name: str) -> Path:
        """Return a default output folder (feeds/, out/) beside the catalogue."""
        return self.home / name

    def secret(self, why: str) -> str:
        """Return DIGEST_SECRET_KEY, or say `why` it is needed and how to make one."""
        key = self.secret_key or ""
        if len(key) < SECRET_KEY_LENGTH:
            state = "not set" if not key else f"shorter than {SECRET_KEY_LENGTH} characters"
            raise DigestError(
                f"{why} DIGEST_SECRET_KEY is {state}: it signs the console's sessions and every "
                "one-click unsubscribe link in sent email, so it must be long and stay the same "
                "across restarts (the same for `digest serve`, `send` and `schedule`); make one "
                "with\n  python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return key

    def one_click(self) -> Callable[[str], str] | None:
        """Return the one-click unsubscribe URL maker when DIGEST_PUBLIC_URL is set, else None."""
        if self.public_url is None:
            return None
        from digest.send import unsubscribe

        return unsubscribe.Links(self.secret("DIGEST_PUBLIC_URL is set, and"), self.public_url).url


def load(
    catalogue_path: Path,
    environ: Mapping[str, str],
    *,
    state_path: Path | None = None,
) -> Settings:
    """Return the settings of the catalogue at `catalogue_path` under `environ`, checked.

    `state_path` is the command line's `--state`, which wins over DIGEST_STATE.
    """
    home = catalogue_path.parent
    database_url, in_url = parse_database_url(environ.get("DIGEST_DATABASE_URL"))
    state = (
        state_path
        or (home / in_url if in_url else None)
        or _path(environ.get("DIGEST_STATE"))
        or home / ".digest" / "state.sqlite3"
    )
    return Settings(
        catalogue_path=catalogue_path,
        state_path=state,
        outbox=home / "outbox",
        smtp_url=_text(environ.get("DIGEST_SMTP_URL")),
        smtp_password=environ.get("DIGEST_SMTP_PASSWORD") or None,
        smtp_token_command=_text(environ.get("DIGEST_SMTP_TOKEN_COMMAND")),
        public_url=_public_url(environ.get("DIGEST_PUBLIC_URL")),
        secret_key=environ.get("DIGEST_SECRET_KEY") or None,
        console_password=environ.get("DIGEST_CONSOLE_PASSWORD") or None,
        trusted_proxies=_count(environ.get("DIGEST_TRUSTED_PROXIES"), "DIGEST_TRUSTED_PROXIES"),
        dkim_key=_beside(home, _path(environ.get("DIGEST_DKIM_KEY"))),
        dns_server=_dns_server(environ.get("DIGEST_DNS_SERVER")),
        editor_git_commit=_flag(
            environ.get("DIGEST_EDITOR_GIT_COMMIT"), "DIGEST_EDITOR_GIT_COMMIT"
        ),
        imap_password=environ.get("DIGEST_IMAP_PASSWORD") or None,
        database_url=database_url,
        bounce_source=_text(environ.get("DIGEST_BOUNCE_SOURCE")),
        bounce_password=environ.get("DIGEST_BOUNCE_PASSWORD") or None,
    )


def parse_database_url(
    value: str | None, name: str = "DIGEST_DATABASE_URL"
) -> tuple[str | None, Path | None]:
    """Return a database URL as (a PostgreSQL URL, None) or (None, an SQLite file's path).

    The path is as written: relative ones are relative to the catalogue's folder. `name` is what
    the error calls the value (the variable, or `--to`).
    """
    from digest.send.database import is_postgresql, shown, sqlite_path

    url = _text(value)
    if url is None:
        return None, None
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return None, sqlite_path(url)
    parts = urlsplit(url)
    try:
        port_ok, displayed = parts.port is None or parts.port > 0, shown(url)
    except ValueError:  # a port that is not a number
        port_ok, displayed = False, "(not shown: its port is not a number)"
    if not is_postgresql(url) or not parts.hostname or len(parts.path) < 2 or not port_ok:
        raise DigestError(
            f"{name} {displayed} is not a database URL: give sqlite:///PATH for a file "
            "(sqlite:////srv/digest/state.sqlite3 for an absolute path) or "
            "postgresql://user@host:5432/database for PostgreSQL (the password in the URL, "
            "user:password@host, or in PGPASSWORD)"
        )
    return url, None


def _beside(home: Path, path: Path | None) -> Path | None:
    """Return `path` read relative to the catalogue's folder (an absolute path stays)."""
    return None if path is None else home / path


def _dns_server(value: str | None) -> tuple[str, int] | None:
    text = _text(value)
    if text is None:
        return None
    host, port = text, "53"
    if text.startswith("["):  # [::1]:5353
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise DigestError(
            f"DIGEST_DNS_SERVER {text!r} is not a resolver's address: give an IP address and an "
            "optional port, like 10.0.0.53, 10.0.0.53:5353 or [::1]:5353"
        )
    return str(address), int(port)


def _text(value: str | None) -> str | None:
    return (value or "").strip() or None


def _path(value: str | None) -> Path | None:
    text = _text(value)
    return Path(text) if text else None


def _public_url(value: str | None) -> str | None:
    public = _text(value)
    if public is None:
        return None
    parts = urlsplit(public)
    if (
        parts.scheme != "https"
        or not parts.netloc
        or parts.query
        or parts.fragment
        or "?" in public
    ):
        raise DigestError(
            f"DIGEST_PUBLIC_URL {public!r} must be the https:// address where `digest serve` is "
            "reached from outside, like https://digest.example.edu/ (RFC 8058 requires https)"
        )
    return public


MAX_TRUSTED_PROXIES = 5


def _count(value: str | None, name: str) -> int:
    text = _text(value) or "0"
    if not text.isascii() or not text.isdigit() or int(text) > MAX_TRUSTED_PROXIES:
        raise DigestError(
            f"{name} {text!r} is not a number of proxies: set it to how many reverse proxies "
            "stand between the staff and `digest serve` and append to X-Forwarded-For (1 for one "
            f"nginx or Caddy in front, at most {MAX_TRUSTED_PROXIES}), or 0 (the default) to "
            "ignore X-Forwarded-For"
        )
    return int(text)


def _flag(value: str | None, name: str) -> bool:
    text = (_text(value) or "0").lower()
    if text not in ("0", "1", "true", "false", "yes", "no"):
        raise DigestError(
            f"{name} {text!r} is not 1 or 0: set it to 1 to turn it on, or 0 (the default) to "
            "leave it off"
        )
    return text in ("1", "true", "yes")
