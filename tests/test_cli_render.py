"""`digest render`: the files staff preview before a send."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from click.testing import Result

from helpers import item, yaml_catalogue

ROOT = Path(__file__).resolve().parent.parent
Run = Callable[..., Result]
NEWSLETTER = (
    "newsletter:\n"
    '  from: "Campus News <news@example.edu>"\n'
    '  subject: "Campus News — {month:%B %Y}"\n'
    '  schedule: "0 9 1 * *"\n'
    '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"\n'
)


def bundled(tmp_path: Path) -> None:
    shutil.copy(ROOT / "items.yaml", tmp_path / "items.yaml")


def test_render_writes_three_files(run: Run, tmp_path: Path) -> None:
    """Staff get the HTML, the text and the very message a subscriber receives."""
    bundled(tmp_path)
    result = run("render", "--month", "2025-11")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "digest-2025-11.html").read_bytes()
    assert result.stdout == (
        "Rendered November 2025: 3 items in 3 categories: out/digest-2025-11.html "
        f"({len(html) / 1024:.1f} KB), out/digest-2025-11.txt, out/digest-2025-11.eml.\n"
    )
    assert result.stderr == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "digest-2025-11.eml",
        "digest-2025-11.html",
        "digest-2025-11.txt",
    ]


def test_eml_is_the_subscribers_message(run: Run, tmp_path: Path) -> None:
    """The .eml opens in a mail client as the digest: subject, both parts, placeholder recipient."""
    bundled(tmp_path)
    run("render", "--month", "2025-11", "-o", "preview")
    raw = (tmp_path / "preview" / "digest-2025-11.eml").read_bytes()
    email = message_from_bytes(raw, policy=policy.default)
    assert isinstance(email, EmailMessage)
    assert email["Subject"] == "What's Happening — November 2025"
    assert email["From"] == "Office of the Provost <provost@example.edu>"
    assert email["To"] == "Subscriber <subscriber@example.org>"
    assert email["List-Unsubscribe"] == "<mailto:provost@example.edu?subject=unsubscribe>"
    text, html = (part.get_content().replace("\r\n", "\n") for part in email.iter_parts())
    assert text == (tmp_path / "preview" / "digest-2025-11.txt").read_text()
    assert html == (tmp_path / "preview" / "digest-2025-11.html").read_text()
    assert "Dear colleague," in text


def test_month_without_items_writes_nothing(run: Run, tmp_path: Path) -> None:
    """An empty month says so, succeeds, and leaves no files to be sent by mistake."""
    bundled(tmp_path)
    result = run("render", "--month", "2025-12")
    assert (result.exit_code, result.stdout) == (
        0,
        "No items in December 2025: nothing to render, no files written.\n",
    )
    assert not (tmp_path / "out").exists()


def test_bad_month_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    """A mistyped month exits 2 and says how to write one."""
    bundled(tmp_path)
    result = run("render", "--month", "2025-13")
    assert result.exit_code == 2
    assert "'2025-13' is not a month (use YYYY-MM, like 2025-11)" in result.stderr


def test_catalogue_without_newsletter_block(run: Run, write: Callable[..., Path]) -> None:
    """A feeds-only catalogue is told what to add before it can render a digest."""
    write(yaml_catalogue())
    result = run("render", "--month", "2025-11")
    assert result.exit_code == 1
    assert result.stderr == (
        "items.yaml: there is no `newsletter` block; add one (from, subject, schedule, "
        "unsubscribe) to render the digest, see README\n"
    )


def test_oversized_digest_warns_about_gmail_clipping(
    run: Run, write: Callable[..., Path], tmp_path: Path
) -> None:
    """Staff are warned before Gmail hides the end of the digest behind "[Message clipped]"."""
    long = json.dumps("A long announcement. " * 300)
    items = [item(id=f"n{i}", title=f"News {i}", summary=long) for i in range(25)]
    write(yaml_catalogue(*items) + NEWSLETTER)
    result = run("render", "--month", "2025-11")
    assert result.exit_code == 0
    size = (tmp_path / "out" / "digest-2025-11.html").stat().st_size
    assert size > 102 * 1024
    assert result.stderr == (
        f"warning: out/digest-2025-11.html is {size / 1024:.1f} KB; Gmail clips messages over "
        '102.0 KB and hides the rest behind "[Message clipped]"\n'
    )
