"""The inliner: premailer's output, with the stylesheet worked through once per send."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from premailer import Premailer
from premailer.cache import cache as premailer_cache

from digest.mail import inliner, newsletter
from digest.publish import catalogue
from helpers import NOW

HERE = Path(__file__).parent
CATALOGUES = {
    "bundled": HERE.parent / "items.yaml",
    "rich": HERE / "data" / "rich.yaml",
    "shaped": HERE / "data" / "shaped.yaml",  # an intro, an explicit order, a brand
}
# What newsletter.Renderer gives premailer, for the tests that call it directly.
OPTIONS: dict[str, Any] = {
    "base_url": None,
    "allow_network": False,
    "strip_important": False,
    "keep_style_tags": False,
    "remove_classes": False,
    "disable_validation": True,
    "disable_basic_attributes": ["width", "height"],
}


def selections(
    cat: catalogue.Catalogue,
) -> Iterator[tuple[newsletter.Issue, frozenset[str] | None]]:
    """Yield every month's issue with every category selection a subscriber could make of it."""
    for chosen in newsletter.issues(cat, NOW):
        yield chosen, None
        present = [s.category.slug for s in chosen.sections]
        for size in range(1, len(present) + 1):
            for picked in itertools.combinations(present, size):
                yield chosen, frozenset(picked)


@pytest.mark.parametrize("name", sorted(CATALOGUES))
def test_every_selection_is_inlined_as_plain_premailer_would(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No subscriber's digest looks different because the stylesheet was worked through once."""
    cat = catalogue.load(CATALOGUES[name])
    wanted = list(selections(cat))
    assert len(wanted) > 2 * len(newsletter.issues(cat, NOW))  # months cut down several ways

    # As before: plain premailer, a renderer of its own for each selection (no item made for an
    # earlier one), nothing wrapped before, a freshly parsed sheet.
    monkeypatch.setattr(inliner, "REUSABLE", False)
    expected = []
    for chosen, categories in wanted:
        premailer_cache.clear()
        newsletter._wrapped.cache_clear()
        renderer = newsletter.Renderer(cat)
        expected.append(renderer.render(chosen, categories))
        assert type(renderer._inliner) is Premailer
    monkeypatch.undo()

    premailer_cache.clear()
    renderer = newsletter.Renderer(cat)  # one renderer for the whole send, as delivery uses it
    for (chosen, categories), plain in zip(wanted, expected, strict=True):
        assert renderer.render(chosen, categories) == plain
    assert type(renderer._inliner) is inliner.Inliner


def test_a_send_works_through_the_stylesheet_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send of dozens of selections does not redo the stylesheet for each (half its start-up)."""
    assert inliner.REUSABLE, (
        "premailer changed _parse_style_rules or _css_rules_to_string: digest now inlines with "
        "plain premailer (same output, slower); review digest/inliner.py against the new release"
    )
    calls: list[str] = []
    for name in ("_parse_style_rules", "_css_rules_to_string"):
        original = getattr(Premailer, name)

        def counting(self: Any, *args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(Premailer, name, counting)
    cat = catalogue.load(CATALOGUES["bundled"])
    renderer = newsletter.Renderer(cat)
    rendered = [renderer.render(chosen, categories) for chosen, categories in selections(cat)]
    assert len(rendered) > 30
    assert sorted(calls) == ["_css_rules_to_string", "_parse_style_rules"]


PAGE = "<html><head>{styles}</head><body><p class='a'>x</p><p class='b'>y</p></body></html>"
SHEETS = [
    ".a { color: red; } .b { margin: 0; } @media (max-width: 600px) { .a { color: blue; } }",
    ".a { color: green !important; } a:hover { color: red; }",
    "@media print { .b { display: none; } } .b { padding: 1px; }",
    "",
]


def test_changing_stylesheets_are_inlined_as_plain_premailer_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A template whose CSS varies from page to page gets each page's own CSS, never another's."""
    monkeypatch.setattr(inliner, "MEMO_SIZE", 2)  # forget along the way, too
    pages = [
        PAGE.format(styles="".join(f"<style>{sheet}</style>" for sheet in combination))
        for size in (1, 2)
        for combination in itertools.permutations(SHEETS, size)
    ]
    reusing = inliner.inliner(**OPTIONS)
    for page in pages * 2:
        assert reusing.transform(page, pretty_print=False) == Premailer(**OPTIONS).transform(
            page, pretty_print=False
        )


def test_leftover_rules_not_from_the_memo_are_serialized_afresh() -> None:
    """A list of leftover rules the inliner did not hand out is never mistaken for one it did."""
    reusing = inliner.Inliner(**OPTIONS)
    _, leftover = reusing._parse_style_rules(SHEETS[0] + SHEETS[1], 0)
    assert leftover
    plain = Premailer(**OPTIONS)._css_rules_to_string(list(leftover))
    assert reusing._css_rules_to_string(list(leftover)) == plain
    assert reusing._css_rules_to_string(leftover) == plain
    assert reusing._css_rules_to_string(leftover[:1]) != plain
    leftover.pop()  # the memo's own list, changed behind its back
    assert reusing._css_rules_to_string(leftover) == Premailer(**OPTIONS)._css_rules_to_string(
        leftover
    )


class Renamed(Premailer):  # type: ignore[misc]
    _parse_style_rules = None

    def _parse_rules(self, css_body: str, ruleset_index: int) -> Any:
        return None


class Reshaped(Premailer):  # type: ignore[misc]
    def _css_rules_to_string(self, rules: Any, important: bool = True) -> str:
        return ""


@pytest.mark.parametrize("changed", [Renamed, Reshaped])
def test_a_changed_premailer_is_used_plainly(
    changed: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should premailer rename what the inliner relies on, digests render as before, only slower."""
    assert inliner.fits(Premailer)
    assert not inliner.fits(changed)
    monkeypatch.setattr(inliner, "REUSABLE", False)
    assert type(inliner.inliner(**OPTIONS)) is Premailer
