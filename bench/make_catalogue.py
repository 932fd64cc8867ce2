"""Write a synthetic but realistic catalogue of N items (and a subscriber list) for the benchmarks.

Deterministic for a given N: the same N gives the same bytes. Items spread over ten years ending in
November 2025, eight categories, three sections, Markdown summaries (emphasis, links, some lists),
a body on one item in five, an image on one in eight, tags, a few drafts and scheduled items.

    python bench/make_catalogue.py 10000 -o /tmp/bench/items.yaml --subscribers 1000
"""

from __future__ import annotations

import argparse
import random
from datetime import date, timedelta
from pathlib import Path

CATEGORIES = [
    ("institutional-advancement", "Institutional Advancement"),
    ("engagement", "Engagement"),
    ("recognition", "Recognition"),
    ("collaboration", "Collaboration"),
    ("visit", "Visit"),
    ("achievement", "Achievement"),
    ("research", "Research"),
    ("teaching", "Teaching & Learning"),
]
SECTIONS = [("features", "Features"), ("events", "Events & Accomplishments"), ("media", "Media")]
_WORDS = (
    "university faculty research students campus award professor program center science "
    "engineering medicine community partnership innovation global forum lecture ceremony "
    "laboratory scholarship grant symposium delegation alumni excellence sustainable digital "
    "health ocean climate energy data quantum robotics policy society culture music library"
)
WORDS = _WORDS.split()
NAMES = ["Chan", "Wong", "Lee", "Cheung", "Lau", "Ng", "Ho", "Yip", "Tang", "Leung", "Kwok"]
FIRST = date(2015, 12, 1)
LAST = date(2025, 11, 30)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def _sentence(rng: random.Random) -> str:
    text = _words(rng, rng.randint(8, 18))
    return text[0].upper() + text[1:] + "."


def _summary(rng: random.Random, index: int) -> str:
    """Return a paragraph of inline Markdown, sometimes two, sometimes with a list."""
    parts = [_sentence(rng) for _ in range(rng.randint(2, 4))]
    parts[0] = f"**{rng.choice(NAMES)}** " + parts[0][0].lower() + parts[0][1:]
    if index % 3 == 0:
        link = f"https://news.example.edu/stories/{index}"
        parts.append(f"See the [full story]({link}) and the *programme*.")
    paragraphs = [" ".join(parts)]
    if index % 7 == 0:
        paragraphs.append("\n".join(f"- {_words(rng, 4)}" for _ in range(3)))
    if index % 11 == 0:
        paragraphs.append(_sentence(rng))
    return "\n\n".join(paragraphs)


def _body(rng: random.Random) -> str:
    paragraphs = [" ".join(_sentence(rng) for _ in range(4)) for _ in range(rng.randint(2, 4))]
    paragraphs.insert(1, f"## {_words(rng, 3).title()}")
    return "\n\n".join(paragraphs)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _block(text: str, indent: str = "      ") -> str:
    return "|\n" + "\n".join(indent + line if line else "" for line in text.split("\n")) + "\n"


