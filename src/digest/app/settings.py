"""Everything `digest` takes from its environment, read once and checked once.

Front ends (the command line, the scheduler, the console) build one `Settings` at start from the
`DIGEST_*` variables and their own options; every other module gets what it needs from it, never
from `os.environ`. Default paths are relative to the catalogue's folder, not to wherever the
command happens to run, so `digest send -c /srv/digest/items.yaml` from a home directory finds
the same ledger and outbox as the scheduler started in /srv/digest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digest.app import variables
from digest.app.variables import MAX_TRUSTED_PROXIES, VARIABLES, parse_database_url
from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.send.ledger import Ledger

__all__ = [
    "CONSOLE_PASSWORD_LENGTH",
    "MAX_TRUSTED_PROXIES",
    "SECRET_KEY_LENGTH",
    "VARIABLES",
    "Settings",
    "load",
    "parse_database_url",
]

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
        return variables.home(self.catalogue_path)

    @property
    def uses_outbox(self) -> bool:
        """Return whether messages go to outbox/ (a rehearsal) rather than an SMTP server."""
        return not self.smtp_url

    def default(self, name: str) -> Path:
        """Return a default output folder (feeds/, out/) beside the catalogue."""
        return variables.default(self.catalogue_path, name)

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

    `state_path` is the command line's `--state`, which wins over DIGEST_STATE. The reading and
    the checks are `variables.read`'s (a no-change build uses them without this module).
    """
    return Settings(**variables.read(catalogue_path, environ, state_path=state_path))
