"""The use cases on the catalogue and what it publishes: load, check, build, render.

With `digest.app.sending`, the service layer: each use case is one function that the command
line, the scheduler and the console call alike. Each takes the `Settings` and plain values ("now"
included) and returns plain data; the front ends parse what people give them and present what
comes back, and compose nothing themselves. Errors are `DigestError`s whose message is what a
person should read. A no-op `digest build` imports this module and little else.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from digest.app import signing
from digest.app.settings import Settings
from digest.errors import CatalogueError, DigestError, Problem
from digest.months import Month

if TYPE_CHECKING:
    from digest.publish.catalogue import Catalogue

Warn = Callable[[str], None]


def load(settings: Settings, raw: bytes | None = None, *, freeze: bool = False) -> Catalogue:
    """Load and check the catalogue; `freeze` for a one-shot command's long-lived catalogue."""
    from digest.publish import catalogue

    path = settings.catalogue_path
    loaded = catalogue.load(path) if raw is None else catalogue.parse(raw, path, str(path))
    if freeze:
        # The catalogue lives as long as the command and holds no cycles: moved out of the cyclic
        # collector's sight, it is no longer traversed by every full collection while rendering.
        # Never in the scheduler or the console, which load a catalogue again and again.
        gc.freeze()
    return loaded


# -- check ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What `digest check` found: the catalogue's counts and, with a newsletter, the list's."""

    counts: dict[str, int]
    list_name: Path | None = None
    subscribers: int = 0
    duplicates: tuple[Problem, ...] = ()


def check(settings: Settings, now: datetime, warn: Warn) -> CheckReport:
    """Validate the catalogue, its schedule, its templates and the subscriber list.

    A repeated address is harmless (it is sent once) but worth knowing of: each is warned of.
    """
    from digest.mail import newsletter
    from digest.send import subscribers

    catalogue = load(settings, freeze=True)
    if catalogue.newsletter is None:
        return CheckReport(catalogue.counts(now))
    trigger(catalogue)
    newsletter.check(catalogue, now)
    signer = signing.signer(settings, catalogue)
    if signer is not None and signer.advice is not None:
        warn(f"warning: {signer.advice}")
    listed, where = subscribers.of_catalogue(catalogue, strict=False)
    for problem in listed.duplicates:
        warn(f"warning: {problem}")
    if listed.invalid:
        raise CatalogueError(listed.invalid)
    return CheckReport(
        catalogue.counts(now), where, len(listed.subscribers), tuple(listed.duplicates)
    )


def trigger(catalogue: Catalogue) -> None:
    """Check that newsletter.schedule is a cron line the scheduler can follow."""
    from digest.send import schedule as scheduling

    try:
        scheduling.trigger(catalogue.mailing().schedule, catalogue.publication.tz)
    except DigestError as exc:
        raise DigestError(f"{catalogue.path}: {exc}") from exc


# -- build ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What `digest build` did: files written and left alone, and leftovers removed."""

    total: int
    written: int
    unchanged: int
    published: int
    removed: tuple[str, ...] = ()


