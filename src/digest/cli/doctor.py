"""`digest doctor`: the checklist of whether mail will be delivered, and how to fix it."""

from __future__ import annotations

import re
from pathlib import Path

import click

import digest.cli as root
from digest.cli.group import _settings, catalogue_option

# What a line may show of text from outside (DNS records, a received header): printable only.
# A pattern, not a compiled one: compiled on first use, not by every command's start.
_UNPRINTABLE = r"[^\x20-\x7e\u00a0-\U0010ffff]|[\u2028\u2029\u200b-\u200f\u202a-\u202e]"


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from digest.app import sending as services

    try:
        return services.addresses([value])[0]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@catalogue_option
@click.option(
    "--to",
    "to",
    metavar="ADDR",
    default=None,
    callback=_address,
    help="Send a [TEST] copy of the latest month's digest to ADDR (needs --read).",
)
@click.option(
    "--read",
    "read",
    metavar="URL",
    default=None,
    help="The mailbox ADDR's mail lands in, read back over IMAP: imaps://user@host/FOLDER, or "
    "imap:// with STARTTLS; the password from DIGEST_IMAP_PASSWORD.",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=60.0,
    help="Seconds to wait for the test copy to arrive.",
)
@click.option(
    "--every",
    type=click.FloatRange(min=0.1),
    default=2.0,
    help="Seconds between looks into the mailbox while waiting.",
)
@click.option(
    "--dns-timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    help="Seconds to wait for each DNS answer.",
)
def doctor(
    catalogue_path: Path,
    to: str | None,
    read: str | None,
    wait: float,
    every: float,
    dns_timeout: float,
) -> None:
    """Check that this set-up's mail will be delivered: SMTP, SPF, DMARC, DKIM and one-click.

    Prints one line per check (ok, warn or FAIL) with the fix for anything not ok, then a
    summary; exits 1 when anything FAILs. No mail is sent unless --to is given; the mailbox
    --read opens is only read, never changed.

    \b
    Example:
        digest doctor
        DIGEST_IMAP_PASSWORD=... digest doctor --to digest-test@example.edu \\
            --read imaps://digest-test@mail.example.edu/INBOX
    """
    from digest.app import doctor as services

    if (to is None) != (read is None):
        raise click.UsageError(
            "--to and --read go together: the copy sent, the mailbox it lands in"
        )
    settings = _settings(catalogue_path)
    back = services.ReadBack(to, read, within=wait, every=every) if to and read else None
    checks = services.doctor(settings, root._now(), read=back, timeout=dns_timeout)
    width = max(len(c.topic) for c in checks)
    for check in checks:
        click.echo(f"{check.verdict.value:<5} {check.topic:<{width}}  {_shown(check.found)}")
        if check.fix:
            click.echo(f"{'':<5} {'':<{width}}  fix: {_shown(check.fix)}")
    counts = {v: sum(c.verdict == v for c in checks) for v in services.Verdict}
    summary = ", ".join(f"{counts[v]} {v.value}" for v in services.Verdict)
    failed = counts[services.Verdict.FAIL]
    click.echo(f"{len(checks)} checks: {summary}.")
    if failed:
        raise click.exceptions.Exit(1)


def _shown(text: str) -> str:
    return re.sub(_UNPRINTABLE, "?", text)
