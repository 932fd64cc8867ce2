"""The helper process: premailer imported beside a send, inlining as this process would."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from digest.mail import newsletter
from digest.mail.helper import Helper
from digest.publish import catalogue
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
def helper() -> Helper:
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
    there = newsletter.Renderer(cat, helper=helper.inline)
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
    renderer = newsletter.Renderer(cat, helper=helper.inline)
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
