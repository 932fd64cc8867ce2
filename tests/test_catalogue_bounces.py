"""The `newsletter.bounces` block of items.yaml: the VERP return path and the bounce rules."""

from __future__ import annotations

import pytest

from digest.publish import catalogue
from helpers import yaml_catalogue
from test_catalogue import SUBJECT_LINE, newsletter, parse, problems


def test_bounces_block_is_read_with_defaults() -> None:
    """An office that sets only the bounce address gets 3 soft bounces in 30 days."""
    text = (
        yaml_catalogue()
        + newsletter("News")
        + "  bounces: {address: Bounces@Provost.Example.edu}\n"
    )
    news = parse(text).newsletter
    assert news is not None
    assert news.bounces == catalogue.Bounces("bounces@provost.example.edu", 3, 30)
    assert parse(yaml_catalogue() + newsletter("News")).newsletter.bounces is None  # type: ignore[union-attr]


def test_bounce_thresholds_are_read() -> None:
    """The soft-bounce limit and window written in items.yaml reach the rules."""
    text = (
        yaml_catalogue()
        + newsletter("News")
        + "  bounces:\n    address: bounces@example.edu\n    soft_limit: 5\n    soft_days: 14\n"
    )
    news = parse(text).newsletter
    assert news is not None
    assert news.bounces == catalogue.Bounces("bounces@example.edu", 5, 14)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("{soft_limit: 3}", "newsletter.bounces.address: is required"),
        (
            "{address: bounces}",
            "newsletter.bounces.address: 'bounces' is not an email address (like "
            "office@example.edu)",
        ),
        (
            "{address: bounces+x@example.edu}",
            "newsletter.bounces.address: 'bounces+x@example.edu' already has a '+' in it; give the "
            "plain mailbox (like bounces@example.edu): digest adds '+' and a code for each "
            "message itself",
        ),
        (
            "{address: " + "b" * 47 + "@example.edu}",
            "newsletter.bounces.address: the part before '@' of '" + "b" * 47 + "@example.edu' is "
            "47 characters; with the code digest adds it must be at most 46, or servers refuse the "
            "messages",
        ),
        (
            "{address: bounces@example.edu, soft_limit: 0}",
            "newsletter.bounces.soft_limit: '0' is not a whole number of 1 or more",
        ),
        (
            "{address: bounces@example.edu, soft_days: a month}",
            "newsletter.bounces.soft_days: 'a month' is not a whole number of 1 or more",
        ),
        (
            "{address: bounces@example.edu, poll: 5}",
            "newsletter.bounces.poll: unknown key 'poll'; known keys: address, soft_limit, "
            "soft_days",
        ),
        (
            "bounces@example.edu",
            "newsletter.bounces: expected a mapping of keys, found 'bounces@example.edu'",
        ),
    ],
)
def test_bad_bounces_block_is_located(block: str, message: str) -> None:
    """A mistyped bounce setting is named with its line before any message is sent."""
    text = yaml_catalogue() + newsletter("News") + f"  bounces: {block}\n"
    assert problems(text) == [f"items.yaml:{SUBJECT_LINE + 3}: {message}"]


def test_a_46_character_local_part_fits() -> None:
    """The longest bounce address that leaves room for the code is taken."""
    text = (
        yaml_catalogue()
        + newsletter("News")
        + "  bounces: {address: "
        + "b" * 46
        + "@example.edu}\n"
    )
    news = parse(text).newsletter
    assert news is not None
    assert news.bounces is not None
