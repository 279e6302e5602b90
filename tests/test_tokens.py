"""Signed link tokens: scoped to an action and an id; forged or swapped ones are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alertd.errors import InvalidToken
from alertd.links import Links
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


def test_every_link_carries_a_token_for_its_own_action_and_id() -> None:
    links = Links("https://alerts.example", "k")
    issued = datetime(2026, 11, 1, tzinfo=UTC)
    made = {
        "manage": links.manage_path(7),
        "stop": links.stop_path(8),
        "unsubscribe": links.unsubscribe_path(9),
        "feed": links.feed_path(10),
    }
    for action, path in made.items():
        token = path.rsplit("/", 1)[1]
        assert read_token("k", action, token) == int(token.split(".")[1])
        assert links.url(path) == "https://alerts.example" + path
    confirm = links.confirm_path(11, issued).rsplit("/", 1)[1]
    assert read_token("k", "confirm", confirm, max_age=timedelta(days=7), now=issued) == 11
    with pytest.raises(InvalidToken):
        read_token("k", "manage", made["stop"].rsplit("/", 1)[1])
