"""The Source protocol: what every source (each Parliament API kind, each feed) is and does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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
