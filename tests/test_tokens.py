"""Signed link tokens: scoped to an action, an id and the owner's link secret; forged,
swapped, signed-out and rotated-away ones are refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alertd.config import Settings
from alertd.errors import ConfigError, InvalidToken
from alertd.keys import subkey, subkeys
from alertd.links import Links
from alertd.tokens import make_token, parse_token, verify_token

KEY = subkey("k", "links")


def _read(action: str, token: str, secret: str = "s", keys: list[bytes] | None = None) -> int:
    return verify_token(parse_token(action, token, expiring=False), keys or [KEY], secret)


def test_round_trip() -> None:
    token = make_token(KEY, "unsubscribe", 42, "s")
    assert _read("unsubscribe", token) == 42


@pytest.mark.parametrize(
    "token",
    [
        make_token(subkey("other-key", "links"), "unsubscribe", 42, "s"),  # another key
        make_token(subkey("k", "verp"), "unsubscribe", 42, "s"),  # another purpose's subkey
        make_token(b"k", "unsubscribe", 42, "s"),  # the raw key, not a subkey
        make_token(KEY, "unsubscribe", 42, "old-secret"),  # signed out since
        make_token(KEY, "stop", 42, "s"),  # for another action
        make_token(KEY, "unsubscribe", 42, "s").replace(".42.", ".43."),  # id altered
        "unsubscribe.42",
        "",
        "unsubscribe.x.abc",
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        _read("unsubscribe", token)


def test_a_token_of_a_row_that_is_gone_is_refused() -> None:
    with pytest.raises(InvalidToken):
        parsed = parse_token("manage", make_token(KEY, "manage", 1, "s"), expiring=False)
        verify_token(parsed, [KEY], None)


def test_every_link_carries_a_token_for_its_own_action_and_id() -> None:
    links = Links("https://alerts.example", KEY)
    issued = datetime(2026, 11, 1, tzinfo=UTC)
    made = {
        "manage": links.manage_path(7, "s"),
        "stop": links.stop_path(8, "s"),
        "unsubscribe": links.unsubscribe_path(9, "s"),
        "feed": links.feed_path(10, "s"),
    }
    for action, path in made.items():
        token = path.rsplit("/", 1)[1]
        assert _read(action, token) == int(token.split(".")[1])
        assert links.url(path) == "https://alerts.example" + path
    confirm = links.confirm_path(11, "s", issued).rsplit("/", 1)[1]
    assert verify_token(parse_token("confirm", confirm, expiring=True), [KEY], "s") == 11
    with pytest.raises(InvalidToken):
        _read("manage", made["stop"].rsplit("/", 1)[1])


def _settings(**web: object) -> Settings:
    return Settings.model_validate({"web": web})


def test_key_rotation_newest_signs_and_every_listed_key_verifies() -> None:
    old = _settings(secret_key="old-key-" + "x" * 32)
    rotated = _settings(secret_keys=["new-key-" + "y" * 32, "old-key-" + "x" * 32])
    retired = _settings(secret_keys=["new-key-" + "y" * 32])
    token = Links.for_settings(old).manage_path(5, "s").rsplit("/", 1)[1]
    assert _read("manage", token, keys=list(subkeys(rotated, "links"))) == 5
    with pytest.raises(InvalidToken):
        _read("manage", token, keys=list(subkeys(retired, "links")))
    # New links are signed with the newest key.
    fresh = Links.for_settings(rotated).manage_path(5, "s").rsplit("/", 1)[1]
    assert _read("manage", fresh, keys=list(subkeys(retired, "links"))) == 5
    # The single key is shorthand for a list of one.
    assert subkeys(old, "links") == subkeys(_settings(secret_keys=["old-key-" + "x" * 32]), "links")
    # Each purpose its own subkey.
    assert subkeys(rotated, "links")[0] != subkeys(rotated, "verp")[0]


def test_secret_keys_from_the_environment_and_a_conflicting_single_key() -> None:
    from alertd.config import load_settings

    loaded = load_settings(environ={"ALERTD_WEB__SECRET_KEYS": "first-key, second-key"})
    assert loaded.web.signing_keys == ("first-key", "second-key")
    with pytest.raises(ConfigError, match="web.secret_key is set but not listed"):
        load_settings(
            environ={"ALERTD_WEB__SECRET_KEYS": "first-key", "ALERTD_WEB__SECRET_KEY": "other"}
        )
    both = load_settings(
        environ={"ALERTD_WEB__SECRET_KEYS": "first-key", "ALERTD_WEB__SECRET_KEY": "first-key"}
    )
    assert both.web.signing_keys == ("first-key",)
