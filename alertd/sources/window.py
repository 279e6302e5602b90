"""One poll cycle for every Parliament API kind: window, list, drop what is stored, fetch, store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session

from alertd.config import Settings
from alertd.errors import PermanentError
from alertd.items import Stored, add_items
from alertd.kinds.kind import ApiKind, Listing, NewItem
from alertd.sources.member_names import MemberNames
from alertd.sources.parliament import ParliamentApi
from alertd.sources.source import PollResult
from alertd.sources.state import PollLease, holding

log = logging.getLogger("alertd.sources.window")


def poll_window(high_water: date | None, today: date, lookback_days: int) -> tuple[date, date]:
    """The UK dates to ask for: back from the last good poll (or today) by the look-back."""
    start = min(high_water or today, today) - timedelta(days=lookback_days)
    return start, today


def unseen(
    engine: Engine, kind: ApiKind, listed: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The listed records whose versions need fetching and storing (the kind decides)."""
    parsed: list[tuple[Mapping[str, Any], NewItem]] = []
    for record in listed:
        try:
            parsed.append((record, kind.parse(record)))
        except PermanentError as exc:
            log.warning("skipping a listing item: %s", exc)
    with Session(engine) as session:
        stored = Stored(session, kind.source, [new for _, new in parsed])
        return [record for record, new in parsed if kind.worth_fetching(new, stored)]


async def fetch_and_store(
    engine: Engine,
    api: ParliamentApi,
    kind: ApiKind,
    listings: Sequence[Listing],
    *,
    now: datetime,
    today: date,
    member_names: MemberNames | None = None,
    never_alert: bool = False,
    history_before: date | None = None,
) -> tuple[int, int]:
    """List, drop what is stored, fetch the rest's details, name their Members, store them;
    how many were listed and how many versions were new. Those dated before
    ``history_before`` are stored never to alert (history, as backfill stores it).

    Raises:
        SourceUnavailable, SourceInvalid: a listing or a detail failed; nothing was stored.
    """
    listed = await api.listed(listings)
    wanted = await asyncio.to_thread(unseen, engine, kind, listed)
    items = [kind.parse(value, listing) for value, listing in await api.details(kind, wanted)]
    if history_before is not None:
        items = [
            replace(new, never_alert=True) if new.day and new.day < history_before else new
            for new in items
        ]
    if member_names is not None:
        items = await member_names.name_new(items, now=now)
    new = await asyncio.to_thread(
        add_items, engine, kind.source, items, now=now, today=today, never_alert=never_alert
    )
    return len(listed), new


@dataclass
class WindowSource:
    """A Parliament API kind as a source: what its API lists over a look-back window."""

    engine: Engine
    api: ParliamentApi
    kind: ApiKind
    settings: Settings
    zone: ZoneInfo
    lookback_days: int
    lease: PollLease
    # Names the Members the API gives only by id; None leaves them unnamed.
    member_names: MemberNames | None = None

    @property
    def name(self) -> str:
        return self.kind.source

    async def poll(self, now: datetime) -> PollResult:
        """Fetch the window's versions, store the new ones, then move the high-water mark.

        The mark moves only after every page and detail of the window was fetched and
        stored, so a failed poll is simply repeated by the next one.

        Raises:
            SourceUnavailable, SourceInvalid: the poll failed; the failure is also recorded.
        """
        today = now.astimezone(self.zone).date()
        async with holding(self.engine, self.name, self.lease, now=now) as held:
            if held is None:
                return PollResult(self.name, fetched=0, new_items=0, polled=False)
            first, last = poll_window(held.high_water, today, self.lookback_days)
            listed, new = await fetch_and_store(
                self.engine,
                self.api,
                self.kind,
                self.kind.listings(first, last, self.settings),
                now=now,
                today=today,
                member_names=self.member_names,
                # A source's first poll: what a kind lists from before the look-back window
                # (motions open for signatures for weeks) is history, not a flood of news.
                history_before=first if held.high_water is None else None,
            )
            if self.member_names is not None:
                # Members earlier polls could not name: asked again, within a bound.
                await self.member_names.name_stored_items(now=now)
            held.new_count, held.new_high_water = new, last
        return PollResult(self.name, fetched=listed, new_items=new)
