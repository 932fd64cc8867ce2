"""`digest render`: the files staff preview before a send."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from conftest import SmtpServer
from helpers import item, snapshot, yaml_catalogue

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
        "unsubscribe) to render or send the digest (see the editors' guide)\n"
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


# ------------------------------------------------------------------------------------------------
# Styling opens no connection


class CountingServer(ThreadingHTTPServer):
    """An HTTP server on loopback that counts the connections it accepts."""

    connections = 0

    def get_request(self) -> tuple[Any, Any]:
        accepted = super().get_request()
        self.connections += 1
        return accepted


class FontCss(BaseHTTPRequestHandler):
    """Serves a web font's stylesheet, as a font service would."""

    def do_GET(self) -> None:
        body = b"@font-face { font-family: Campus; src: url(/campus.woff2); }\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test counts connections; the log would only clutter the output


@pytest.fixture
def font_server() -> Iterator[CountingServer]:
    """A real HTTP server on a free loopback port that answers every request with CSS."""
    server = CountingServer(("127.0.0.1", 0), FontCss)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


FETCH_FIX = (
    "the email styler (premailer) would download it while rendering every email, and hang on a "
    "server that does not answer; `digest` renders without touching the network. Remove the "
    "@import, or copy the rules you need into style.css (for a web font, its @font-face rules, "
    "with the font files on your own site); most mail clients ignore web fonts anyway"
)


@pytest.mark.parametrize(
    ("name", "line"),
    [
        pytest.param("style.css", 4, id="style.css"),
        pytest.param("digest.html.j2", 15, id="style-element"),  # right after <style>
    ],
)
def test_web_font_import_never_fetched(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    font_server: CountingServer,
    name: str,
    line: int,
) -> None:
    """A web font's @import is refused with its line; no command connects to its server."""
    for variable in ("DIGEST_SMTP_URL", "DIGEST_PUBLIC_URL", "DIGEST_STATE"):
        monkeypatch.delenv(variable, raising=False)
    bundled(tmp_path)
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    shutil.copytree(ROOT / "newsletter_templates", tmp_path / "newsletter_templates")
    template = tmp_path / "newsletter_templates" / name
    lines = template.read_text(encoding="utf-8").splitlines(keepends=True)
    url = f"http://127.0.0.1:{font_server.server_address[1]}/font.css"
    lines.insert(line - 1, f"@import url({url});\n")
    template.write_text("".join(lines), encoding="utf-8")

    check = run("check")
    render = run("render", "--month", "2025-11")
    dry_run = run("send", "--month", "2025-11", "--dry-run")
    build = run("build")

    assert font_server.connections == 0
    refused = f"newsletter_templates/{name}:{line}: @import of {url}: {FETCH_FIX}\n"
    for result in (check, render, dry_run):
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", refused)
    assert not (tmp_path / "out").exists()
    # The archive pages are not styled by digest: a browser reads the @import itself.
    assert build.exit_code == 0, build.output


# ------------------------------------------------------------------------------------------------
# Every email keeps its footer

FOOTER_REFUSED = (
    'The November 2025 digest cannot be sent: its HTML has no "Unsubscribe" link. Every email '
    "must carry View in browser, Follow the feeds and Unsubscribe: put them back in the footer of "
    "the newsletter templates (digest.html.j2, digest.txt.j2); if they are there, an item's text "
    "too long to style has cut the page short: shorten it\n"
)


def without_unsubscribe(tmp_path: Path) -> None:
    """Give the bundled catalogue an edited digest.html.j2 that lost its Unsubscribe link."""
    bundled(tmp_path)
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    own = tmp_path / "newsletter_templates"
    own.mkdir()
    page = (ROOT / "newsletter_templates" / "digest.html.j2").read_text(encoding="utf-8")
    edited = page.replace(' · <a href="{{ unsubscribe }}">Unsubscribe</a>', "")
    assert edited != page
    (own / "digest.html.j2").write_text(edited, encoding="utf-8")


def test_render_without_unsubscribe_link_writes_nothing(run: Run, tmp_path: Path) -> None:
    """A template that lost its Unsubscribe link gives no preview staff could send from."""
    without_unsubscribe(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(out)
    result = run("render", "--month", "2025-11")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", FOOTER_REFUSED)
    assert snapshot(out) == before


def test_send_without_unsubscribe_link_sends_nothing(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer
) -> None:
    """No subscriber ever receives a digest without a way to unsubscribe."""
    monkeypatch.setenv("DIGEST_SMTP_URL", smtp_server.url)
    monkeypatch.delenv("DIGEST_PUBLIC_URL", raising=False)
    without_unsubscribe(tmp_path)
    result = run("send", "--month", "2025-11", "--yes")
    # The list was imported into the subscriber store before the render refused; it says so.
    imported = (
        "subscribers.csv: imported: 12 added, 0 updated, 0 ended (no longer in the directory).\n"
    )
    assert (result.exit_code, result.stderr) == (1, imported + FOOTER_REFUSED)
    assert smtp_server.recorder.messages == []
