"""Signed link tokens (HMAC-SHA256): each is scoped to one action and one subscriber or alert."""

from __future__ import annotations

import base64
import hashlib
import hmac

from alertd.errors import UsageError


class InvalidToken(UsageError):
    """The token was altered, made with another key, or is for another action."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return _b64(digest[:18])


def make_token(secret: str, action: str, subject_id: int) -> str:
    """A URL-safe token that proves the link was made by us for this action and id."""
    payload = f"{action}.{subject_id}"
    return f"{payload}.{_signature(secret, payload)}"


def read_token(secret: str, action: str, token: str) -> int:
    """The id the token was made for.

    Raises:
        InvalidToken: the token is malformed, forged, or for another action.
    """
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != action or not parts[1].isdigit():
        raise InvalidToken("this link is not valid")
    expected = _signature(secret, f"{parts[0]}.{parts[1]}")
    if not hmac.compare_digest(expected, parts[2]):
        raise InvalidToken("this link is not valid")
    return int(parts[1])
