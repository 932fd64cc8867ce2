"""Measure digest beside its peers, Hugo and Pelican, building the same announcements.

The bench catalogue (bench/make_catalogue.py) is converted, in a separate process and untimed,
into a Hugo site and a Pelican site: one Markdown file per item, front matter with its title, date
and category (and its month, for the archive configuration), the summary as content. Drafts stay
drafts; a scheduled item (dated in the future) is left out by both, as digest leaves it out.

Each peer is built in two configurations, as close as it allows to what digest writes:

- feeds: Atom and RSS (and, for Hugo, a JSON Feed) for everything and for each category, the
  newest `feed_limit` items each, and the home page with the newest `feed_limit` items;
- archive: the same plus one HTML page a month listing that month's items with their summaries
  (digest's `archive/YYYY-MM.html`): a `months` taxonomy in Hugo, period archives in Pelican.

No per-item page is written by either (Hugo: `_build.render = "never"` cascaded to every page;
Pelican: `ARTICLE_SAVE_AS = ""`). Cold builds start from an empty output folder and no caches
(Hugo `--ignoreCache` and a fresh `--cacheDir`, Pelican without its content cache); a no-change
build runs again over the previous output (Pelican with its content cache, Hugo as it is). Every
build is one fresh process, timed from spawn to exit with its peak RSS from wait4, the tools
alternating within each repetition, medians kept (bench/run.py's `run_child`).

    python bench/run.py --peers --sizes 1000,10000 --reps 3
    python bench/peers.py --sizes 1000 --reps 3 --tools hugo      # the same rows, on their own
    python bench/peers.py convert items.yaml SITES                 # the conversion alone
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import run as bench

HERE = Path(__file__).resolve().parent
TOOLS = ("hugo", "pelican")
CONFIGS = ("feeds", "archive")
PELICAN = ("pelican>=4.9,<5", "markdown>=3.5")
DEFAULT_PEERS_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digest-bench" / "peers"
)

# -- the conversion (run in its own process: see bench.make) -----------------------------------


def _when(value: object) -> tuple[str, str]:
    """Return an item's date as Hugo's front matter and Pelican's metadata write it."""
    text = str(value).replace(" ", "T")
    if "T" not in text:
        return text, text
    day, clock = text.split("T", 1)
    clock = (clock + ":00")[:8] if len(clock) == 5 else clock[:8]
    return f"{day}T{clock}", f"{day} {clock[:5]}"


def convert(catalogue: Path, sites: Path) -> None:
    """Write sites/hugo-{feeds,archive} and sites/pelican-{feeds,archive} from the catalogue."""
    import yaml

    data = yaml.load(catalogue.read_bytes(), Loader=yaml.CSafeLoader)
    publication = data["publication"]
    limit = int(publication.get("feed_limit", 50))
    hugo_content = sites / "hugo-content"
    pelican_content = sites / "pelican-content"
    for folder in (hugo_content, pelican_content):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for item in data["items"]:
        hugo_date, pelican_date = _when(item["date"])
        draft = bool(item.get("draft"))
        front = [
            "---",
            f"title: {json.dumps(item['title'])}",
            f"date: {hugo_date}",
            f"categories: [{item['category']}]",
            f"months: [{json.dumps(hugo_date[:7])}]",
            *(["draft: true"] if draft else []),
            "---",
            "",
        ]
        (hugo_content / f"{item['id']}.md").write_text(
            "\n".join(front) + item["summary"] + "\n", encoding="utf-8"
        )
        meta = [
            f"Title: {item['title']}",
            f"Date: {pelican_date}",
            f"Category: {item['category']}",
            f"Slug: {item['id']}",
            *(["Status: draft"] if draft else []),
            "",
            "",
        ]
        (pelican_content / f"{item['id']}.md").write_text(
            "\n".join(meta) + item["summary"] + "\n", encoding="utf-8"
        )
    for config in CONFIGS:
        _hugo_site(sites / f"hugo-{config}", hugo_content, publication, limit, config)
        _pelican_site(sites / f"pelican-{config}", pelican_content, publication, limit, config)


