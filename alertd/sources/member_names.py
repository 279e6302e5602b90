"""Members' names for items that carry only ids: the Member table, else the Members API by id."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy import delete, or_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alertd.config import MembersSettings
from alertd.db import transaction
from alertd.errors import SourceError
from alertd.kinds.kind import MemberRef, NewItem
from alertd.models import Item, Member, MemberLookup
from alertd.sources import http
from alertd.sources.members import MemberHit, parse_search_item

log = logging.getLogger("alertd.sources.member_names")
# Lookups in flight at once: the Members API is shared with everyone.
LOOKUP_CONCURRENCY = 4
# A Member id the Members API did not name (an outage, or a Member it does not list yet) is
# asked again on a poll RETRY_FIRST later, then twice as long after each try (at most
# RETRY_MAX apart), MAX_LOOKUPS times in all: an id with no Member behind it is not fetched
# on every poll forever.
RETRY_FIRST = timedelta(hours=1)
RETRY_MAX = timedelta(days=1)
MAX_LOOKUPS = 8
# Items stored longer ago than this are not looked at again: their Members' tries (about
# 4 days in all) are long over, even after a daemon stopped for weeks, and the scan costs
# what a month of items costs, not what the whole history does.
RETRY_HORIZON = timedelta(days=30)


def known_members(engine: Engine, ids: Iterable[int]) -> dict[int, MemberHit]:
    """The Members of these ids that the Member table names."""
    wanted = sorted(set(ids))
    found: dict[int, MemberHit] = {}
    with Session(engine) as session:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            for member in session.exec(select(Member).where(col(Member.id).in_(chunk))).all():
                found[member.id] = MemberHit(
                    member.id, member.name, member.party, member.constituency, member.house
                )
    return found


def _store(engine: Engine, hits: Iterable[MemberHit]) -> None:
    with transaction(engine) as session:
        for hit in hits:
            if session.get(Member, hit.id) is None:
                session.add(
                    Member(
                        id=hit.id,
                        name=hit.name,
                        party=hit.party,
                        constituency=hit.constituency,
                        house=hit.house,
                    )
                )


def _resting(engine: Engine, ids: Iterable[int], now: datetime) -> set[int]:
    """Those of these ids not to be looked up now: tried lately, or as often as allowed."""
    wanted = sorted(set(ids))
    resting: set[int] = set()
    with Session(engine) as session:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = session.exec(
                select(MemberLookup.member_id).where(
                    col(MemberLookup.member_id).in_(chunk),
                    or_(
                        col(MemberLookup.attempts) >= MAX_LOOKUPS,
                        col(MemberLookup.next_attempt_at) > now,
                    ),
                )
            ).all()
            resting.update(rows)
    return resting


def _record_lookups(
    engine: Engine, named: Iterable[int], failed: Mapping[int, str], now: datetime
) -> None:
    """Forget the failures of the Members now named; count a try for each one not named."""
    with transaction(engine) as session:
        if named_ids := sorted(set(named)):
            session.execute(delete(MemberLookup).where(col(MemberLookup.member_id).in_(named_ids)))
        for member_id, error in failed.items():
            lookup = session.get(MemberLookup, member_id)
            if lookup is None:
                lookup = MemberLookup(member_id=member_id, attempts=0, last_error=error)
            lookup.attempts += 1
            lookup.last_error = error
            lookup.next_attempt_at = now + min(RETRY_FIRST * 2 ** (lookup.attempts - 1), RETRY_MAX)
            session.add(lookup)
            if lookup.attempts == MAX_LOOKUPS:
                log.warning(
                    "Member %d not named after %d lookups, no more tries (its items show "
                    '"a Member"): %s',
                    member_id,
                    MAX_LOOKUPS,
                    error,
                )


def _unnamed_items(session: Session, since: datetime) -> list[Item]:
    """Items stored since then that give a Member without a name."""
    # Item.members is JSON as SQLAlchemy writes it ({"name": null, ...}): a text search
    # narrows the scan to the items with an unnamed Member.
    unnamed = sa.cast(col(Item.members), sa.Text).like('%"name": null%')
    return list(session.exec(select(Item).where(col(Item.ingested_at) >= since, unnamed)).all())


def _unnamed_in_items(engine: Engine, since: datetime) -> set[int]:
    """The ids of Members that items stored since then give without a name."""
    with Session(engine) as session:
        items = _unnamed_items(session, since)
    return {m["id"] for item in items for m in item.members if m.get("name") is None}


def _named(member: MemberRef, found: Mapping[int, MemberHit]) -> MemberRef:
    hit = found.get(member.id)
    if member.name is not None or hit is None:
        return member
    return MemberRef(member.role, member.id, hit.name, hit.party, hit.constituency)


def _name_in_items(engine: Engine, hits: Iterable[MemberHit], since: datetime) -> None:
    """Write the names (party and seat too) into the stored items without them."""
    found = {hit.id: hit for hit in hits}
    with transaction(engine) as session:
        for item in _unnamed_items(session, since):
            members = [_named(MemberRef.from_json(m), found) for m in item.members]
            item.members = [member.to_json() for member in members]
            session.add(item)


@dataclass
class MemberNames:
    """Names Members by id for any source's items, at ingest: from the Member table, then
    from the Members API, caching what it finds. One serves one poll: at most
    ``settings.lookups_per_poll`` lookups in all.
    """

    engine: Engine
    settings: MembersSettings
    client: httpx.AsyncClient
    lookups_made: int = field(default=0, init=False)

    async def names(self, ids: Iterable[int], *, now: datetime) -> dict[int, MemberHit]:
        """The Members of these ids that could be named; the rest are left out (logged).

        A failing Members API never fails the poll: the item is stored without the name and
        shown as "a Member", never as a bare id; a later poll asks again (see RETRY_FIRST).
        """
        wanted = set(ids)
        if not wanted:
            return {}
        found = await asyncio.to_thread(known_members, self.engine, wanted)
        missing = wanted - set(found)
        if missing:
            missing -= await asyncio.to_thread(_resting, self.engine, missing, now)
        budget = max(self.settings.lookups_per_poll - self.lookups_made, 0)
        lookups = sorted(missing)[:budget]
        self.lookups_made += len(lookups)
        if len(missing) > len(lookups):
            log.warning(
                "%d Members left unnamed this poll (members.lookups_per_poll is %d)",
                len(missing) - len(lookups),
                self.settings.lookups_per_poll,
            )
        slots = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        fetched = await asyncio.gather(*(self._lookup(member_id, slots) for member_id in lookups))
        new = [hit for hit in fetched if isinstance(hit, MemberHit)]
        if new:
            try:
                await asyncio.to_thread(_store, self.engine, new)
            except IntegrityError:
                log.info("Members were named by another worker first")
        failed = {
            member_id: error
            for member_id, error in zip(lookups, fetched, strict=True)
            if isinstance(error, str)
        }
        found.update((hit.id, hit) for hit in new)
        if lookups:
            await asyncio.to_thread(
                _record_lookups, self.engine, [hit.id for hit in new], failed, now
            )
        return found

    async def name_new(self, items: Sequence[NewItem], *, now: datetime) -> list[NewItem]:
        """The items with every Member given only by id named (where the Members API can)."""
        unnamed = {member.id for item in items for member in item.members if member.name is None}
        if not unnamed:
            return list(items)
        found = await self.names(unnamed, now=now)
        return [
            dataclasses.replace(item, members=tuple(_named(m, found) for m in item.members))
            for item in items
        ]

    async def name_stored_items(self, *, now: datetime) -> int:
        """Name the Members of stored items that a poll before could not (an outage of the
        Members API, a Member it did not list yet), within this poll's lookups; return how
        many Members were named."""
        since = now - RETRY_HORIZON
        unnamed = await asyncio.to_thread(_unnamed_in_items, self.engine, since)
        if not unnamed:
            return 0
        found = await self.names(unnamed, now=now)
        if found:
            await asyncio.to_thread(_name_in_items, self.engine, found.values(), since)
            log.info("named %d Members of items stored before without their names", len(found))
        return len(found)

    async def _lookup(self, member_id: int, slots: asyncio.Semaphore) -> MemberHit | str:
        """The Member of this id, or why the Members API did not name one."""
        url = f"{self.settings.base_url.rstrip('/')}/api/Members/{member_id}"
        async with slots:
            try:
                response = await http.get(self.client, url, headers={"Accept": "application/json"})
                http.check_status(response)
                hit = _member_of(response)
            except SourceError as exc:
                log.warning("could not name Member %d: %s", member_id, exc)
                return str(exc)
        if hit is None or hit.id != member_id:
            log.warning("Members API answered for Member %d without one", member_id)
            return "the Members API answered without that Member"
        return hit


def _member_of(response: httpx.Response) -> MemberHit | None:
    body = http.json_body(response)
    # GET /api/Members/{id} answers {"value": {...}, "links": [...]}, as a search item is.
    return parse_search_item(body) if isinstance(body, Mapping) else None
