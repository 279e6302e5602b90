"""Backfill: load past answers and written statements day by day, politely and resumably,
without alerting anyone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import ParliamentSettings
from alertd.db import transaction
from alertd.errors import TransientError
from alertd.models import SourceState
from alertd.sources.ingest import store_items, unseen_summaries
from alertd.sources.parliament import ParliamentApi, make_http_client
from alertd.sources.statements import StatementsApi, store_statements, unseen_statements

log = logging.getLogger("alertd.backfill")
# Each kind's days are recorded apart: a day whose answers an earlier alertd loaded still
# gets its statements.
ANSWERS_BACKFILL = "parliament-backfill"
STATEMENTS_BACKFILL = "statements-backfill"
MAX_TRIES = 5


@dataclass(frozen=True)
class DayDone:
    """Progress after one day: for a progress bar or a log line."""

    day: date
    days_done: int
    days_total: int
    listed: int
    stored: int  # answer versions and statements
    elapsed_s: float
    statements_stored: int = 0


@dataclass(frozen=True)
class BackfillTotals:
    """What a backfill stored, none of it alerted."""

    answers: int
    statements: int


ProgressCallback = Callable[[DayDone], None]


def _day_source(kind: str, day: date) -> str:
    # One SourceState row per kind and day done ("parliament-backfill:2026-11-01"): any range
    # can be loaded in any order, and a rerun skips exactly the days already done.
    return f"{kind}:{day.isoformat()}"


def days_done(engine: Engine, first: date, last: date, kind: str) -> set[date]:
    """The days from ``first`` to ``last`` a backfill has loaded already (of one kind)."""
    names = col(SourceState.name)
    with Session(engine) as session:
        rows = session.exec(
            select(SourceState.name).where(
                names >= _day_source(kind, first), names <= _day_source(kind, last)
            )
        ).all()
    return {date.fromisoformat(name.rpartition(":")[2]) for name in rows}


def _mark_day_done(engine: Engine, kind: str, day: date, now: datetime, stored: int) -> None:
    with transaction(engine) as session:
        name = _day_source(kind, day)
        state = session.get(SourceState, name) or SourceState(name=name)
        state.high_water, state.last_poll_at, state.last_ok_at = day, now, now
        state.last_new_count, state.last_error = stored, None
        session.add(state)


async def _with_retries(
    fetch: Callable[[], Awaitable[tuple[int, int]]], retry_base_s: float
) -> tuple[int, int]:
    for attempt in range(1, MAX_TRIES + 1):
        try:
            return await fetch()
        except TransientError as exc:
            if attempt == MAX_TRIES:
                raise
            delay_s = retry_base_s * 2 ** (attempt - 1)
            log.warning("%s; retrying in %.1fs (try %d of %d)", exc, delay_s, attempt, MAX_TRIES)
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")


async def backfill(
    engine: Engine,
    settings: ParliamentSettings,
    first: date,
    last: date,
    *,
    now: datetime,
    today: date,
    progress: ProgressCallback,
    retry_base_s: float = 2.0,
) -> BackfillTotals:
    """Store the answers given and the written statements made on each day from ``first``
    to ``last``; return how many were new.

    One request at a time; 429 and 5xx are retried with exponential backoff. Each day's
    answers, then its statements, are committed and recorded as done before the next part
    starts, so an interrupted backfill resumes where it stopped, and what an earlier
    backfill loaded is skipped. ``today``: the date a changed statement is marked corrected.

    Raises:
        SourceUnavailable: a day still failed after the retries (rerun to resume).
        SourceInvalid: the API answered something unusable.
    """
    polite = settings.model_copy(update={"detail_concurrency": 1})
    answers_done = await asyncio.to_thread(days_done, engine, first, last, ANSWERS_BACKFILL)
    statements_done = await asyncio.to_thread(days_done, engine, first, last, STATEMENTS_BACKFILL)
    days_total = (last - first).days + 1
    every_day = [first + timedelta(days=n) for n in range(days_total)]
    to_load = [day for day in every_day if day not in answers_done or day not in statements_done]
    if len(to_load) < days_total:
        log.info(
            "%d of the %d days were loaded before: skipped", days_total - len(to_load), days_total
        )
    answers_total = statements_total = 0
    started = time.monotonic()
    async with make_http_client(polite) as client:
        api = ParliamentApi(polite, client)
        statements_api = StatementsApi(api)
        for day in to_load:

            async def answers_of(day: date = day) -> tuple[int, int]:
                params = {"answeredWhenFrom": day.isoformat(), "answeredWhenTo": day.isoformat()}
                summaries = await api.list_answers(params)
                unseen = await asyncio.to_thread(unseen_summaries, engine, summaries)
                items = await api.full_items(unseen)
                stored = await asyncio.to_thread(store_items, engine, items, now=now, alert=False)
                return len(summaries), stored

            async def statements_of(day: date = day) -> tuple[int, int]:
                summaries = await statements_api.made_between(day, day)
                unseen = await asyncio.to_thread(unseen_statements, engine, summaries)
                items = await statements_api.full_items(unseen)
                stored = await asyncio.to_thread(
                    store_statements, engine, items, now=now, today=today, alert=False
                )
                return len(summaries), stored

            listed = answers = statements = 0
            if day not in answers_done:
                listed, answers = await _with_retries(answers_of, retry_base_s)
                await asyncio.to_thread(_mark_day_done, engine, ANSWERS_BACKFILL, day, now, answers)
            if day not in statements_done:
                statements_listed, statements = await _with_retries(statements_of, retry_base_s)
                await asyncio.to_thread(
                    _mark_day_done, engine, STATEMENTS_BACKFILL, day, now, statements
                )
                listed += statements_listed
            answers_total += answers
            statements_total += statements
            progress(
                DayDone(
                    day,
                    (day - first).days + 1,
                    days_total,
                    listed,
                    answers + statements,
                    time.monotonic() - started,
                    statements_stored=statements,
                )
            )
    return BackfillTotals(answers_total, statements_total)
