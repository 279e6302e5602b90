"""Finding Members by name: the Members API (cached in the database) and the Member table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from alertd.config import MembersSettings, Settings
from alertd.db import transaction
from alertd.errors import SourceError
from alertd.models import Member, MemberSearch
from alertd.sources import http

log = logging.getLogger("alertd.sources.members")
MAX_RESULTS = 20
_HOUSES = {1: "Commons", 2: "Lords"}


@dataclass(frozen=True)
class MemberHit:
    """A Member as a lookup shows them."""

    id: int
    name: str
    party: str | None
    constituency: str | None
    house: str | None

    @property
    def description(self) -> str:
        details = ", ".join(part for part in (self.party, self.constituency) if part)
        return f"{self.name} ({details})" if details else self.name


def search_key(name: str) -> str:
    """The form of a name the cache is keyed by: single-spaced, case-folded."""
    return " ".join(name.split()).casefold()


def _hit(member: Member) -> MemberHit:
    return MemberHit(member.id, member.name, member.party, member.constituency, member.house)


def local_members(engine: Engine, name: str, limit: int = MAX_RESULTS) -> list[MemberHit]:
    """Members in the table whose name contains every word of ``name``, by name."""
    words = search_key(name).split()
    if not words:
        return []
    statement = select(Member)
    for word in words:
        statement = statement.where(func.lower(Member.name).contains(word, autoescape=True))
    with Session(engine) as session:
        rows = session.exec(statement.order_by(col(Member.name), col(Member.id)).limit(limit))
        return [_hit(member) for member in rows]


def get_member(engine: Engine, member_id: int) -> MemberHit | None:
    with Session(engine) as session:
        member = session.get(Member, member_id)
        return _hit(member) if member is not None else None


def _cached(engine: Engine, key: str, settings: MembersSettings, now: datetime) -> bool:
    with Session(engine) as session:
        search = session.get(MemberSearch, key)
    return search is not None and now - search.fetched_at < timedelta(hours=settings.cache_hours)


def _text(value: Any, limit: int) -> str | None:
    return value.strip()[:limit] or None if isinstance(value, str) else None


def parse_search_item(item: Any) -> MemberHit | None:
    """A Members API search item (``{"value": {...}}``), or None if it is not one."""
    value = item.get("value") if isinstance(item, Mapping) else None
    if not isinstance(value, Mapping):
        return None
    member_id, name = value.get("id"), _text(value.get("nameDisplayAs"), 200)
    if not isinstance(member_id, int) or not 0 < member_id < 2**31 or name is None:
        return None
    party = value.get("latestParty")
    membership = value.get("latestHouseMembership")
    party = party if isinstance(party, Mapping) else {}
    membership = membership if isinstance(membership, Mapping) else {}
    house = membership.get("house")
    return MemberHit(
        id=member_id,
        name=name,
        party=_text(party.get("name"), 100),
        constituency=_text(membership.get("membershipFrom"), 200),
        house=_HOUSES.get(house) if isinstance(house, int) else None,
    )


async def fetch_members(settings: Settings, name: str) -> list[MemberHit]:
    """Search the Members API by name, through the sources' HTTP helper.

    Raises:
        SourceUnavailable: a timeout, a connection error, 429 or 5xx, or no whole answer
            within members.fetch_deadline_s.
        SourceInvalid: any other status, a body that is not a search result or is larger
            than members.max_response_bytes, or a redirect to a non-public address.
    """
    members = settings.members
    url = members.base_url.rstrip("/") + "/api/Members/Search"
    async with http.make_client(
        settings.parliament.user_agent,
        members.timeout_s,
        accept="application/json",
        deadline_s=members.fetch_deadline_s,
        max_bytes=members.max_response_bytes,
    ) as client:
        response = await http.get(client, url, params={"Name": name, "take": MAX_RESULTS})
        http.check_status(response)
    body = http.json_body(response)
    items = body.get("items") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise http.answer_error(response, "Members API search answered without an items list")
    return [hit for hit in map(parse_search_item, items) if hit is not None]


def _store(
    engine: Engine, key: str, hits: list[MemberHit], now: datetime, settings: MembersSettings
) -> None:
    """Cache API results: new Members are added, known ones get missing details filled in;
    searches past their time, or beyond the most kept, are forgotten."""
    _expire_searches(engine, now, settings)
    with transaction(engine) as session:
        for hit in hits:
            member = session.get(Member, hit.id)
            if member is None:
                member = Member(id=hit.id, name=hit.name)
            member.party = member.party or hit.party
            member.constituency = member.constituency or hit.constituency
            member.house = member.house or hit.house
            session.add(member)
        search = session.get(MemberSearch, key) or MemberSearch(name=key, fetched_at=now)
        search.fetched_at = now
        session.add(search)


def _expire_searches(engine: Engine, now: datetime, settings: MembersSettings) -> None:
    """Forget cached searches older than cache_hours, and the oldest beyond cache_max_rows
    less one (room for the one about to be stored): anyone can make a search, each of a new
    name, so the cache must not grow without end."""
    expired = now - timedelta(hours=settings.cache_hours)
    with transaction(engine) as session:
        session.execute(sa.delete(MemberSearch).where(col(MemberSearch.fetched_at) < expired))
        keep = settings.cache_max_rows - 1
        count = session.exec(select(func.count()).select_from(MemberSearch)).one()
        if count > keep:
            oldest = (
                select(MemberSearch.name)
                .order_by(col(MemberSearch.fetched_at), col(MemberSearch.name))
                .limit(count - keep)
            )
            names = list(session.exec(oldest).all())
            session.execute(sa.delete(MemberSearch).where(col(MemberSearch.name).in_(names)))


async def search_members(
    engine: Engine, settings: Settings, name: str, now: datetime
) -> list[MemberHit]:
    """Members matching a name (2-100 characters): from the API (cached), then the table.

    When the API fails the Members already known are still found.
    """
    key = search_key(name)[:100]
    found: dict[int, MemberHit] = {}
    if not await asyncio.to_thread(_cached, engine, key, settings.members, now):
        try:
            fetched = await fetch_members(settings, key)
        except SourceError as exc:
            log.warning("Members API search for %r failed: %s", key, exc)
        else:
            found.update((hit.id, hit) for hit in fetched)
            try:
                await asyncio.to_thread(_store, engine, key, fetched, now, settings.members)
            except IntegrityError:
                log.info("Members for %r were cached by another request", key)
    for hit in await asyncio.to_thread(local_members, engine, key):
        found.setdefault(hit.id, hit)
    return sorted(found.values(), key=lambda h: (h.name.casefold(), h.id))[:MAX_RESULTS]
