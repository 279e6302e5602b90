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

from alertd.config import Settings
from alertd.db import transaction
from alertd.errors import TransientError
from alertd.kinds import api_kinds
from alertd.kinds.kind import ApiKind
from alertd.matching.hits import settle_never_alert
from alertd.models import BackfillDay
from alertd.sources.parliament import ParliamentApi, make_http_client
from alertd.sources.window import fetch_and_store

log = logging.getLogger("alertd.backfill")
MAX_TRIES = 5


@dataclass(frozen=True)
class DayDone:
    """Progress after one day: for a progress bar or a log line."""

    day: date
    days_done: int
    days_total: int
    listed: int
    # How many new versions of each kind, in polling order ("answers", 3), shown or not.
    stored_by_kind: tuple[tuple[str, int], ...]
    elapsed_s: float

    @property
    def stored(self) -> int:
        return sum(count for _, count in self.stored_by_kind)


@dataclass(frozen=True)
class BackfillTotals:
    """What a backfill stored, none of it alerted: (what they are, how many) per kind."""

    stored: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        counts = [f"{count} {words}" for words, count in self.stored]
        if not counts:
            return "nothing (no Parliament source is switched on)"
        return " and ".join([", ".join(counts[:-1]), counts[-1]] if len(counts) > 1 else counts)


ProgressCallback = Callable[[DayDone], None]


def days_done(engine: Engine, first: date, last: date, source: str) -> set[date]:
    """The days from ``first`` to ``last`` a backfill has loaded already of one source
    (each kind's days are recorded apart: a day whose answers an earlier alertd loaded
    still gets its statements)."""
    with Session(engine) as session:
        return set(
            session.exec(
                select(col(BackfillDay.day)).where(
                    BackfillDay.source == source,
                    col(BackfillDay.day) >= first,
                    col(BackfillDay.day) <= last,
                )
            ).all()
        )


def _mark_day_done(engine: Engine, source: str, day: date, now: datetime, stored: int) -> None:
    with transaction(engine) as session:
        session.merge(BackfillDay(source=source, day=day, stored=stored, done_at=now))


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
    settings: Settings,
    first: date,
    last: date,
    *,
    now: datetime,
    today: date,
    progress: ProgressCallback,
    retry_base_s: float = 2.0,
) -> BackfillTotals:
    """Store what was done on each day from ``first`` to ``last`` (answers given, written
    statements made, what was said in debates: each kind polled from Parliament's APIs that
    is switched on); return how many were new.

    One request at a time; 429 and 5xx are retried with exponential backoff. Each day's
    part of each kind is committed and recorded as done before the next starts, so an
    interrupted backfill resumes where it stopped, and what an earlier backfill loaded is
    skipped. ``today``: the date a changed statement is marked corrected.

    Raises:
        SourceUnavailable: a day still failed after the retries (rerun to resume).
        SourceInvalid: the API answered something unusable.
    """
    polite = settings.parliament.model_copy(update={"detail_concurrency": 1})
    # The kinds switched on, as the poll has them: a source turned off is not asked for its
    # past either.
    kinds = [kind for kind in api_kinds() if kind.poll_settings(settings) is not None]
    done = {
        kind.name: await asyncio.to_thread(days_done, engine, first, last, kind.source)
        for kind in kinds
    }
    days_total = (last - first).days + 1
    every_day = [first + timedelta(days=n) for n in range(days_total)]
    to_load = [day for day in every_day if any(day not in done[k.name] for k in kinds)]
    if len(to_load) < days_total:
        log.info(
            "%d of the %d days were loaded before: skipped", days_total - len(to_load), days_total
        )
    totals = dict.fromkeys((kind.name for kind in kinds), 0)
    started = time.monotonic()
    async with make_http_client(polite) as client:
        apis = {
            kind.name: ParliamentApi(polite, client, kind.api, kind.api.base_url(settings))
            for kind in kinds
        }
        for day in to_load:
            listed = 0
            stored: dict[str, int] = {}
            for kind in kinds:
                if day in done[kind.name]:
                    continue

                async def load(kind: ApiKind = kind, day: date = day) -> tuple[int, int]:
                    return await fetch_and_store(
                        engine,
                        apis[kind.name],
                        kind,
                        kind.day_listings(day),
                        now=now,
                        today=today,
                        never_alert=True,
                    )

                kind_listed, stored[kind.name] = await _with_retries(load, retry_base_s)
                # History: matched at once, alerting nobody, as backfills always were.
                await asyncio.to_thread(settle_never_alert, engine, now=now)
                await asyncio.to_thread(
                    _mark_day_done, engine, kind.source, day, now, stored[kind.name]
                )
                listed += kind_listed
                totals[kind.name] += stored[kind.name]
            progress(
                DayDone(
                    day,
                    (day - first).days + 1,
                    days_total,
                    listed,
                    tuple((kind.plural, stored.get(kind.name, 0)) for kind in kinds),
                    time.monotonic() - started,
                )
            )
    return BackfillTotals(tuple((kind.stored_words, totals[kind.name]) for kind in kinds))
