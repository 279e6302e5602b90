"""Backfill: load past answers day by day, politely and resumably, without alerting anyone."""

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

log = logging.getLogger("alertd.backfill")
BACKFILL_SOURCE = "parliament-backfill"
MAX_TRIES = 5


@dataclass(frozen=True)
class DayDone:
    """Progress after one day: for a progress bar or a log line."""

    day: date
    days_done: int
    days_total: int
    listed: int
    stored: int
    elapsed_s: float


ProgressCallback = Callable[[DayDone], None]


def _day_source(day: date) -> str:
    # One SourceState row per day done ("parliament-backfill:2026-11-01"): any range can be
    # loaded in any order, and a rerun skips exactly the days already done.
    return f"{BACKFILL_SOURCE}:{day.isoformat()}"


def days_done(engine: Engine, first: date, last: date) -> set[date]:
    """The days from ``first`` to ``last`` a backfill has loaded already."""
    names = col(SourceState.name)
    with Session(engine) as session:
        rows = session.exec(
            select(SourceState.name).where(names >= _day_source(first), names <= _day_source(last))
        ).all()
    return {date.fromisoformat(name.rpartition(":")[2]) for name in rows}


def _mark_day_done(engine: Engine, day: date, now: datetime, stored: int) -> None:
    with transaction(engine) as session:
        name = _day_source(day)
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
    progress: ProgressCallback,
    retry_base_s: float = 2.0,
) -> int:
    """Store the answers of each day from ``first`` to ``last``; return how many were new.

    One request at a time; 429 and 5xx are retried with exponential backoff. Each day is
    committed and recorded as done before the next starts, so an interrupted backfill
    resumes where it stopped, and days loaded by an earlier backfill are skipped.

    Raises:
        SourceUnavailable: a day still failed after the retries (rerun to resume).
        SourceInvalid: the API answered something unusable.
    """
    polite = settings.model_copy(update={"detail_concurrency": 1})
    done = await asyncio.to_thread(days_done, engine, first, last)
    days_total = (last - first).days + 1
    to_load = [first + timedelta(days=n) for n in range(days_total)]
    to_load = [day for day in to_load if day not in done]
    if done:
        log.info("%d of the %d days were loaded before: skipped", len(done), days_total)
    total_new = 0
    started = time.monotonic()
    async with make_http_client(polite) as client:
        api = ParliamentApi(polite, client)
        for day in to_load:

            async def one_day(day: date = day) -> tuple[int, int]:
                params = {"answeredWhenFrom": day.isoformat(), "answeredWhenTo": day.isoformat()}
                summaries = await api.list_answers(params)
                unseen = await asyncio.to_thread(unseen_summaries, engine, summaries)
                items = await api.full_items(unseen)
                stored = await asyncio.to_thread(store_items, engine, items, now=now, alert=False)
                return len(summaries), stored

            listed, stored = await _with_retries(one_day, retry_base_s)
            await asyncio.to_thread(_mark_day_done, engine, day, now, stored)
            total_new += stored
            progress(
                DayDone(
                    day,
                    (day - first).days + 1,
                    days_total,
                    listed,
                    stored,
                    time.monotonic() - started,
                )
            )
    return total_new
