"""Signing keys: the configured keys (newest first) and one derived subkey per purpose."""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Literal

from alertd.config import Settings

# What a key signs; a signature made for one purpose never verifies for another.
Purpose = Literal["links", "verp"]


def subkey(key: str, purpose: Purpose) -> bytes:
    """HMAC(key, "alertd/<purpose>/v1"): the key that signs for one purpose only."""
    return hmac.new(key.encode(), f"alertd/{purpose}/v1".encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=16)
def _subkeys(keys: tuple[str, ...], purpose: Purpose) -> tuple[bytes, ...]:
    return tuple(subkey(key, purpose) for key in keys)


def subkeys(settings: Settings, purpose: Purpose) -> tuple[bytes, ...]:
    """The purpose's subkeys, newest first: the first signs, every one verifies.

    An older key (``web.secret_keys`` after the newest) keeps its links working until it
    is removed from the list.
    """
    return _subkeys(settings.web.signing_keys, purpose)
