"""Render a month's digest: HTML with its CSS inlined once, a text twin, and the subject.

Rendering is split in two so that thousands of subscribers cost one inlining per distinct
category selection: `Renderer.render` fills the templates and runs premailer with placeholder
tokens where the personal parts go, and `Rendered.personalise` swaps the tokens for one
recipient's values.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import logging
import re
import textwrap
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from digest.errors import RenderError
from digest.months import Month
from digest.publish import calendars, markup
from digest.publish.catalogue import Catalogue, Category, IssuePlan, Item, subject_line

# Gmail clips an HTML body larger than this, hiding the rest behind "[Message clipped]".
GMAIL_CLIP_BYTES = 102 * 1024

# Tokens stand where the personal parts go. Letters, digits and hyphens only: they must pass
# through lxml's HTML serializer unchanged, which percent-encodes other characters in href values.
# They are kept in every frozen rendering in the ledger, so they never change. No token ends with
# the start of one (their first letter, D, is in them nowhere else), so two never overlap: a
# search finds exactly where a template put each, whatever text is next to it.
GREETING_TOKEN = "DIGEST-PERSONAL-GREETING-5f0c2e"  # noqa: S105 -- a placeholder, not a secret
UNSUBSCRIBE_TOKEN = "DIGEST-PERSONAL-UNSUBSCRIBE-5f0c2e"  # noqa: S105
# Only in digests rendered for a send with public pages (DIGEST_PUBLIC_URL): the reader's own
# preferences link. A rendering frozen without it (or before it existed) simply lacks it.
PREFERENCES_TOKEN = "DIGEST-PERSONAL-PREFERENCES-5f0c2e"  # noqa: S105

TEMPLATE_DIRECTORY = "newsletter_templates"


def default_templates() -> Path:
    """Return the templates `digest` ships: inside the package, or in the source tree."""
    packaged = Path(__file__).resolve().parents[1] / TEMPLATE_DIRECTORY
    if packaged.is_dir():
        return packaged
    # An editable install runs from the source tree, where the templates sit at the top.
    return Path(__file__).resolve().parents[3] / TEMPLATE_DIRECTORY


@dataclass(frozen=True, slots=True)
class Section:
    """One category's items in a digest."""

    category: Category
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    """The items of one month, and what the editors set for it (`newsletter.issues`).

    By the date rule the sections are the categories in declared order, newest first in each.
    An explicit list (`items:` in the month's issue) is shown in its own order: each run of
    consecutive items of one category is a section, so a category can head more than one.
    """

    month: Month
    sections: tuple[Section, ...]
    intro: str | None = None  # Markdown, not yet sanitized
    subject: str | None = None  # the month's own subject template, overriding the default
    # "Coming up": published events starting in the following month, whatever their item's date.
    coming: tuple[Item, ...] = ()

    @property
    def items(self) -> tuple[Item, ...]:
        """Return every item of the issue, in the order the digest shows them."""
        return tuple(item for section in self.sections for item in section.items)

    @property
    def categories(self) -> tuple[str, ...]:
        """Return the slugs of the categories the issue shows, each once, in order."""
        return tuple(dict.fromkeys(s.category.slug for s in self.sections))

    def only(self, categories: frozenset[str] | None) -> Issue:
        """Return the issue cut down to `categories` (None: all of them)."""
        if categories is None:
            return self
        kept = [s for s in self.sections if s.category.slug in categories]
        coming = tuple(i for i in self.coming if i.category in categories)
        return dataclasses.replace(self, sections=_runs(kept), coming=coming)


def _runs(sections: Iterable[Section]) -> tuple[Section, ...]:
    """Return sections with each pair of neighbours of one category joined into one."""
    joined: list[Section] = []
    for section in sections:
        if joined and joined[-1].category == section.category:
            joined[-1] = Section(section.category, joined[-1].items + section.items)
        else:
            joined.append(section)
    return tuple(joined)


