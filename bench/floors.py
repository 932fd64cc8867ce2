"""The floors digest is measured against: the plainest code that does the same job.

Each is run in a fresh process by bench/run.py, as `python bench/floors.py NAME ARGS...`.

- parse CATALOGUE: `yaml.load(..., Loader=CSafeLoader)` with the garbage collector paused.
- parse-feedgen CATALOGUE OUT: that load, then feedgen writing the same feeds digest writes (Atom
  and RSS, the combined feed and one per category, the newest feed_limit items, their summaries as
  content), and the JSON Feed with json.dumps.
- imports: `import yaml, feedgen.feed`.
- messages N: N bare EmailMessage objects (From, To, Subject, a text and a fixed HTML part),
  serialized as SMTP sends them; prints the seconds the loop took.
- smtp-loop N PORT: one smtplib connection to 127.0.0.1:PORT, reused to send N fixed messages one
  after another (MAIL, RCPT, DATA each); prints the seconds the loop took.
- smtp-build-loop N PORT: what a plain newsletter script does: over one smtplib connection, build
  each recipient's bare EmailMessage (as `messages` does) and send it with send_message. Not a
  floor: a reference point for the send row, with no target.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email.message import EmailMessage

FIXED_HTML = "<!DOCTYPE html><html><body>" + "<p>An announcement of the month.</p>" * 200
FIXED_TEXT = "An announcement of the month.\n" * 200


def parse(path: str) -> object:
    import yaml

    raw = Path(path).read_bytes()
    gc.disable()
    try:
        return yaml.load(raw, Loader=yaml.CSafeLoader)
    finally:
        gc.enable()


def parse_feedgen(path: str, out: str) -> None:
    import json

    from feedgen.feed import FeedGenerator

    data = parse(path)
    assert isinstance(data, dict)
    publication = data["publication"]
    limit = int(publication.get("feed_limit", 50))
    items = sorted(
        (i for i in data["items"] if not i.get("draft")), key=lambda i: str(i["date"]), reverse=True
    )
    feeds = {"all": items[:limit]}
    for category in publication["categories"]:
        feeds[category["slug"]] = [i for i in items if i["category"] == category["slug"]][:limit]
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    for slug, chosen in feeds.items():
        fg = FeedGenerator()
        fg.id(f"{publication['feeds_url']}{slug}")
        fg.title(publication["title"])
        fg.subtitle(publication.get("subtitle") or publication["title"])
        fg.link(href=f"{publication['feeds_url']}{slug}.atom.xml", rel="self")
        fg.link(href=publication["site_url"], rel="alternate")
        fg.author({"name": publication["author"]["name"]})
        fg.language(publication.get("language", "en"))
        fg.updated("2025-11-30T00:00:00Z")
        for item in chosen:
            fe = fg.add_entry(order="append")
            fe.id(f"{publication['site_url']}{item['id']}")
            fe.title(item["title"])
            day = str(item["date"])[:10]
            fe.updated(f"{day}T00:00:00Z")
            fe.content(item["summary"], type="html")
            fe.description(item["summary"])
        (directory / f"{slug}.atom.xml").write_bytes(fg.atom_str(pretty=True))
        (directory / f"{slug}.rss.xml").write_bytes(fg.rss_str(pretty=True))
        document = {
            "version": "https://jsonfeed.org/version/1.1",
            "title": publication["title"],
            "items": [
                {"id": i["id"], "title": i["title"], "content_html": i["summary"]} for i in chosen
            ],
        }
        (directory / f"{slug}.json").write_text(json.dumps(document, indent=2))


def bare_message(index: int) -> EmailMessage:
    """Return recipient `index`'s bare message: From, To, Subject, the fixed text and HTML."""
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = "Office of Communications <news@example.edu>"
    message["To"] = f"person{index:06d}@faculty.example.org"
    message["Subject"] = "Campus Newsroom — October 2025"
    message.set_content(FIXED_TEXT)
    message.add_alternative(FIXED_HTML, subtype="html")
    return message


def messages(count: int) -> float:
    started = time.perf_counter()
    for index in range(count):
        bare_message(index).as_bytes()
    return time.perf_counter() - started


def smtp_loop(count: int, port: int) -> float:
    import smtplib
    from email import policy

    # As SMTP carries it: CRLF line ends (the default policy's LF would make one long line).
    data = bare_message(0).as_bytes(policy=policy.SMTP)
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as client:
        for index in range(count):
            client.sendmail("news@example.edu", [f"person{index:06d}@faculty.example.org"], data)
    return time.perf_counter() - started


def smtp_build_loop(count: int, port: int) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port) as client:
        for index in range(count):
            client.send_message(bare_message(index))


def main() -> None:
    name, *args = sys.argv[1:]
    if name == "parse":
        parse(args[0])
    elif name == "parse-feedgen":
        parse_feedgen(args[0], args[1])
    elif name == "imports":
        import feedgen.feed  # noqa: F401
        import yaml  # noqa: F401
    elif name == "messages":
        print(f"{messages(int(args[0])):.6f}")
    elif name == "smtp-loop":
        print(f"{smtp_loop(int(args[0]), int(args[1])):.6f}")
    elif name == "smtp-build-loop":
        smtp_build_loop(int(args[0]), int(args[1]))
    else:
        raise SystemExit(f"unknown floor {name}")


if __name__ == "__main__":
    main()
