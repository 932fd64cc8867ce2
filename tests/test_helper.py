"""The helper process: premailer imported beside a send, inlining as this process would."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.errors import RenderError
from digest.mail import newsletter
from digest.mail.helper import Helper
from digest.months import Month
from digest.publish import catalogue
from digest.send import delivery, subscribers
from digest.send.ledger import Ledger
from helpers import NOW
from test_inliner import CATALOGUES, selections


def helpers_of(pid: int) -> list[int]:
    """Return the helper processes `pid` started that still run."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid and fields[0] != "Z" and b"digest.mail.helper" in command:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def helper() -> Iterator[Helper]:
    with Helper.start(cores=2) as started:
        assert started.pid is not None
        yield started


@pytest.mark.parametrize("name", sorted(CATALOGUES))
def test_the_helper_inlines_every_selection_as_this_process_would(
    name: str, helper: Helper
) -> None:
    """No subscriber's digest differs for having been styled in the helper."""
    cat = catalogue.load(CATALOGUES[name])
    here = newsletter.Renderer(cat)
    there = newsletter.Renderer(cat, helper=helper.submit)
    for chosen, categories in selections(cat):
        assert there.render(chosen, categories) == here.render(chosen, categories)
    assert there._inliner is None  # premailer never ran in this process for it


def test_a_page_the_helper_cannot_inline_is_inlined_here(helper: Helper) -> None:
    """premailer refusing a page in the helper leaves it to this process, which says why."""
    assert helper.inline("") is None  # lxml: the document is empty
    assert helper.pid is not None  # and the helper goes on with the next page
    assert "color:red" in (helper.inline('<p class="x">a</p><style>.x{color:red}</style>') or "")


def test_a_helper_that_died_leaves_every_page_to_this_process(helper: Helper) -> None:
    cat = catalogue.load(CATALOGUES["bundled"])
    chosen = newsletter.issues(cat, NOW)[0]
    expected = newsletter.Renderer(cat).render(chosen)
    assert helper.pid is not None
    os.kill(helper.pid, signal.SIGKILL)
    renderer = newsletter.Renderer(cat, helper=helper.submit)
    assert renderer.render(chosen) == expected
    assert renderer._inliner is not None  # inlined here
    assert helper.pid is None  # and no page goes to the dead helper again


def test_one_core_has_no_helper() -> None:
    """On one core the helper would only take turns with the send: none is started."""
    with Helper.start(cores=1) as none:
        assert none.pid is None
        assert none.inline("<p>a</p>") is None
    assert helpers_of(os.getpid()) == []


def test_a_closed_helper_is_gone(helper: Helper) -> None:
    pid = helper.pid
    assert pid in helpers_of(os.getpid())
    helper.close()
    assert helper.pid is None
    assert helpers_of(os.getpid()) == []
    assert helper.inline("<p>a</p>") is None


# -- a send's renderings, begun while the list is imported -----------------------------------------

NOVEMBER = Month(2025, 11)
ROOT = Path(__file__).resolve().parent.parent


def listed_of(cat: catalogue.Catalogue) -> subscribers.SubscriberList:
    return subscribers.load(ROOT / "subscribers.csv", [c.slug for c in cat.publication.categories])


def plan(cat: catalogue.Catalogue, **options: Any) -> delivery.Send:
    with Ledger.scratch() as ledger:
        made = delivery.prepare(cat, listed_of(cat), NOVEMBER, ledger, NOW, write=False, **options)
    assert made is not None
    return made


@pytest.mark.parametrize("linked", [False, True], ids=["plain", "preferences-links"])
def test_what_was_begun_ahead_is_not_rendered_again(
    helper: Helper, linked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send's renderings begun before the import are the ones it sends, each made once."""
    cat = catalogue.load(CATALOGUES["bundled"])
    extra: dict[str, Any] = {"preferences": (lambda email: "https://x/p") if linked else None}
    expected = plan(cat, **extra)
    submitted: list[str] = []

    def submit(page: str) -> Any:
        submitted.append(page)
        return helper.submit(page)

    begun = delivery.prerender(cat, listed_of(cat), NOVEMBER, NOW, helper=submit, linked=linked)
    assert len(begun.renders) == len(expected.made)  # every selection, and the whole unlinked
    assert len(submitted) == len(begun.renders)  # each page styled once
    rendered: list[Any] = []
    monkeypatch.setattr(newsletter.Renderer, "render", lambda *args, **kw: rendered.append(args))

    sent = plan(cat, begun=begun, **extra)

    assert rendered == []
    assert sent.renders == expected.renders
    assert sent.made == expected.made


def test_a_selection_not_begun_is_rendered_when_wanted(helper: Helper) -> None:
    """A reader whose choice the list did not show (made on the preferences page) gets theirs."""
    cat = catalogue.load(CATALOGUES["bundled"])
    expected = plan(cat)
    begun = delivery.prerender(
        cat, listed_of(cat), NOVEMBER, NOW, helper=helper.submit, linked=False
    )
    some = dict(list(begun.renders.items())[:2])
    assert len(some) < len(expected.made)

    assert plan(cat, begun=delivery.Begun(begun.renderer, some)).renders == expected.renders


def test_a_template_that_fails_ahead_is_left_to_the_send(tmp_path: Path, helper: Helper) -> None:
    """The error is the send's, where it always came (after the import): nothing is begun."""
    shutil.copy(CATALOGUES["bundled"], tmp_path / "items.yaml")
    shutil.copy(ROOT / "subscribers.csv", tmp_path / "subscribers.csv")
    (tmp_path / "newsletter_templates").mkdir()
    (tmp_path / "newsletter_templates" / "digest.txt.j2").write_text("{{ nothing.here }}\n")
    cat = catalogue.load(tmp_path / "items.yaml")

    begun = delivery.prerender(
        cat, listed_of(cat), NOVEMBER, NOW, helper=helper.submit, linked=False
    )
    assert begun.renders == {}
    with pytest.raises(
        RenderError,
        match=r"digest.txt.j2:1: the newsletter template failed: 'nothing' is undefined",
    ):
        plan(cat, begun=begun)