def issue(catalogue: Catalogue, month: Month, now: datetime) -> Issue:
    """Select the month's published items (drafts and scheduled ones left out).

    The month's `newsletter.issues` entry, if any, adds its intro and subject, and its `items`
    list replaces the date rule: those items, in that order, as far as they are public at `now`.
    """
    tz = catalogue.publication.tz
    plan = catalogue.newsletter.plan(month) if catalogue.newsletter else None
    if plan is not None and plan.items is not None:
        shaped = _planned(catalogue, plan, month, now, {i.id: i for i in catalogue.items})
    else:
        chosen = [i for i in catalogue.published(now) if Month.of(i.date, tz) == month]
        shaped = _dated(catalogue, month, chosen, plan)
    return dataclasses.replace(shaped, coming=coming_up(catalogue, now).get(month.shift(1), ()))


def _dated(catalogue: Catalogue, month: Month, chosen: list[Item], plan: IssuePlan | None) -> Issue:
    """Return the issue of `chosen`, a month's items by date, grouped by declared category."""
    sections = []
    for category in catalogue.publication.categories:
        items = tuple(i for i in chosen if i.category == category.slug)
        if items:
            sections.append(Section(category, items))
    if plan is None:
        return Issue(month, tuple(sections))
    return Issue(month, tuple(sections), intro=plan.intro, subject=plan.subject)


def _planned(
    catalogue: Catalogue, plan: IssuePlan, month: Month, now: datetime, by_id: dict[str, Item]
) -> Issue:
    """Return the issue of an explicit list: its items in its order, runs of one category joined.

    The catalogue has checked that every id names an item that is no draft and is dated before
    the month ends; one whose date has not come yet at `now` is left out, as the date rule
    leaves out every scheduled item.
    """
    categories = {c.slug: c for c in catalogue.publication.categories}
    chosen = [by_id[i] for i in plan.items or () if by_id[i].date <= now and not by_id[i].draft]
    sections = _runs(Section(categories[i.category], (i,)) for i in chosen)
    return Issue(month, sections, intro=plan.intro, subject=plan.subject)


def coming_up(catalogue: Catalogue, now: datetime) -> dict[Month, tuple[Item, ...]]:
    """Return the published events by the month they start in (publication zone), by start."""
    tz = catalogue.publication.tz
    found: dict[Month, list[Item]] = {}
    for item in calendars.events(catalogue, now):
        assert item.event is not None  # noqa: S101 -- events() returns events only
        found.setdefault(Month.of(calendars.start_moment(item.event, tz), tz), []).append(item)
    return {month: tuple(items) for month, items in found.items()}


def issues(catalogue: Catalogue, now: datetime) -> list[Issue]:
    """Return the issue of every month with published items, newest month first.

    The same issues `issue` gives month by month, found in one pass over the catalogue.
    """
    tz = catalogue.publication.tz
    by_month: dict[Month, list[Item]] = {}
    months: dict[int, Month] = {}  # thousands of items share each date object
    for item in catalogue.published(now):
        month = months.get(id(item.date))
        if month is None:
            month = months[id(item.date)] = Month.of(item.date, tz)
        by_month.setdefault(month, []).append(item)
    plans = {p.month: p for p in catalogue.newsletter.issues} if catalogue.newsletter else {}
    by_id = {i.id: i for i in catalogue.items} if plans else {}
    found = {}
    for month, chosen in by_month.items():
        plan = plans.get(str(month))
        if plan is None or plan.items is None:
            found[month] = _dated(catalogue, month, chosen, plan)
    for plan in plans.values():
        if plan.items is not None:
            month = Month.parse(plan.month)
            shaped = _planned(catalogue, plan, month, now, by_id)
            if shaped.items:  # listed items none of which is public yet: no issue yet
                found[month] = shaped
    coming = coming_up(catalogue, now)
    return [
        dataclasses.replace(found[month], coming=coming.get(month.shift(1), ()))
        for month in sorted(found, reverse=True)
    ]


