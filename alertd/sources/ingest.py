"""Ingest: poll a source over its look-back window and store the answer versions that are new."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from alertd.db import transaction
from alertd.errors import AlertdError, PermanentError
from alertd.models import Member, Question, SourceState
from alertd.sources.parliament import AnswerItem, MemberInfo, ParliamentApi, parse_item

log = logging.getLogger("alertd.sources.ingest")
PARLIAMENT_SOURCE = "parliament"


@dataclass(frozen=True)
class PollResult:
    source: str
    fetched: int
    new_versions: int
    polled: bool = True


def poll_window(high_water: date | None, today: date, lookback_days: int) -> tuple[date, date]:
    """The UK dates to ask for: back from the last good poll (or today) by the look-back."""
    start = min(high_water or today, today) - timedelta(days=lookback_days)
    return start, today


@dataclass(frozen=True)
class PollLease:
    """Who polls: ``owner`` holds a source for ``lease_s``; nobody repolls within ``min_gap``."""

    owner: str
    lease_s: float
    min_gap: timedelta


def take_poll_lease(
    engine: Engine, source: str, lease: PollLease, *, now: datetime
) -> date | None | Literal[False]:
    """Take the source for this worker; False when another holds it or it was just polled.

    Returns the source's high-water mark (None before its first good poll).
    """
    wall = datetime.now(UTC)
    try:
        with transaction(engine) as session:
            state = session.exec(
                select(SourceState)
                .where(SourceState.name == source)
                .with_for_update(skip_locked=True)
            ).first()
            if state is None:
                if session.get(SourceState, source) is not None:
                    return False  # locked by another worker right now
                state = SourceState(name=source)
            held = state.lease_until is not None and state.lease_until > wall
            recent = state.last_ok_at is not None and now - state.last_ok_at < lease.min_gap
            if (held and state.lease_owner != lease.owner) or recent:
                return False
            state.lease_owner = lease.owner
            state.lease_until = wall + timedelta(seconds=lease.lease_s)
            session.add(state)
            return state.high_water
    except IntegrityError:
        return False  # another worker created the row first


async def poll_parliament(
    engine: Engine,
    api: ParliamentApi,
    *,
    now: datetime,
    zone: ZoneInfo,
    lookback_days: int,
    lease: PollLease,
) -> PollResult:
    """Fetch the window's answers, store new versions, then move the high-water mark.

    The mark moves only after every page and detail of the window was fetched and stored,
    so a failed poll is simply repeated by the next one.

    Raises:
        SourceUnavailable, SourceInvalid: the poll failed; the failure is also recorded.
    """
    today = now.astimezone(zone).date()
    high_water = take_poll_lease(engine, PARLIAMENT_SOURCE, lease, now=now)
    if high_water is False:
        log.info("%s: polled recently or by another worker; skipped", PARLIAMENT_SOURCE)
        return PollResult(PARLIAMENT_SOURCE, fetched=0, new_versions=0, polled=False)
    first, last = poll_window(high_water, today, lookback_days)
    try:
        summaries = await api.answers_between(first, last)
        unseen = unseen_summaries(engine, summaries)
        items = await api.full_items(unseen)
        new_versions = store_items(engine, items, now=now)
    except AlertdError as exc:
        record_poll(engine, PARLIAMENT_SOURCE, now=now, error=str(exc))
        raise
    record_poll(engine, PARLIAMENT_SOURCE, now=now, high_water=last, new_count=new_versions)
    return PollResult(PARLIAMENT_SOURCE, fetched=len(summaries), new_versions=new_versions)


def unseen_summaries(
    engine: Engine, summaries: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Summaries whose answer version is not stored yet (only those need a detail fetch)."""
    parsed: list[tuple[Mapping[str, Any], AnswerItem]] = []
    for summary in summaries:
        try:
            item = parse_item(summary)
        except PermanentError as exc:
            log.warning("skipping a listing item: %s", exc)
            continue
        if item.date_answered is not None:
            parsed.append((summary, item))
    known = _known_versions(engine, [item.api_id for _, item in parsed])
    return [summary for summary, item in parsed if (item.api_id, item.version_key) not in known]


def _known_versions(engine: Engine, api_ids: Iterable[int]) -> set[tuple[int, str]]:
    ids = sorted(set(api_ids))
    known: set[tuple[int, str]] = set()
    with Session(engine) as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = session.exec(
                select(Question.api_id, Question.version_key).where(col(Question.api_id).in_(chunk))
            ).all()
            known.update((api_id, key) for api_id, key in rows)
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
    existing = session.exec(
        select(Question).where(
            Question.api_id == item.api_id, Question.version_key == item.version_key
        )
    ).first()
    if existing is not None:
        existing.is_withdrawn = item.is_withdrawn
        return False
    latest = session.exec(
        select(func.max(Question.answer_version)).where(Question.api_id == item.api_id)
    ).one()
    row = _question_row(item, version=(latest or 0) + 1, now=now)
    if not alert:
        row.matched_at = now
    session.add(row)
    for member in (item.asking_member, item.answering_member):
        if member is not None:
            _upsert_member(session, member)
    return True


def _question_row(item: AnswerItem, *, version: int, now: datetime) -> Question:
    asker, answerer = item.asking_member, item.answering_member
    # Holding and withdrawn answers are stored but never alerted: mark them matched already.
    silent = item.is_holding or item.is_withdrawn
    return Question(
        api_id=item.api_id,
        answer_version=version,
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
        is_correction=item.is_correction,
        is_withdrawn=item.is_withdrawn,
        url=item.url,
        ingested_at=now,
        matched_at=now if silent else None,
    )


def _upsert_member(session: Session, info: MemberInfo) -> None:
    if info.name == str(info.id):
        return  # only an id: nothing to learn about this Member
    member = session.get(Member, info.id)
    if member is None:
        member = Member(id=info.id, name=info.name)
    member.name, member.party, member.house = info.name, info.party, info.house
    member.constituency = info.constituency
    session.add(member)


def record_poll(
    engine: Engine,
    source: str,
    *,
    now: datetime,
    error: str | None = None,
    high_water: date | None = None,
    new_count: int = 0,
) -> None:
    with transaction(engine) as session:
        state = session.get(SourceState, source) or SourceState(name=source)
        state.last_poll_at = now
        state.last_error = error
        state.lease_owner, state.lease_until = None, None
        if error is None:
            state.last_ok_at = now
            state.last_new_count = new_count
            if high_water is not None:
                state.high_water = max(high_water, state.high_water or high_water)
        session.add(state)