HUGO_HOME = """<!DOCTYPE html>
<html lang="{{ .Site.LanguageCode }}"><head><meta charset="utf-8">
<title>{{ .Site.Title }}</title></head><body><h1>{{ .Site.Title }}</h1>
<ul>{{ range .Site.Taxonomies.categories }}<li>{{ .Page.Title }}:
{{ range .Page.OutputFormats }}<a href="{{ .RelPermalink }}">{{ .Name }}</a> {{ end }}</li>
{{ end }}</ul>
{{ range first LIMIT .Site.RegularPages }}<article id="{{ .File.BaseFileName }}">
<h2>{{ .Title }}</h2>
<time datetime="{{ .Date.Format "2006-01-02" }}">{{ .Date.Format "2 January 2006" }}</time>
{{ .Content }}</article>
{{ end }}{{ with .Site.Taxonomies.months }}<h2>Archive</h2><ul>{{ range .ByTerm.Reverse }}
<li><a href="{{ .Page.RelPermalink }}">{{ .Page.Title }}</a> ({{ .Count }})</li>
{{ end }}</ul>{{ end }}
</body></html>
"""
HUGO_MONTH = """<!DOCTYPE html>
<html lang="{{ .Site.LanguageCode }}"><head><meta charset="utf-8">
<title>{{ .Site.Title }}: {{ .Title }}</title></head><body><h1>{{ .Title }}</h1>
{{ range .Pages }}<article id="{{ .File.BaseFileName }}"><h2>{{ .Title }}</h2>
<time datetime="{{ .Date.Format "2006-01-02" }}">{{ .Date.Format "2 January 2006" }}</time>
{{ .Content }}</article>
{{ end }}</body></html>
"""
HUGO_ATOM = """<?xml version="1.0" encoding="utf-8"?>
{{- $pages := .Pages }}{{ if .IsHome }}{{ $pages = .Site.RegularPages }}{{ end }}
<feed xmlns="http://www.w3.org/2005/Atom"><title>{{ .Site.Title }}</title>
<id>{{ .Permalink }}</id><link href="{{ .Permalink }}atom.xml" rel="self"/>
<updated>{{ now.Format "2006-01-02T15:04:05-07:00" }}</updated>
{{ range first LIMIT $pages }}<entry><title>{{ .Title }}</title>
<id>{{ site.BaseURL }}{{ .File.BaseFileName }}</id>
<updated>{{ .Date.Format "2006-01-02T15:04:05-07:00" }}</updated>
<content type="html">{{ .Content | html }}</content></entry>
{{ end }}</feed>
"""
HUGO_JSON = """{{- $pages := .Pages }}{{ if .IsHome }}{{ $pages = .Site.RegularPages }}{{ end -}}
{"version": "https://jsonfeed.org/version/1.1", "title": {{ .Site.Title | jsonify }}, "items": [
{{- range $i, $p := first LIMIT $pages }}{{ if $i }}, {{ end }}
{"id": {{ printf "%s%s" site.BaseURL $p.File.BaseFileName | jsonify }},
"title": {{ $p.Title | jsonify }}, "content_html": {{ $p.Content | jsonify }}}{{ end }}]}
"""


def _hugo_site(
    site: Path, content: Path, publication: dict[str, object], limit: int, config: str
) -> None:
    shutil.rmtree(site, ignore_errors=True)
    (site / "layouts" / "_default").mkdir(parents=True)
    (site / "content").symlink_to(content.resolve())
    archive = config == "archive"
    taxonomies = 'category = "categories"\n' + ('month = "months"\n' if archive else "")
    text = f"""baseURL = {json.dumps(publication["feeds_url"])}
title = {json.dumps(publication["title"])}
languageCode = {json.dumps(publication.get("language", "en"))}
timeZone = {json.dumps(publication.get("timezone", "UTC"))}
disableKinds = ["section", "taxonomy", "sitemap", "robotsTXT", "404"]
ignoreErrors = ["error-disable-taxonomy"]

[taxonomies]
{taxonomies}
[services.rss]
limit = {limit}

[mediaTypes."application/atom+xml"]
suffixes = ["xml"]
[mediaTypes."application/feed+json"]
suffixes = ["json"]

[outputFormats.Atom]
mediaType = "application/atom+xml"
baseName = "atom"
rel = "alternate"
[outputFormats.JSONFeed]
mediaType = "application/feed+json"
baseName = "feed"
isPlainText = true

[outputs]
home = ["HTML", "RSS", "Atom", "JSONFeed"]
term = ["RSS", "Atom", "JSONFeed"]

# No page of its own for any item: each is only listed (feeds, home, months).
[[cascade]]
[cascade._build]
render = "never"
list = "always"
[cascade._target]
kind = "page"
"""
    if archive:
        text += """
# A month's term page is its archive page: HTML only, no feeds.
[[cascade]]
outputs = ["HTML"]
[cascade._target]
kind = "term"
path = "/months/**"
"""
    (site / "config.toml").write_text(text, encoding="utf-8")
    layouts = site / "layouts"
    (layouts / "index.html").write_text(HUGO_HOME.replace("LIMIT", str(limit)), encoding="utf-8")
    (layouts / "_default" / "term.html").write_text(HUGO_MONTH, encoding="utf-8")
    (layouts / "_default" / "list.atom.xml").write_text(
        HUGO_ATOM.replace("LIMIT", str(limit)), encoding="utf-8"
    )
    (layouts / "_default" / "list.jsonfeed.json").write_text(
        HUGO_JSON.replace("LIMIT", str(limit)), encoding="utf-8"
    )