def archive_path(month: Month) -> str:
    """Return where the web version of a month's digest is published, relative to feeds_url."""
    return f"archive/{month}.html"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A digest for one category selection, with tokens where the personal parts go."""

    subject: str
    html: str
    text: str
    item_count: int

    def personalise(
        self, name: str | None, unsubscribe: str, preferences: str | None = None
    ) -> tuple[str, str]:
        """Return (html, text) for one recipient: the greeting and the footer's links filled in.

        `preferences` is the recipient's preferences URL, needed when the digest was rendered
        with `preferences=True`.
        """
        html_values, text_values = personal_values(name, unsubscribe, preferences)
        return fill(self.html, html_values), fill(self.text, text_values)


TOKENS = (GREETING_TOKEN, UNSUBSCRIBE_TOKEN, PREFERENCES_TOKEN)
_TOKEN = re.compile("|".join(map(re.escape, sorted(TOKENS, key=len, reverse=True))))


def fill(template: str, values: Mapping[str, str]) -> str:
    """Return `template` with each token replaced by its value, in one pass over the template.

    A value is never searched for tokens: a subscriber called DIGEST-PERSONAL-UNSUBSCRIBE-5f0c2e
    is greeted by that name, whatever order the tokens are filled in.
    """
    return _TOKEN.sub(lambda found: values[found.group()], template)


def personal_values(
    name: str | None, unsubscribe: str, preferences: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Return what each token stands for in one recipient's digest: in its HTML, in its text.

    Without `preferences` there is no value for PREFERENCES_TOKEN: a digest that holds it cannot
    be filled (`delivery.prepare` refuses such a send first).
    """
    greeting = f"Dear {name}," if name else "Dear colleague,"
    html_values = {
        GREETING_TOKEN: html.escape(greeting, quote=False),
        UNSUBSCRIBE_TOKEN: html.escape(unsubscribe),
    }
    text_values = {GREETING_TOKEN: greeting, UNSUBSCRIBE_TOKEN: unsubscribe}
    if preferences is not None:
        html_values[PREFERENCES_TOKEN] = html.escape(preferences)
        text_values[PREFERENCES_TOKEN] = preferences
    return html_values, text_values


class _Fields(dict[str, Any]):
    """An item's fields for the templates: a dict whose keys are also its attributes.

    Jinja reads `item.title` as the attribute first and the key after; on a plain dict the
    attribute lookup fails (an exception each time) before the key is found, about two thirds of
    filling an archive page. Here the attribute is found at once, with the same value; a key
    that is not a field is looked up as before (dict's own methods first, then the key), so
    a template sees exactly what a plain dict gave it.
    """

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self.__dict__ = self


