"""The Parliament source: poll the API over a look-back window, store the new question versions."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

import alertd.matching.history  # noqa: F401  (indexes each Item as it is inserted)
from alertd.db import transaction
from alertd.errors import AlertdError, PermanentError
from alertd.models import Item, ItemKind, Member, QuestionStage, question_stage
from alertd.sources.member_names import MemberNames
from alertd.sources.parliament import AnswerItem, MemberInfo, ParliamentApi, parse_item
from alertd.sources.source import PARLIAMENT_SOURCE, PollResult
from alertd.sources.state import PollLease, record_poll, release_poll_lease, take_poll_lease

log = logging.getLogger("alertd.sources.ingest")


def poll_window(high_water: date | None, today: date, lookback_days: int) -> tuple[date, date]:
    """The UK dates to ask for: back from the last good poll (or today) by the look-back."""
    start = min(high_water or today, today) - timedelta(days=lookback_days)
    return start, today


@dataclass
class ParliamentSource:
    """The Written Questions API as a source: questions tabled and answered over a look-back
    window."""

    engine: Engine
    api: ParliamentApi
    zone: ZoneInfo
    lookback_days: int
    lease: PollLease
    name: str = PARLIAMENT_SOURCE
    # Names the Members the API gives only by id; None leaves them unnamed.
    member_names: MemberNames | None = None
    poll_tabled: bool = True

    async def poll(self, now: datetime) -> PollResult:
        """Fetch the window's answers, store new versions, then move the high-water mark.

        The mark moves only after every page and detail of the window was fetched and
        stored, so a failed poll is simply repeated by the next one.

        Raises:
            SourceUnavailable, SourceInvalid: the poll failed; the failure is also recorded.
        """

        async def fetch_and_store(first: date, last: date) -> tuple[int, int]:
            summaries = await self._summaries(first, last)
            unseen = await asyncio.to_thread(unseen_summaries, self.engine, summaries)
            items = await name_members(
                await self.api.full_items(unseen), self.member_names, now=now
            )
            new_versions = await asyncio.to_thread(store_items, self.engine, items, now=now)
            if self.member_names is not None:
                # Members earlier polls could not name: asked again, within a bound.
                await self.member_names.name_stored_items(now=now)
            return len(summaries), new_versions

        return await leased_window_poll(
            self.engine,
            self.name,
            self.lease,
            now=now,
            today=now.astimezone(self.zone).date(),
            lookback_days=self.lookback_days,
            fetch_and_store=fetch_and_store,
        )

    async def _summaries(self, first: date, last: date) -> list[Mapping[str, Any]]:
        """The window's answered and corrected questions, and (unless switched off) tabled ones;
        a question in several lists is its answered listing."""
        answered = await self.api.answers_between(first, last)
        if not self.poll_tabled:
            return list(answered)
        tabled = await self.api.tabled_between(first, last)
        merged: dict[Any, Mapping[str, Any]] = {value["id"]: value for value in tabled}
        merged.update((value["id"], value) for value in answered)
        return list(merged.values())


async def leased_window_poll(
    engine: Engine,
    name: str,
    lease: PollLease,
    *,
    now: datetime,
    today: date,
    lookback_days: int,
    fetch_and_store: Callable[[date, date], Awaitable[tuple[int, int]]],
) -> PollResult:
    """One poll of a source that asks for a window of UK dates: take the source's lease
    (or skip), fetch and store the window (how many were listed, how many are new), then
    record the poll and move the high-water mark; a failure is recorded and re-raised, an
    abandoned poll frees the lease.

    Raises:
        SourceUnavailable, SourceInvalid: as ``fetch_and_store`` does.
    """
    high_water = await asyncio.to_thread(take_poll_lease, engine, name, lease, now=now)
    if high_water is False:
        # Routine when several workers share the poll job; news when asked for a poll.
        on_demand = lease.min_gap == timedelta(0)
        log.log(
            logging.INFO if on_demand else logging.DEBUG,
            "%s: %s; skipped",
            name,
            "another worker is polling it" if on_demand else "polled recently or being polled",
        )
        return PollResult(name, fetched=0, new_items=0, polled=False)
    first, last = poll_window(high_water, today, lookback_days)
    try:
        fetched, new = await fetch_and_store(first, last)
    except AlertdError as exc:
        await asyncio.to_thread(record_poll, engine, name, now=now, error=str(exc))
        raise
    except asyncio.CancelledError:
        await asyncio.to_thread(release_poll_lease, engine, name, lease.owner)
        raise
    await asyncio.to_thread(record_poll, engine, name, now=now, high_water=last, new_count=new)
    return PollResult(name, fetched=fetched, new_items=new)


async def name_members(
    items: Sequence[AnswerItem], member_names: MemberNames | None, *, now: datetime
) -> list[AnswerItem]:
    """The items with every Member the API gave only by id named (where the Members API can)."""
    unnamed = {
        member.id
        for item in items
        for member in (item.asking_member, item.answering_member)
        if member is not None and member.name is None
    }
    if not unnamed or member_names is None:
        return list(items)
    found = await member_names.names(unnamed, now=now)

    def named(member: MemberInfo | None) -> MemberInfo | None:
        if member is None or member.name is not None or member.id not in found:
            return member
        hit = found[member.id]
        return MemberInfo(member.id, hit.name, hit.party, hit.constituency, member.house)

    return [
        dataclasses.replace(
            item,
            asking_member=named(item.asking_member),
            answering_member=named(item.answering_member),
        )
        for item in items
    ]


def unseen_summaries(
    engine: Engine, summaries: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Summaries of versions to store (only those need a detail fetch).

    An answer version not stored yet; a question as tabled when nothing of it is stored; a
    withdrawal of a question stored (one never seen is not worth a word).
    """
    parsed: list[tuple[Mapping[str, Any], AnswerItem]] = []
    for summary in summaries:
        try:
            parsed.append((summary, parse_item(summary)))
        except PermanentError as exc:
            log.warning("skipping a listing item: %s", exc)
    known = _known_versions(engine, [item.api_id for _, item in parsed])
    stored = {api_id for api_id, _ in known}
    unseen = []
    for summary, item in parsed:
        if (item.api_id, item.version_key) in known:
            continue
        stage = question_stage(item.version_key)
        if stage is QuestionStage.TABLED and item.api_id in stored:
            continue  # an answer (or a holding one) is stored already: no going back
        if stage is QuestionStage.WITHDRAWN and item.api_id not in stored:
            continue
        unseen.append(summary)
    return unseen