PELICAN_BASE = """<!DOCTYPE html>
<html lang="{{ DEFAULT_LANG }}"><head><meta charset="utf-8">
<title>{{ SITENAME }}</title></head><body>{% block content %}{% endblock %}</body></html>
"""
PELICAN_INDEX = """{% extends "base.html" %}{% block content %}<h1>{{ SITENAME }}</h1>
<ul>{% for category, _ in categories %}<li>{{ category }}:
<a href="{{ FEED_DOMAIN }}/{{ CATEGORY_FEED_ATOM.format(slug=category.slug) }}">Atom</a>
<a href="{{ FEED_DOMAIN }}/{{ CATEGORY_FEED_RSS.format(slug=category.slug) }}">RSS</a></li>
{% endfor %}</ul>
{% for article in articles[:LIMIT] %}<article id="{{ article.slug }}"><h2>{{ article.title }}</h2>
<time datetime="{{ article.date.isoformat() }}">{{ article.locale_date }}</time>
{{ article.content }}</article>
{% endfor %}{% endblock %}
"""
PELICAN_MONTH = """{% extends "base.html" %}{% block content %}<h1>{{ period | join(" ") }}</h1>
{% for article in dates %}<article id="{{ article.slug }}"><h2>{{ article.title }}</h2>
<time datetime="{{ article.date.isoformat() }}">{{ article.locale_date }}</time>
{{ article.content }}</article>
{% endfor %}{% endblock %}
"""


def _pelican_site(
    site: Path, content: Path, publication: dict[str, object], limit: int, config: str
) -> None:
    shutil.rmtree(site, ignore_errors=True)
    templates = site / "theme" / "templates"
    templates.mkdir(parents=True)
    (site / "content").symlink_to(content.resolve())
    author = publication.get("author")
    name = author.get("name", "") if isinstance(author, dict) else ""
    month = "archive/{date:%Y}-{date:%m}.html" if config == "archive" else ""
    feeds_url = str(publication["feeds_url"]).rstrip("/")
    settings = f"""# Written by bench/peers.py: the closest Pelican comes to what digest writes.
AUTHOR = {name!r}
SITENAME = {publication["title"]!r}
SITEURL = {feeds_url!r}
FEED_DOMAIN = SITEURL
TIMEZONE = {publication.get("timezone", "UTC")!r}
DEFAULT_LANG = {publication.get("language", "en")!r}
PATH = "content"
THEME = "theme"
THEME_STATIC_PATHS = []
STATIC_PATHS = []
WITH_FUTURE_DATES = False
DEFAULT_PAGINATION = False
FEED_MAX_ITEMS = {limit}
FEED_ALL_ATOM = "all.atom.xml"
FEED_ALL_RSS = "all.rss.xml"
CATEGORY_FEED_ATOM = "{{slug}}.atom.xml"
CATEGORY_FEED_RSS = "{{slug}}.rss.xml"
FEED_ATOM = None
FEED_RSS = None
TRANSLATION_FEED_ATOM = None
TRANSLATION_FEED_RSS = None
AUTHOR_FEED_ATOM = None
AUTHOR_FEED_RSS = None
TAG_FEED_ATOM = None
TAG_FEED_RSS = None
RSS_FEED_SUMMARY_ONLY = False
# No page of its own for any item, category, tag or author: only the feeds and the home page.
ARTICLE_SAVE_AS = ""
ARTICLE_LANG_SAVE_AS = ""
DRAFT_SAVE_AS = ""
DRAFT_LANG_SAVE_AS = ""
PAGE_SAVE_AS = ""
PAGE_LANG_SAVE_AS = ""
CATEGORY_SAVE_AS = ""
TAG_SAVE_AS = ""
AUTHOR_SAVE_AS = ""
DIRECT_TEMPLATES = ["index"]
YEAR_ARCHIVE_SAVE_AS = ""
MONTH_ARCHIVE_SAVE_AS = {month!r}
DAY_ARCHIVE_SAVE_AS = ""
# Its content cache: emptied for a cold build, kept for a no-change build.
CACHE_CONTENT = True
LOAD_CONTENT_CACHE = True
CACHE_PATH = "cache"
"""
    (site / "pelicanconf.py").write_text(settings, encoding="utf-8")
    (templates / "base.html").write_text(PELICAN_BASE, encoding="utf-8")
    (templates / "index.html").write_text(
        PELICAN_INDEX.replace("LIMIT", str(limit)), encoding="utf-8"
    )
    (templates / "period_archives.html").write_text(PELICAN_MONTH, encoding="utf-8")