class Renderer:
    """Renders a catalogue's digests; holds the templates and one premailer instance."""

    def __init__(
        self,
        catalogue: Catalogue,
        templates: Path | None = None,
        helper: Callable[[str], Callable[[], str | None]] | None = None,
    ) -> None:
        """`helper`: hands a page to be inlined in another process (`helper.Helper.submit`);
        what it gives back answers the page inlined, or None (it is inlined here)."""
        self.catalogue = catalogue
        self._helper = helper
        own = catalogue.path.parent / TEMPLATE_DIRECTORY
        # The office's own templates first; any file they lack comes from the shipped ones.
        search = [templates] if templates else [own] if own.is_dir() else []
        search.append(default_templates())
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(p) for p in search]),
            # Not select_autoescape(): its default does not cover `.j2`, so a `<script>` in a title
            # would pass raw into the HTML. The text template is plain text and escapes nothing.
            autoescape=_escapes,  # noqa: S701 -- escapes all but the .txt.j2 template
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.filters["wrap"] = _wrap
        self._inliner: Any = None
        self._tz = catalogue.publication.tz  # a property that looks the zone up on every use
        self._cache: dict[tuple[Issue, bool], Rendered] = {}  # by (selection, preferences)
        # An item's fields for the templates, kept: a send shows each item in many selections.
        self._entries: dict[Item, dict[str, Any]] = {}
        # Each moment's date as the templates write it: thousands of items share each month.
        self._days: dict[datetime, tuple[str, str]] = {}

    def render(
        self,
        chosen: Issue,
        categories: frozenset[str] | None = None,
        *,
        web: bool = False,
        preferences: bool = False,
    ) -> Rendered:
        """Return the digest for `chosen`, cut to `categories`.

        `web` gives the archive page instead: no personal parts, no text twin, and the CSS left in
        its `<style>` element, where every browser applies it: inlining is for mail clients, and
        it took two fifths of a build's time. `preferences`: the footer links to each reader's
        preferences page (PREFERENCES_TOKEN), for a send with public pages.
        """
        if web:  # rendered once per build: not kept, as every month's page would be
            selection = chosen.only(categories)
            context = self._context(selection, web)
            page = self._fill("digest.html.j2", context)
            return Rendered(context["subject"], page, "", len(selection.items))
        return self.start(chosen, categories, preferences=preferences)()

    def start(
        self, chosen: Issue, categories: frozenset[str] | None = None, *, preferences: bool = False
    ) -> Callable[[], Rendered]:
        """Begin `render` of an email: the templates now, each raising as `render` would, and the
        page handed to the helper; the call returned finishes it, giving what `render` gives."""
        selection = chosen.only(categories)
        key = (selection, preferences)
        kept = self._cache.get(key)
        if kept is not None:
            return lambda: kept
        context = self._context(selection, False, preferences)
        page = self._fill("digest.html.j2", context)
        text = self._fill("digest.txt.j2", context)
        self._refuse_tokens(selection, context)
        self._refuse_fetches(page)  # before premailer sees the page: it would fetch them
        answer = self._helper(page) if self._helper is not None else None

        def finish() -> Rendered:
            made = self._cache.get(key)
            if made is None:
                styled = answer() if answer is not None else None
                inlined = self._inline(page) if styled is None else _ended_once(styled)
                footer = {
                    "View in browser": context["view_url"],
                    "Follow the feeds": context["feeds_url"],
                    "Unsubscribe": UNSUBSCRIBE_TOKEN,
                }
                # libxml2, inside premailer, cuts a page short after a text over 10 MB: what
                # comes after, the footer among it, would be lost without a word.
                _require_footer(selection.month, footer, inlined, text)
                made = self._cache[key] = Rendered(
                    context["subject"], inlined, text, len(selection.items)
                )
            return made

        return finish

    def check(self, chosen: Issue) -> None:
        """Raise RenderError if `chosen`'s email cannot be rendered or styling it would fetch.

        What `digest check` runs: the templates filled in, and the test every email passes
        before premailer styles it; premailer itself does not run.
        """
        context = self._context(chosen, web=False)
        self._fill("digest.txt.j2", context)
        self._refuse_fetches(self._fill("digest.html.j2", context))

    def _subject(self, selection: Issue) -> str:
        """Return the month's subject line, by the rule `digest check` applies."""
        newsletter = self.catalogue.newsletter
        month = selection.month
        if newsletter is None:
            return f"{self.catalogue.publication.title} — {month.label}"
        template, where = newsletter.subject, "newsletter.subject"
        if selection.subject is not None:
            template, where = selection.subject, f'newsletter.issues."{month}".subject'
        try:
            return subject_line(template, month.first_day)
        except ValueError as exc:
            raise RenderError(f"{self.catalogue.path.name}: {where}: {exc}") from exc

    def _context(self, selection: Issue, web: bool, preferences: bool = False) -> dict[str, Any]:
        """Return what the templates are given for `selection`'s digest."""
        publication = self.catalogue.publication
        newsletter = self.catalogue.newsletter
        intro_html = intro_text = None
        if selection.intro is not None:
            intro_html = markup.to_html(selection.intro, publication.site_url)
            intro_text = markup.to_text(intro_html)
        return {
            "publication": publication,
            "subject": self._subject(selection),
            "month": selection.month.label,
            # Marked safe only here, after nh3 has sanitized it; None without an intro.
            "intro_html": Markup(intro_html) if intro_html else None,  # noqa: S704 -- sanitized
            "intro_text": intro_text,
            "brand": newsletter.brand if newsletter else None,
            "preheader": _preheader(selection),
            "sections": [
                {"name": s.category.name, "entries": [self._entry(i, web) for i in s.items]}
                for s in selection.sections
            ],
            "coming_up": [self._entry(i, web) for i in selection.coming],
            "next_month": selection.month.shift(1).label,
            "json_ld": self._json_ld(selection) if web else None,
            "view_url": publication.feeds_url + archive_path(selection.month),
            "feeds_url": publication.feeds_url,
            "web": web,
            "greeting": GREETING_TOKEN,
            "unsubscribe": UNSUBSCRIBE_TOKEN,
            # None unless the public pages exist: the templates then show no such link.
            "preferences": PREFERENCES_TOKEN if preferences and not web else None,
        }

    def _fill(self, name: str, context: dict[str, Any]) -> str:
        """Return template `name` filled in with `context`."""
        try:
            return self.environment.get_template(name).render(context)
        except jinja2.TemplateError as exc:
            filename, line = getattr(exc, "filename", None), getattr(exc, "lineno", None)
            if not (filename and line):  # raised while filling in: a misspelt name, say
                filename, line = _template_line(exc)
            where = f"{filename}:{line}: " if filename and line else ""
            raise RenderError(f"{where}the newsletter template failed: {exc}") from exc

    def _refuse_fetches(self, page: str) -> None:
        """Raise RenderError naming each stylesheet that styling `page` would fetch."""
        fetched = _fetches(page)
        if fetched:
            raise RenderError("\n".join(self._fetch_problem(kind, url) for kind, url in fetched))

    def _fetch_problem(self, kind: str, url: str) -> str:
        """Say where the templates ask for `url`, and what to do instead."""
        where = self._locate(url)
        if kind == "link":
            return (
                f'{where}<link rel="stylesheet" href="{url}">: the email styler does not read '
                "linked stylesheets, most mail clients do not load them, and `digest` renders "
                "without touching the network. Copy the rules you need into style.css and remove "
                "the <link>"
            )
        return (
            f"{where}@import of {url}: the email styler (premailer) would download it while "
            "rendering every email, and hang on a server that does not answer; `digest` renders "
            "without touching the network. Remove the @import, or copy the rules you need into "
            "style.css (for a web font, its @font-face rules, with the font files on your own "
            "site); most mail clients ignore web fonts anyway"
        )

    def _locate(self, url: str) -> str:
        """Return 'FILE:LINE: ' of the first template line naming `url`, else the templates."""
        loader = self.environment.loader
        assert loader is not None  # noqa: S101 -- set in __init__
        for name in sorted(loader.list_templates()) if url else ():
            source, filename, _ = loader.get_source(self.environment, name)
            for number, line in enumerate(source.splitlines(), 1):
                if url in line:
                    return f"{filename}:{number}: "
        return "digest.html.j2 (or a file it includes): "

    def _refuse_tokens(self, selection: Issue, context: dict[str, Any]) -> None:
        """Raise RenderError if the catalogue itself puts a token in the digest.

        The templates are filled once more with a space for each personal part: whatever token
        that text holds came from the catalogue (through any filter, entity or join a template
        applies), and would be filled in for each reader as if the template had put it there.
        Entities are decoded first, as the inliner's HTML parser decodes them.
        """
        blank = dict(context, greeting=" ", unsubscribe=" ")
        if context["preferences"] is not None:
            blank["preferences"] = " "
        page = self._fill("digest.html.j2", blank)
        text = self._fill("digest.txt.j2", blank)
        found = _TOKEN.search(html.unescape(page) + "\n" + text)
        if found is None:
            return
        token = found.group()
        what = {
            GREETING_TOKEN: "each reader's greeting",
            UNSUBSCRIBE_TOKEN: "each unsubscribe link",
            PREFERENCES_TOKEN: "each reader's preferences link",
        }[token]
        reserved = f"{token!r}, which digest reserves to mark where {what} goes"
        name = self.catalogue.path.name
        for item in (*selection.items, *selection.coming):
            if any(_holds(value, token) for value in _strings(item)):
                raise RenderError(
                    f"{name}:{item.line}: item {item.id!r} contains {reserved}; reword it"
                )
        for block in ("publication", "newsletter"):
            if any(_holds(value, token) for value in _strings(getattr(self.catalogue, block))):
                raise RenderError(f"{name}: the {block} block contains {reserved}; reword it")
        raise RenderError(
            f"the {selection.month.label} digest contains {reserved}; remove it from "
            f"{name} or the newsletter templates"
        )

    def _entry(self, item: Item, web: bool) -> dict[str, Any]:
        """Return `item`'s fields for the templates, made once for all the digest's selections."""
        if web:  # each month's page is rendered once, so is each of its items
            return self._item(item, web)
        entry = self._entries.get(item)
        if entry is None:
            entry = self._entries[item] = self._item(item, web)
        return _Fields(entry)  # a template that changed its copy cannot reach the next selection

    def _item(self, item: Item, web: bool) -> dict[str, Any]:
        publication = self.catalogue.publication
        summary = markup.to_html(item.summary, publication.site_url)
        shown = self._days.get(item.date)
        if shown is None:
            local = item.date.astimezone(self._tz)
            shown = self._days[item.date] = (f"{local.day} {local:%B %Y}", local.date().isoformat())
        day, iso = shown
        return _Fields({
            "id": item.id,
            "title": item.title,
            "link": item.link,
            "day": day,
            "iso": iso,
            # Marked safe only here, after nh3 has sanitized it.
            "summary_html": Markup(summary),  # noqa: S704 -- sanitized by markup.to_html
            "summary_text": "" if web else markup.to_text(summary),  # the web page has no text
            "image": item.image,
            "event": calendars.shown(publication, item) if item.event else None,
        })  # fmt: skip

    def _json_ld(self, selection: Issue) -> Markup | None:
        """Return the schema.org events the archive page shows, safe inside its <script>."""
        publication = self.catalogue.publication

        def page(item: Item) -> str:  # the archive page that carries the item in full
            return f"{publication.feeds_url}{archive_path(Month.of(item.date, self._tz))}#{item.id}"

        shown = dict.fromkeys((*selection.items, *selection.coming))
        found = calendars.json_ld(publication, [(i, page(i)) for i in shown])
        return Markup(found) if found else None  # noqa: S704 -- <, > and & escaped as \u

    def _inline(self, page: str) -> str:
        if self._inliner is None:
            # Imported here: only inlining pays for premailer (the archive pages never do).
            from digest.mail.inliner import for_digest

            self._inliner = for_digest()
        return _ended_once(str(self._inliner.transform(page, pretty_print=False)))


