"""Premailer that works through a stylesheet once for every page carrying the same CSS.

A send inlines the same `<style>` into dozens of category selections. About half of each
`Premailer.transform` is spent on work that depends on the CSS text alone: turning the parsed
sheet into rules (`_parse_style_rules`) and serializing the leftover `@media` rules back into the
`<style>` element (`_css_rules_to_string`). `Inliner` keeps both results per CSS text.

Both methods are private to premailer. Should a release rename them or change what they take,
`inliner()` hands out a plain `Premailer`: the same output, only slower.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from premailer import Premailer

# Distinct stylesheets kept per inliner: a renderer sees one, unless a template varies its CSS.
MEMO_SIZE = 8


def fits(premailer: type) -> bool:
    """Tell whether `premailer` has the two methods `Inliner` overrides, as premailer 3 has them."""
    expected = {
        "_parse_style_rules": ["self", "css_body", "ruleset_index"],
        "_css_rules_to_string": ["self", "rules"],
    }
    for name, parameters in expected.items():
        method = getattr(premailer, name, None)
        if not inspect.isfunction(method):
            return False
        if list(inspect.signature(method).parameters) != parameters:
            return False
    return True


REUSABLE = fits(Premailer)


def inliner(**options: Any) -> Any:
    """Return a premailer made with `options` that reuses its stylesheet work where it can."""
    return (Inliner if REUSABLE else Premailer)(**options)


def for_digest() -> Any:
    """Return the inliner a digest is styled with: in a send, in a preview, in the helper."""
    # cssutils logs every property it does not know (mso-*, -webkit-*) as an error.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
    # Every selection carries the same stylesheet: the inliner works through it once.
    return inliner(
        base_url=None,
        allow_network=False,  # it would otherwise fetch linked stylesheets
        strip_important=False,  # the dark-mode block needs its !important to win
        keep_style_tags=False,
        remove_classes=False,  # the media queries left in <style> select by class
        disable_validation=True,
        # Keep the container's width="600" attribute: premailer would otherwise copy the CSS
        # `width: 100%` over it, and Outlook, which reads only the attribute, would stretch the
        # layout to the whole window.
        disable_basic_attributes=["width", "height"],
        cssutils_logging_level=logging.CRITICAL,
    )


class Inliner(Premailer):  # type: ignore[misc]  # premailer ships no type information
    """A `Premailer` whose rules and leftover CSS are computed once per distinct CSS text.

    The results depend only on the CSS text, the ruleset's index and the options fixed at
    construction. `transform` copies the rules it is given and only reads the leftover list, which
    it hands straight to `_css_rules_to_string`; that list is recognised by identity (this object
    holds it, so its id cannot be reused) and by its contents, so any other list is serialized as
    premailer would.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._rules: dict[tuple[str, int], tuple[list[Any], list[Any]]] = {}
        # id(leftover list) -> (that list, its items when made, its CSS or None until asked)
        self._leftover: dict[int, tuple[list[Any], tuple[Any, ...], str | None]] = {}

    def _parse_style_rules(self, css_body: Any, ruleset_index: Any) -> tuple[list[Any], list[Any]]:
        if not isinstance(css_body, str) or not isinstance(ruleset_index, int):
            return super()._parse_style_rules(css_body, ruleset_index)  # type: ignore[no-any-return]
        key = (css_body, ruleset_index)
        found = self._rules.get(key)
        if found is None:
            rules, leftover = super()._parse_style_rules(css_body, ruleset_index)
            if len(self._rules) >= MEMO_SIZE:
                self._rules.clear()
                self._leftover.clear()
            found = self._rules[key] = (list(rules), leftover)
            self._leftover[id(leftover)] = (leftover, tuple(leftover), None)
        rules, leftover = found
        return list(rules), leftover  # a fresh list of the (immutable) rule tuples

    def _css_rules_to_string(self, rules: Any) -> str:
        known = self._leftover.get(id(rules))
        if known is None or not _same(known[0], known[1], rules):
            return super()._css_rules_to_string(rules)  # type: ignore[no-any-return]
        leftover, items, css = known
        if css is None:
            # The first call also marks the @media rules' properties !important in the sheet
            # premailer caches; doing that again changes nothing, so later calls may skip it.
            css = str(super()._css_rules_to_string(rules))
            self._leftover[id(rules)] = (leftover, items, css)
        return css


def _same(kept: list[Any], items: tuple[Any, ...], given: Any) -> bool:
    """Tell whether `given` is the leftover list `kept`, still holding the same `items`."""
    return (
        given is kept
        and len(given) == len(items)
        and all(a is b for a, b in zip(given, items, strict=True))
    )
