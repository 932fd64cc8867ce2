"""One-click unsubscribe tokens: genuine ones name their reader, nothing else names anyone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from digest.send.unsubscribe import Links

LINKS = Links("k" * 43, "https://digest.example.edu/")


@given(st.emails())
def test_every_address_round_trips(address: str) -> None:
    """Whatever a subscriber's address, their own link unsubscribes exactly them."""
    assert LINKS.address(LINKS.token(address)) == address.strip().lower()
    assert LINKS.url(address).startswith("https://digest.example.edu/unsubscribe/")


@given(st.text(max_size=200))
def test_made_up_tokens_name_nobody(token: str) -> None:
    """No string someone makes up without the key unsubscribes anyone."""
    assert LINKS.address(token) is None


@given(st.emails(), st.integers(min_value=0, max_value=200))
def test_a_token_with_one_character_changed_names_nobody(address: str, where: int) -> None:
    """A link mangled by a mail program, or edited by hand, unsubscribes nobody."""
    token = LINKS.token(address)
    where %= len(token)
    changed = token[:where] + ("A" if token[where] != "A" else "B") + token[where + 1 :]
    assert LINKS.address(changed) in (None, address.strip().lower())
    if LINKS.address(changed) is not None:
        # Only a change in base64 padding bits can leave the meaning intact.
        assert LINKS.token(address) != changed


def test_another_key_makes_tokens_that_do_not_work_here() -> None:
    """A token signed with another installation's key is refused."""
    other = Links("z" * 43)
    assert LINKS.address(other.token("lee.kawai@example.org")) is None