def _template_line(error: BaseException) -> tuple[str | None, int | None]:
    """Return the template file and line an error raised while filling it in came from.

    Jinja gives the template's own frames in the traceback of such an error, each with the
    template's file and line (its documented debugging aid); the innermost is where it stopped.
    """
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.endswith(".j2"):
            found = (frame.filename, frame.lineno)
    return found


def _ended_once(inlined: str) -> str:
    """Return premailer's page ending in exactly one line break."""
    return inlined.rstrip("\n") + "\n"


def check(catalogue: Catalogue, now: datetime) -> None:
    """Raise RenderError if the digest's templates fail, or styling them would fetch anything.

    Tried on the newest month with items (an empty month when none has any): the templates are
    the same for every month.
    """
    published = catalogue.published(now)
    tz = catalogue.publication.tz
    month = Month.of(published[0].date, tz) if published else Month.previous(now, tz)
    Renderer(catalogue).check(issue(catalogue, month, now))


# An at-keyword that could be @import: `@i`, `@I`, or an escape such as `@\69mport`. CSS has no
# other way to write one, so a stylesheet without this needs no parsing to be known safe.
_MAYBE_IMPORT = re.compile(r"@[iI\\]")


def _fetches(page: str) -> list[tuple[str, str]]:
    """Return what styling `page` would fetch: ("@import", url) and ("link", href) pairs.

    premailer hands the text of each <style> element to cssutils, which fetches every stylesheet
    an @import names, over the network or from a file, even a relative one, before premailer
    sees the rules: premailer's `allow_network=False` covers only <link> elements, and neither
    library offers a way to stop it. So the page is read as premailer reads it (lxml's HTML
    parser) and each stylesheet is parsed as cssutils parses it, with a fetcher that only
    records what it is asked for.
    """
    if not _MAYBE_IMPORT.search(page) and "<link" not in page.lower():
        return []
    from lxml import etree

    root = etree.fromstring(page.strip(), etree.HTMLParser())
    found: list[tuple[str, str]] = []
    if root is None:
        return found
    for element in root.iter("style", "link"):
        if element.tag == "link":
            rel = (element.get("rel") or "").lower().split()
            if "stylesheet" in rel:
                found.append(("link", element.get("href") or ""))
        elif element.text and _MAYBE_IMPORT.search(element.text):
            found.extend(("@import", url) for url in _imports(element.text))
    return found