def build(
    settings: Settings, output_dir: Path, now: datetime, *, freeze: bool = True
) -> BuildReport:
    """Write every feed, the feed page and the archive into `output_dir`, all or nothing.

    `freeze=False` for a long-lived process (the console's editor rebuilds after each save).
    """
    from digest.publish import buildcache

    try:
        raw = settings.catalogue_path.read_bytes()
    except OSError:
        raw = None  # the catalogue module reports it
    # The build cache: nothing to do when every input is as the last build found it. A no-change
    # `digest build` (digest.cli.quick) takes the same decision without importing this module.
    signup = settings.public_url
    start = buildcache.start(settings.catalogue_path, raw, output_dir, settings.home, signup)
    manifest = start.manifest
    if manifest is not None and start.unchanged(output_dir, now):
        from digest import files as staging

        removed: tuple[str, ...] = ()
        if staging.strays(output_dir, manifest.files):  # rare: what a killed build left
            from digest.publish import output

            removed = output.tidy(output_dir, manifest.files)
        total = len(manifest.files)
        return BuildReport(total, 0, total, manifest.published, removed)
    from digest.publish import output, site  # not before: a build with nothing to do needs neither

    catalogue = load(settings, raw, freeze=freeze)
    del raw  # the catalogue's bytes (90 MB at 100k items) are not needed while rendering
    current = manifest.current(output_dir) if manifest is not None else set()
    reusable = {name: manifest.keys[name] for name in current if manifest and name in manifest.keys}
    previous = _calendar_record(output_dir)
    result = site.build(catalogue, now, start.environment, reusable, previous, signup=signup)
    report = output.write(output_dir, result.files)
    published = catalogue.counts(now)["published"]
    buildcache.record(
        start.location, output_dir, start.inputs, catalogue.next_change(now), published, result.keys
    )
    unchanged = len(report.unchanged) + len(result.reused)
    return BuildReport(len(result.keys), len(report.written), unchanged, published, report.removed)


@dataclass(frozen=True, slots=True)
class Staleness:
    """What `digest build --check` found: files out of date, and leftovers of a killed build."""

    files: int
    stale: tuple[str, ...]
    strays: tuple[str, ...]


def build_check(settings: Settings, output_dir: Path, now: datetime) -> Staleness:
    """Compare `output_dir` with what a build would write, writing nothing."""
    from digest.publish import output, site

    catalogue = load(settings, freeze=True)
    with output.locked(output_dir, shared=True):
        files = site.render(
            catalogue, now, _calendar_record(output_dir), signup=settings.public_url
        )
        stale = output.stale(output_dir, files)
        strays = output.strays(output_dir, files)
    return Staleness(len(files), tuple(stale), tuple(strays))


def _calendar_record(output_dir: Path) -> dict[str, tuple[str, int]]:
    """Return the events' SEQUENCE record the output folder holds (none: all start at 0)."""
    from digest.publish import calendars

    try:
        data = (output_dir / calendars.RECORD).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        data = None
    except OSError as exc:
        raise DigestError(
            f"{output_dir / calendars.RECORD}: cannot read it ({exc.strerror}); it keeps each "
            "event's SEQUENCE number: make it readable and build again"
        ) from exc
    return calendars.read_record(data)


# -- render --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderReport:
    """The files `digest render` wrote, or none for a month without items."""

    month: Month
    items: int = 0
    categories: int = 0
    paths: tuple[Path, ...] = ()
    html_size: int = 0
    clipped: bool = False


def render_month(
    settings: Settings, month: Month | None, output_dir: Path, now: datetime
) -> RenderReport:
    """Write a month's digest as HTML, text and the .eml a placeholder subscriber receives."""
    from digest.mail import message, newsletter
    from digest.publish import output

    catalogue = load(settings, freeze=True)
    month = month or Month.previous(now, catalogue.publication.tz)
    block = catalogue.mailing()
    chosen = newsletter.issue(catalogue, month, now)
    if not chosen.items:
        return RenderReport(month)
    rendered = newsletter.Renderer(catalogue).render(chosen)
    page, text = rendered.personalise(None, block.unsubscribe)
    envelope = message.Envelope(
        sender=block.sender,
        reply_to=block.reply_to,
        recipient=message.PLACEHOLDER_RECIPIENT,
        subject=rendered.subject,
        unsubscribe=block.unsubscribe,
    )
    email = message.build(catalogue.publication, month, envelope, page, text, now)
    html_bytes = page.encode("utf-8")
    names = [f"digest-{month}.{kind}" for kind in ("html", "txt", "eml")]
    contents = [html_bytes, text.encode("utf-8"), bytes(email)]
    output.write(output_dir, dict(zip(names, contents, strict=True)))
    return RenderReport(
        month,
        rendered.item_count,
        len(chosen.categories),
        tuple(output_dir / name for name in names),
        len(html_bytes),
        len(html_bytes) > newsletter.GMAIL_CLIP_BYTES,
    )