def _known_versions(engine: Engine, api_ids: Iterable[int]) -> set[tuple[int, str]]:
    ids = sorted({str(api_id) for api_id in api_ids})
    known: set[tuple[int, str]] = set()
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = session.exec(
                select(Item.source_id, Item.version_key).where(
                    Item.source == PARLIAMENT_SOURCE, col(Item.source_id).in_(chunk)
                )
            ).all()
            known.update((int(source_id), key) for source_id, key in rows)
    return known


def store_items(
    engine: Engine, items: Iterable[AnswerItem], *, now: datetime, alert: bool = True
) -> int:
    """Insert the answer versions not stored yet, in one transaction; return how many.

    With ``alert=False`` (backfill) they are stored as already matched: history is for
    preview and estimates, never mailed.
    """
    new = 0
    with transaction(engine) as session:
        for item in items:
            if _store_item(session, item, now, alert):
                new += 1
    return new


def _store_item(session: Session, item: AnswerItem, now: datetime, alert: bool) -> bool:
    source_id = str(item.api_id)
    existing = session.exec(
        select(Item).where(
            Item.source == PARLIAMENT_SOURCE,
            Item.source_id == source_id,
            Item.version_key == item.version_key,
        )
    ).first()
    if existing is not None:
        existing.is_withdrawn = item.is_withdrawn
        return False
    latest = session.exec(
        select(func.max(Item.version)).where(
            Item.source == PARLIAMENT_SOURCE, Item.source_id == source_id
        )
    ).one()
    row = _item_row(item, version=(latest or 0) + 1, now=now)
    if not alert:
        row.matched_at = now
    session.add(row)
    for member in (item.asking_member, item.answering_member):
        if member is not None:
            upsert_member(session, member)
    return True


def _item_row(item: AnswerItem, *, version: int, now: datetime) -> Item:
    asker, answerer = item.asking_member, item.answering_member
    # Holding answers are stored but never alerted: mark them matched already. (A withdrawal
    # goes only to those who were sent the question: see matching.hits.)
    silent = item.is_holding
    return Item(
        kind=ItemKind.WRITTEN_QUESTION,
        source=PARLIAMENT_SOURCE,
        source_id=str(item.api_id),
        version=version,
        version_key=item.version_key,
        uin=item.uin,
        house=item.house,
        heading=item.heading,
        question_text=item.question_text,
        answer_html=item.answer_html,
        answer_text=item.answer_text,
        asking_member_id=asker.id if asker else None,
        asking_member_name=asker.name if asker else None,
        asking_member_party=asker.party if asker else None,
        asking_member_constituency=asker.constituency if asker else None,
        answering_member_id=answerer.id if answerer else None,
        answering_member_name=answerer.name if answerer else None,
        answering_body_id=item.answering_body_id,
        answering_body_name=item.answering_body_name,
        date_tabled=item.date_tabled,
        date_answered=item.date_answered,
        date_answer_corrected=item.date_answer_corrected,
        is_holding=item.is_holding,
        is_withdrawn=item.is_withdrawn,
        date_for_answer=item.date_for_answer,
        is_named_day=item.is_named_day,
        grouped_uins=" ".join(item.grouped_uins)[:2000],
        url=item.url,
        ingested_at=now,
        matched_at=now if silent else None,
    )


def upsert_member(session: Session, info: MemberInfo) -> None:
    """Remember a Member's name, party and seat as last seen in an item."""
    if info.name is None:
        return  # only an id: nothing to learn about this Member
    member = session.get(Member, info.id)
    if member is None:
        member = Member(id=info.id, name=info.name)
    member.name, member.party, member.house = info.name, info.party, info.house
    member.constituency = info.constituency
    session.add(member)
