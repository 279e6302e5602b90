"""Members' names for items that carry only ids: the Member table, else the Members API by id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alertd.config import MembersSettings
from alertd.db import transaction
from alertd.errors import PermanentError, SourceInvalid, TransientError
from alertd.models import Member
from alertd.sources import http
from alertd.sources.members import MemberHit, parse_search_item

log = logging.getLogger("alertd.sources.member_names")
# Lookups in flight at once: the Members API is shared with everyone.
LOOKUP_CONCURRENCY = 4


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


@dataclass
class MemberNames:
    """Names Members by id for any source's items, at ingest: from the Member table, then
    (at most ``settings.lookups_per_poll`` a call) from the Members API, caching what it finds.
    """

    engine: Engine
    settings: MembersSettings
    client: httpx.AsyncClient

    async def names(self, ids: Iterable[int]) -> dict[int, MemberHit]:
        """The Members of these ids that could be named; the rest are left out (logged).

        A failing Members API never fails the poll: the item is stored without the name and
        shown as "a Member", never as a bare id.
        """
        wanted = set(ids)
        if not wanted:
            return {}
        found = await asyncio.to_thread(known_members, self.engine, wanted)
        missing = sorted(wanted - set(found))
        lookups = missing[: self.settings.lookups_per_poll]
        if len(missing) > len(lookups):
            log.warning(
                "%d Members left unnamed this poll (members.lookups_per_poll is %d)",
                len(missing) - len(lookups),
                self.settings.lookups_per_poll,
            )
        slots = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        fetched = await asyncio.gather(*(self._lookup(member_id, slots) for member_id in lookups))
        new = [hit for hit in fetched if hit is not None]
        if new:
            try:
                await asyncio.to_thread(_store, self.engine, new)
            except IntegrityError:
                log.info("Members were named by another worker first")
        found.update((hit.id, hit) for hit in new)
        return found

    async def _lookup(self, member_id: int, slots: asyncio.Semaphore) -> MemberHit | None:
        url = f"{self.settings.base_url.rstrip('/')}/api/Members/{member_id}"
        async with slots:
            try:
                response = await http.get(self.client, url, headers={"Accept": "application/json"})
                http.check_status(response)
                hit = _member_of(response)
            except (TransientError, PermanentError) as exc:
                log.warning("could not name Member %d: %s", member_id, exc)
                return None
        if hit is None or hit.id != member_id:
            log.warning("Members API answered for Member %d without one", member_id)
            return None
        return hit


def _member_of(response: httpx.Response) -> MemberHit | None:
    try:
        body = response.json()
    except ValueError as exc:
        raise SourceInvalid(f"GET {response.url} returned broken JSON: {exc}") from exc
    # GET /api/Members/{id} answers {"value": {...}, "links": [...]}, as a search item is.
    return parse_search_item(body) if isinstance(body, Mapping) else None