# -- the tools -----------------------------------------------------------------------------------


def _apt_install(package: str) -> bool:
    """Install a Debian package as root or with `sudo -n`; return whether it worked."""
    if not shutil.which("apt-get"):
        return False
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"] if shutil.which("sudo") else None
    if prefix is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        if subprocess.run([*prefix, *argv], env=env, stdout=subprocess.DEVNULL).returncode:
            return False
    return True


def hugo(install: bool) -> str | None:
    """Return the hugo program; with `install`, install Debian's hugo package when missing."""
    found = shutil.which("hugo")
    if found or not install:
        return found
    print("  installing Debian's hugo package (a peer in the bench)", file=sys.stderr)
    return shutil.which("hugo") if _apt_install("hugo") else None


def pelican(install: bool, peers_dir: Path) -> str | None:
    """Return the pelican program of the bench's own virtualenv under `peers_dir`.

    With `install`, the virtualenv is made and Pelican (with Markdown) installed into it from the
    package index when missing: never into digest's own environment, of which it is no part.
    """
    venv = peers_dir / "venv"
    program = venv / "bin" / "pelican"
    if program.exists() or not install:
        return str(program) if program.exists() else None
    print(f"  installing Pelican into {venv} (a peer in the bench)", file=sys.stderr)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PELICAN]
    if not made or subprocess.run(pip, stdout=subprocess.DEVNULL).returncode:
        return None
    return str(program) if program.exists() else None


def versions(hugo_program: str | None, pelican_program: str | None) -> str:
    found = []
    for program in (hugo_program, pelican_program):
        if program:
            done = subprocess.run([program, "version" if program == hugo_program else "--version"],
                                  capture_output=True, text=True)  # fmt: skip
            found.append(done.stdout.strip().splitlines()[0] if done.stdout.strip() else program)
    return "; ".join(found)


# -- the rows ------------------------------------------------------------------------------------