@functools.lru_cache(maxsize=16)
def _imports(css: str) -> tuple[str, ...]:
    """Return each stylesheet cssutils would fetch while parsing `css`, as written if it can."""
    import cssutils

    # cssutils logs every import it cannot fetch, and every property it does not know.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
    asked: list[str] = []

    def record(url: str) -> None:
        asked.append(url)  # and fetch nothing: cssutils goes on without the imported sheet

    sheet = cssutils.CSSParser(fetcher=record, validate=False).parseString(css)
    written = [r.href for r in sheet.cssRules if r.type == r.IMPORT_RULE and r.href]
    # An @import after other rules is invalid CSS that cssutils fetches all the same, then drops.
    late = [url for url in asked if not any(url.endswith(w) for w in written)]
    return tuple(dict.fromkeys(written + late))


def _require_footer(month: Month, footer: dict[str, str], page: str, text: str) -> None:
    """Raise RenderError unless the email's HTML and text both carry every `footer` link."""
    from urllib.parse import unquote

    from lxml import etree

    root = etree.fromstring(page.strip(), etree.HTMLParser())
    hrefs = {unquote(a.get("href") or "") for a in root.iter("a")} if root is not None else set()
    lost = []
    html_missing = [label for label, url in footer.items() if unquote(url) not in hrefs]
    if html_missing:
        lost.append(f"its HTML has no {_listed(html_missing)} link")
    text_missing = [label for label, url in footer.items() if url not in text]
    if text_missing:
        lost.append(f"its text has no {_listed(text_missing)} link")
    if lost:
        raise RenderError(
            f"The {month.label} digest cannot be sent: {'; '.join(lost)}. Every email must "
            "carry View in browser, Follow the feeds and Unsubscribe: put them back in the footer "
            "of the newsletter templates (digest.html.j2, digest.txt.j2); if they are there, an "
            "item's text too long to style has cut the page short: shorten it"
        )