def catalogue(count: int, edition: int = 0) -> str:
    """Return the YAML text of a catalogue with `count` items, newest first.

    A non-zero `edition` changes the title of the middle item, as an editor fixing one item would.
    """
    rng = random.Random(count)
    span = (LAST - FIRST).days
    lines = [
        "# A synthetic catalogue for digest's benchmarks (bench/make_catalogue.py).",
        "publication:",
        "  title: Campus Newsroom",
        "  subtitle: Office of Communications",
        "  site_url: https://news.example.edu/",
        "  feeds_url: https://news.example.edu/feeds/",
        "  author: {name: Office of Communications, email: news@example.edu}",
        "  language: en",
        "  timezone: Asia/Hong_Kong",
        "  feed_limit: 50",
        "  categories:",
        *(f"    - {{slug: {slug}, name: {_quoted(name)}}}" for slug, name in CATEGORIES),
        "  sections:",
        *(f"    - {{slug: {slug}, name: {_quoted(name)}}}" for slug, name in SECTIONS),
        "newsletter:",
        '  from: "Office of Communications <news@example.edu>"',
        "  reply_to: news@example.edu",
        '  subject: "Campus Newsroom — {month:%B %Y}"',
        '  schedule: "0 9 1 * *"',
        '  unsubscribe: "mailto:news@example.edu?subject=unsubscribe"',
        "  subscribers: subscribers.csv",
        "items:",
    ]
    for index in range(count):
        # Newest first, evenly spread over ten years, a little jitter within the day.
        day = LAST - timedelta(days=span * index // max(count, 1))
        category = CATEGORIES[rng.randrange(len(CATEGORIES))][0]
        lines.append(f"  - id: item-{index:06d}")
        title = _sentence(rng)[:-1].title()
        if edition and index == count // 2:
            title = f"{title} (edit {edition})"
        lines.append(f"    title: {_quoted(title)}")
        if index % 13 == 5:
            lines.append(f"    date: {day.isoformat()}T{rng.randint(8, 18):02d}:30")
        elif index == 3:
            lines.append("    date: 2099-01-01")  # scheduled: published nowhere yet
        else:
            lines.append(f"    date: {day.isoformat()}")
        if index % 17 == 0:
            lines.append(f"    updated: {(day + timedelta(days=1)).isoformat()}")
        lines.append(f"    category: {category}")
        if index % 4 != 3:
            lines.append(f"    section: {SECTIONS[index % 4 % 3][0]}")
        lines.append("    summary: " + _block(_summary(rng, index)).rstrip("\n"))
        if index % 5 == 0:
            lines.append("    body: " + _block(_body(rng)).rstrip("\n"))
        if index % 9 == 0:
            lines.append(f"    link: https://news.example.edu/stories/{index}")
        if index % 8 == 0:
            lines.append(
                f"    image: {{url: https://news.example.edu/img/{index}.jpg, "
                f"alt: {_quoted(_words(rng, 5))}}}"
            )
        if index % 6 == 0:
            lines.append(f"    tags: [{rng.choice(WORDS)}, {rng.choice(WORDS)}]")
        if index % 997 == 1:
            lines.append("    draft: true")
    return "\n".join(lines) + "\n"


def subscribers(count: int) -> str:
    """Return a subscriber list of `count` addresses; one in four picks categories."""
    rng = random.Random(-count)
    rows = ["email,name,categories"]
    for index in range(count):
        name = f"{rng.choice(NAMES)} {rng.choice(WORDS).title()}"
        picked = ""
        if index % 4 == 0:
            picked = ";".join(sorted(rng.sample([slug for slug, _ in CATEGORIES], 3)))
        rows.append(f"person{index:06d}@faculty.example.org,{name},{picked}")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("items", type=int, help="how many items")
    parser.add_argument("-o", "--output", type=Path, default=Path("items.yaml"))
    parser.add_argument(
        "--subscribers", type=int, default=10, help="how many subscribers, in subscribers.csv"
    )
    parser.add_argument(
        "--edition", type=int, default=0, help="a number: change the middle item's title to match"
    )
    parser.add_argument(
        "--dkim",
        metavar="SELECTOR",
        default=None,
        help="add newsletter.dkim for example.edu with this selector (the key: DIGEST_DKIM_KEY)",
    )
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = catalogue(args.items, args.edition)
    if args.dkim:
        marker = "  subscribers: subscribers.csv\n"
        text = text.replace(
            marker, f"{marker}  dkim: {{domain: example.edu, selector: {args.dkim}}}\n"
        )
    args.output.write_text(text, encoding="utf-8")
    (args.output.parent / "subscribers.csv").write_text(
        subscribers(args.subscribers), encoding="utf-8"
    )
    print(f"{args.output}: {args.items} items; subscribers.csv: {args.subscribers} subscribers")


if __name__ == "__main__":
    main()