def bench_peers(
    count: int,
    reps: int,
    progress: Callable[[str], None],
    tools: tuple[str, ...] = TOOLS,
    install: bool = True,
    peers_dir: Path = DEFAULT_PEERS_DIR,
) -> tuple[list[bench.Row], list[str]]:
    """Return the peer rows at `count` items, and notes on what could not be measured."""
    notes: list[str] = []
    programs: dict[str, str] = {}
    if "hugo" in tools:
        found = hugo(install)
        if found:
            programs["hugo"] = found
        else:
            notes.append("hugo is missing and could not be installed: apt-get install hugo")
    if "pelican" in tools:
        found = pelican(install, peers_dir)
        if found:
            programs["pelican"] = found
        else:
            notes.append(f"Pelican is missing and could not be installed into {peers_dir}/venv")
    work = Path(tempfile.mkdtemp(prefix=f"digest-peers-{bench.label(count)}-"))
    size = bench.label(count)
    try:
        catalogue = bench.make(work, count)
        subprocess.run(
            [bench.PYTHON, str(HERE / "peers.py"), "convert", str(catalogue), str(work)],
            check=True,
        )

        def digest(cold: bool) -> bench.Sample:
            if cold:
                bench.fresh(work, "out", ".digest")
            return bench.run_child([bench.DIGEST, "build", "-c", str(catalogue), "-o", "out"], work)

        def peer(tool: str, config: str, cold: bool) -> bench.Sample:
            site = work / f"{tool}-{config}"
            if tool == "hugo":
                if cold:
                    bench.fresh(site, "public", "resources", "hugo-cache")
                argv = [programs["hugo"], "--quiet", "--cacheDir", str(site / "hugo-cache")]
                return bench.run_child([*argv, *(["--ignoreCache"] if cold else [])], site)
            if cold:
                bench.fresh(site, "output", "cache")
            argv = [programs["pelican"], "content", "-s", "pelicanconf.py", "-o", "output", "-q"]
            return bench.run_child(argv, site)

        peers = [(tool, config) for tool in tools if tool in programs for config in CONFIGS]
        cold_digest: list[bench.Sample] = []
        cold_peer: dict[tuple[str, str], list[bench.Sample]] = {p: [] for p in peers}
        for rep in range(reps):
            for tool, config in peers:
                cold_peer[(tool, config)].append(peer(tool, config, cold=True))
            cold_digest.append(digest(cold=True))
            progress(f"peers, cold {size} {rep + 1}/{reps}")
        noop_digest: list[bench.Sample] = []
        noop_peer: dict[tuple[str, str], list[bench.Sample]] = {p: [] for p in peers}
        for rep in range(reps):
            for tool, config in peers:
                noop_peer[(tool, config)].append(peer(tool, config, cold=False))
            noop_digest.append(digest(cold=False))
            progress(f"peers, no change {size} {rep + 1}/{reps}")
        rows = []
        for tool, config in peers:
            name = f"{'Hugo' if tool == 'hugo' else 'Pelican'} {config}"
            what = "feeds+home" if config == "feeds" else "feeds+home+months"
            cold = bench.Row(f"cold vs {name}", size, baseline_name=f"{name}: {what}")
            cold.subject, cold.baseline = cold_digest, cold_peer[(tool, config)]
            cold.target = "<= 0.9" if tool == "hugo" and config == "feeds" else ""
            rss = bench.Row(f"peak RSS vs {name}", size, compare="rss")
            rss.baseline_name = f"{name}: {what}"
            rss.subject, rss.baseline = cold_digest, cold_peer[(tool, config)]
            if tool == "pelican" and config == "feeds" and count >= 100_000:
                rss.target = "<= 1.0"
            noop = bench.Row(f"no change vs {name}", size, baseline_name=f"{name}: {what}")
            noop.subject, noop.baseline = noop_digest, noop_peer[(tool, config)]
            noop.target = "<= 0.1" if tool == "hugo" and config == "feeds" else ""
            rows += [cold, rss, noop]
        return rows, notes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if sys.argv[1:2] == ["convert"]:
        convert(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="catalogue sizes")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--tools", default="hugo,pelican", help="comma-separated: hugo, pelican")
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR, help="Pelican's venv")
    parser.add_argument("--no-install", action="store_true", help="install no missing peer")
    args = parser.parse_args()
    tools = tuple(t for t in args.tools.split(",") if t)
    bench.compile_digest()
    rows: list[bench.Row] = []
    notes: list[str] = []
    for count in (int(s) for s in args.sizes.split(",") if s):
        found, said = bench_peers(
            count,
            args.reps,
            lambda text: print(f"  {text}", file=sys.stderr, flush=True),
            tools,
            not args.no_install,
            args.peers_dir,
        )
        rows += found
        notes += [n for n in said if n not in notes]
    print(bench.table(rows, args.reps))
    for note in notes:
        print(f"note: {note}")
    print(f"peers: {versions(shutil.which('hugo'), str(args.peers_dir / 'venv/bin/pelican'))}")


if __name__ == "__main__":
    main()
