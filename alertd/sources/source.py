"""The Source protocol: what every source (Parliament, each feed) is called and does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# The name the Parliament written-questions source goes by (items, poll state, metrics).
PARLIAMENT_SOURCE = "parliament"
# The Parliament written-statements source.
STATEMENTS_SOURCE = "statements"
_FEED_PREFIX = "feed:"


def feed_source(feed_name: str) -> str:
    """A feed's source name: the prefix keeps it apart from every other source's name."""
    return _FEED_PREFIX + feed_name


def feed_name(source: str) -> str | None:
    """The feed a source name names; None for a source that is not a feed."""
    return source.removeprefix(_FEED_PREFIX) if source.startswith(_FEED_PREFIX) else None


@dataclass(frozen=True)
class PollResult:
    """What one poll of a source did; ``polled`` is False when it was skipped (not due,
    or another worker holds it)."""

    source: str
    fetched: int
    new_items: int
    polled: bool = True


class Source(Protocol):
    @property
    def name(self) -> str: ...

    async def poll(self, now: datetime) -> PollResult:
        """Fetch what is new and store it; the poll state is recorded either way.

        Raises:
            SourceUnavailable, SourceInvalid: the poll failed (and was recorded as failed).
        """
        ...
