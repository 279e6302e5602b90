"""Signed link tokens: scoped to an action and an id; forged or swapped ones are refused."""

from __future__ import annotations

import pytest

from alertd.errors import InvalidToken
from alertd.tokens import make_token, read_token


def test_round_trip() -> None:
    token = make_token("k", "unsubscribe", 42)
    assert read_token("k", "unsubscribe", token) == 42


@pytest.mark.parametrize(
    "token",
    [
        make_token("other-key", "unsubscribe", 42),  # made with another secret
        make_token("k", "stop", 42),  # for another action
        make_token("k", "unsubscribe", 42).replace(".42.", ".43."),  # id altered
        "unsubscribe.42",
        "",
        "unsubscribe.x.abc",
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_token("k", "unsubscribe", token)
