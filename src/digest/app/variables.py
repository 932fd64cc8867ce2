"""The DIGEST_* variables: what each is for, and each one read and checked.

`settings.load` makes its `Settings` from what `read` returns here. This module is apart, and
imports no dataclasses and no typing at run time, because a `digest build` with nothing to do
(`digest.cli.quick`) reads the environment through it before anything else is imported: the same
checks, the same paths beside the catalogue, at a fraction of the start-up. `DigestError` is
imported only when there is something to refuse (`digest.errors` imports `dataclasses`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads it the same

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn, TypedDict

    class Values(TypedDict):
        """What `read` found: every field of `Settings`, by name."""

        catalogue_path: Path
        state_path: Path
        outbox: Path
        smtp_url: str | None
        smtp_password: str | None
        smtp_token_command: str | None
        public_url: str | None
        secret_key: str | None
        console_password: str | None
        trusted_proxies: int
        dkim_key: Path | None
        dns_server: tuple[str, int] | None
        editor_git_commit: bool
        imap_password: str | None
        database_url: str | None
        bounce_source: str | None
        bounce_password: str | None


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

MAX_TRUSTED_PROXIES = 5


def home(catalogue_path: Path) -> Path:
    """Return the catalogue's folder, which default paths are relative to."""
    return catalogue_path.parent


def default(catalogue_path: Path, name: str) -> Path:
    """Return a default output folder (feeds/, out/) beside the catalogue."""
    return home(catalogue_path) / name


def read(
    catalogue_path: Path,
    environ: Mapping[str, str],
    *,
    state_path: Path | None = None,
) -> Values:
    """Return the settings' values for the catalogue at `catalogue_path` under `environ`, checked.

    `state_path` is the command line's `--state`, which wins over DIGEST_STATE.
    """
    folder = home(catalogue_path)
    database_url, in_url = parse_database_url(environ.get("DIGEST_DATABASE_URL"))
    state = (
        state_path
        or (folder / in_url if in_url else None)
        or _path(environ.get("DIGEST_STATE"))
        or folder / ".digest" / "state.sqlite3"
    )
    return {
        "catalogue_path": catalogue_path,
        "state_path": state,
        "outbox": folder / "outbox",
        "smtp_url": _text(environ.get("DIGEST_SMTP_URL")),
        "smtp_password": environ.get("DIGEST_SMTP_PASSWORD") or None,
        "smtp_token_command": _text(environ.get("DIGEST_SMTP_TOKEN_COMMAND")),
        "public_url": _public_url(environ.get("DIGEST_PUBLIC_URL")),
        "secret_key": environ.get("DIGEST_SECRET_KEY") or None,
        "console_password": environ.get("DIGEST_CONSOLE_PASSWORD") or None,
        "trusted_proxies": _count(environ.get("DIGEST_TRUSTED_PROXIES"), "DIGEST_TRUSTED_PROXIES"),
        "dkim_key": _beside(folder, _path(environ.get("DIGEST_DKIM_KEY"))),
        "dns_server": _dns_server(environ.get("DIGEST_DNS_SERVER")),
        "editor_git_commit": _flag(
            environ.get("DIGEST_EDITOR_GIT_COMMIT"), "DIGEST_EDITOR_GIT_COMMIT"
        ),
        "imap_password": environ.get("DIGEST_IMAP_PASSWORD") or None,
        "database_url": database_url,
        "bounce_source": _text(environ.get("DIGEST_BOUNCE_SOURCE")),
        "bounce_password": environ.get("DIGEST_BOUNCE_PASSWORD") or None,
    }


def parse_database_url(
    value: str | None, name: str = "DIGEST_DATABASE_URL"
) -> tuple[str | None, Path | None]:
    """Return a database URL as (a PostgreSQL URL, None) or (None, an SQLite file's path).

    The path is as written: relative ones are relative to the catalogue's folder. `name` is what
    the error calls the value (the variable, or `--to`).
    """
    url = _text(value)
    if url is None:
        return None, None
    from digest.send.database import is_postgresql, shown, sqlite_path

    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return None, sqlite_path(url)
    parts = urlsplit(url)
    try:
        port_ok, displayed = parts.port is None or parts.port > 0, shown(url)
    except ValueError:  # a port that is not a number
        port_ok, displayed = False, "(not shown: its port is not a number)"
    if not is_postgresql(url) or not parts.hostname or len(parts.path) < 2 or not port_ok:
        _refuse(
            f"{name} {displayed} is not a database URL: give sqlite:///PATH for a file "
            "(sqlite:////srv/digest/state.sqlite3 for an absolute path) or "
            "postgresql://user@host:5432/database for PostgreSQL (the password in the URL, "
            "user:password@host, or in PGPASSWORD)"
        )
    return url, None


def _refuse(message: str) -> NoReturn:
    from digest.errors import DigestError

    raise DigestError(message)


def _beside(folder: Path, path: Path | None) -> Path | None:
    """Return `path` read relative to the catalogue's folder (an absolute path stays)."""
    return None if path is None else folder / path


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
        _refuse(
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
        _refuse(
            f"DIGEST_PUBLIC_URL {public!r} must be the https:// address where `digest serve` is "
            "reached from outside, like https://digest.example.edu/ (RFC 8058 requires https)"
        )
    return public


def _count(value: str | None, name: str) -> int:
    text = _text(value) or "0"
    if not text.isascii() or not text.isdigit() or int(text) > MAX_TRUSTED_PROXIES:
        _refuse(
            f"{name} {text!r} is not a number of proxies: set it to how many reverse proxies "
            "stand between the staff and `digest serve` and append to X-Forwarded-For (1 for one "
            f"nginx or Caddy in front, at most {MAX_TRUSTED_PROXIES}), or 0 (the default) to "
            "ignore X-Forwarded-For"
        )
    return int(text)


def _flag(value: str | None, name: str) -> bool:
    text = (_text(value) or "0").lower()
    if text not in ("0", "1", "true", "false", "yes", "no"):
        _refuse(
            f"{name} {text!r} is not 1 or 0: set it to 1 to turn it on, or 0 (the default) to "
            "leave it off"
        )
    return text in ("1", "true", "yes")