def _listed(labels: list[str]) -> str:
    """Return labels as `A`, `A or B`, `A, B or C`."""
    quoted = [f'"{label}"' for label in labels]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _strings(value: object) -> Iterator[str]:
    """Yield every string held by a catalogue dataclass, its tuples and nested dataclasses."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple):
        for part in value:
            yield from _strings(part)
    elif dataclasses.is_dataclass(value):
        for each in dataclasses.fields(value):
            yield from _strings(getattr(value, each.name))


def _holds(value: str, token: str) -> bool:
    """Return whether `value` shows `token`, once its entities are decoded."""
    return token in html.unescape(value)


def _escapes(template: str | None) -> bool:
    """Autoescape every template but the plain-text one, whose output is never HTML."""
    return template is None or not template.endswith(".txt.j2")


def _preheader(selection: Issue) -> str:
    """Return the inbox preview line: the month's first headlines."""
    titles = [item.title for item in selection.items[:3]]
    text = " · ".join(titles)
    return text if len(text) <= 140 else text[:139].rstrip() + "…"


def _wrap(text: str, width: int = 72) -> str:
    """Wrap each paragraph of plain text to `width` columns, keeping the blank lines between."""
    # A summary is wrapped again in every selection that shows it; plain text is wrapped once.
    if type(text) is str and type(width) is int:
        return _wrapped(text, width)
    return _wrap_paragraphs(text, width)


@functools.lru_cache(maxsize=1024)
def _wrapped(text: str, width: int) -> str:
    """Return `_wrap_paragraphs(text, width)`, remembered."""
    return _wrap_paragraphs(text, width)


def _wrap_paragraphs(text: str, width: int) -> str:
    """Wrap each paragraph of `text` to `width` columns (see `_wrap`)."""
    paragraphs = text.split("\n\n")
    return "\n\n".join(
        "\n".join(
            textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
            for line in paragraph.splitlines()
        )
        for paragraph in paragraphs
    )
