"""Digests: when alerts are due, claim their hits in the ledger and queue one email each."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import make_msgid
from typing import Any

import jinja2
from sqlalchemy import ColumnElement, and_, delete, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from alertd.config import DigestSettings, Settings
from alertd.db import transaction
from alertd.digests.items import ComposeMemo, Row, build_digest
from alertd.digests.render import RenderedDigest
from alertd.digests.render_pool import RenderBatch, RenderJob, RenderPool, render_here
from alertd.errors import AlertdError
from alertd.mail.outbox import queued_row
from alertd.models import (
    Alert,
    ComposeFailure,
    DigestRun,
    Hit,
    Item,
    Ledger,
    Outbox,
    Subscriber,
)
from alertd.schedule import Frequency, period_start

log = logging.getLogger("alertd.digests.compose")
# Subscribers composed per transaction: fewer round trips and flushes, while a crash or a
# conflict still loses (or redoes) no more than one chunk of work.
CHUNK_SIZE = 200


def _due(engine: Engine, settings: DigestSettings, now: datetime) -> dict[str, datetime | None]:
    due: dict[str, datetime | None] = {"immediate": None}
    new: list[tuple[Frequency, datetime]] = []
    with Session(engine) as session:
        for frequency in (Frequency.DAILY, Frequency.WEEKLY):
            start = period_start(frequency, now, settings)
            assert start is not None
            if session.get(DigestRun, (frequency, start)) is not None:
                continue
            ever = session.exec(
                select(DigestRun.period_start).where(DigestRun.frequency == frequency).limit(1)
            ).first()
            if ever is None:
                new.append((frequency, start))
            else:
                due[frequency] = start
    for frequency, start in new:
        # A new database: the period under way began before alertd ran, so its digest is not
        # late, and daily and weekly digests must not both go out at the first start. The
        # first ones go at their scheduled time.
        _mark_period_done(engine, frequency, start, now)
        log.info("first %s digests at the next scheduled time (a new database)", frequency)
    return due


@dataclass(frozen=True)
class _Run:
    """What every chunk of one compose run shares."""

    settings: Settings
    env: jinja2.Environment
    frequencies: list[str]
    now: datetime
    memo: ComposeMemo
    pool: RenderPool | None = None
    # Whether any compose failure was on record when the run began: only then can a queued
    # digest have one to clear (saves a statement per chunk in the usual case).
    failures_on_record: bool = False


def compose_due_digests(
    engine: Engine,
    settings: Settings,
    env: jinja2.Environment,
    *,
    now: datetime,
    pool: RenderPool | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Queue one digest per subscriber with hits on due alerts; return how many were queued.

    Subscribers are composed a chunk per transaction: each one's ledger rows, outbox row and
    claimed hits commit together, so a crash leaves either a queued digest or untouched hits.
    With a ``pool``, each chunk's digests are rendered in its worker processes. A subscriber
    whose digest cannot be built or rendered is skipped: their hits stay pending, the error
    is logged and kept in the ComposeFailure table (``alertd status`` shows it), and everyone
    else's digest is queued. Once ``stopping()`` is true no further chunk is begun; the
    period is then left open, so the next run composes the rest.
    """
    due = _due(engine, settings.digest, now)
    with Session(engine) as session:
        subscriber_ids = session.exec(
            select(Hit.subscriber_id)
            .join(Alert, col(Alert.id) == col(Hit.alert_id))
            .join(Subscriber, col(Subscriber.id) == col(Hit.subscriber_id))
            .where(
                col(Hit.outbox_id).is_(None),
                col(Alert.frequency).in_(list(due)),
                col(Alert.unsubscribed_at).is_(None),
                col(Alert.paused_at).is_(None),
                col(Subscriber.suspended_at).is_(None),
            )
            .distinct()
        ).all()
        failures_on_record = session.exec(select(ComposeFailure.subscriber_id).limit(1)).first()
    # The memo lives for this run only: its items are of the answers pending now.
    run = _Run(
        settings,
        env,
        list(due),
        now,
        ComposeMemo(settings),
        pool,
        failures_on_record=failures_on_record is not None,
    )
    ids = sorted(subscriber_ids)
    size = max(CHUNK_SIZE, 1)
    queued = 0
    for first in range(0, len(ids), size):
        if stopping():
            log.info("stopping: %d digests queued, the rest wait for the next run", queued)
            return queued
        queued += _compose_chunk(engine, run, ids[first : first + size])
    for frequency, start in due.items():
        if start is not None:
            _mark_period_done(engine, frequency, start, now)
    if queued:
        log.info("queued %d digests (%s)", queued, ", ".join(due))
    return queued


def _compose_chunk(engine: Engine, run: _Run, subscriber_ids: list[int]) -> int:
    if len(subscriber_ids) == 1:
        return _compose_one(engine, run, subscriber_ids[0])
    try:
        with transaction(engine) as session:
            return _compose_locked(session, run, subscriber_ids)
    except IntegrityError:
        # A ledger row another worker wrote first: the whole chunk rolled back, so redo it
        # one subscriber at a time; only one whose claim still conflicts is skipped.
        log.info("ledger conflict in a chunk of %d subscribers: one by one", len(subscriber_ids))
        return sum(_compose_one(engine, run, subscriber_id) for subscriber_id in subscriber_ids)


def _compose_one(engine: Engine, run: _Run, subscriber_id: int) -> int:
    try:
        with transaction(engine) as session:
            return _compose_locked(session, run, [subscriber_id])
    except IntegrityError as exc:
        # Nothing was queued twice; the hits are settled by the next run, which sees the
        # ledger row.
        log.warning("digest for subscriber %d skipped: %s", subscriber_id, exc.orig)
        return 0


def _mark_period_done(engine: Engine, frequency: str, start: datetime, now: datetime) -> None:
    try:
        with transaction(engine) as session:
            if session.get(DigestRun, (frequency, start)) is None:
                session.add(DigestRun(frequency=frequency, period_start=start, completed_at=now))
    except IntegrityError:
        pass  # another worker marked it done at the same moment


def _compose_locked(session: Session, run: _Run, subscriber_ids: list[int]) -> int:
    """Queue the digests of those subscribers whose rows this worker locks; return how many."""
    # Several workers: the one holding a subscriber's row composes; others skip it.
    subscribers = session.exec(
        select(Subscriber)
        .where(col(Subscriber.id).in_(subscriber_ids))
        .order_by(col(Subscriber.id))
        .with_for_update(skip_locked=True)
    ).all()
    locked = {subscriber.id: subscriber for subscriber in subscribers if subscriber.id is not None}
    if not locked:
        return 0
    pending = _pending_for(session, list(locked), run.frequencies)
    sent_before = _ledger_for(session, list(locked))
    run.memo.load_members(session, (row.alert for rows in pending.values() for row in rows))
    done: list[dict[str, Any]] = []
    composed: list[tuple[Subscriber, list[Row], RenderJob]] = []
    failed: dict[int, str] = {}
    batch = RenderBatch(run.pool, run.settings, run.env)
    for subscriber_id, subscriber in locked.items():
        fresh = _settle(pending.get(subscriber_id, []), sent_before, done)
        if not fresh:
            continue
        try:
            job = _render_job(session, run, subscriber, fresh)
        except SQLAlchemyError:
            raise  # the database, not this digest: the chunk cannot go on
        except Exception as exc:
            failed[subscriber_id] = _skipped(subscriber_id, "built", exc)
            continue
        batch.add(job)
        composed.append((subscriber, fresh, job))
    rendered = _render_all(batch, composed, run, failed)
    queued = [
        (_outbox(subscriber, job, message, run.now), rows)
        for (subscriber, rows, job), message in zip(composed, rendered, strict=True)
        if message is not None
    ]
    _write(session, queued, done, run.now)
    if failed or run.failures_on_record:
        _record_failures(
            session, failed, [outbox["subscriber_id"] for outbox, _ in queued], run.now
        )
    return len(queued)


def _render_all(
    batch: RenderBatch,
    composed: list[tuple[Subscriber, list[Row], RenderJob]],
    run: _Run,
    failed: dict[int, str],
) -> list[RenderedDigest | None]:
    """Each composed digest rendered, in order; None for one that failed (noted in ``failed``)."""
    try:
        return list(batch.results())
    except Exception:
        pass  # some digest failed: render them one at a time here to find which
    rendered: list[RenderedDigest | None] = []
    for subscriber, _, job in composed:
        try:
            rendered += render_here([job], run.settings, run.env)
        except Exception as exc:
            assert subscriber.id is not None
            failed[subscriber.id] = _skipped(subscriber.id, "rendered", exc)
            rendered.append(None)
    return rendered


def _skipped(subscriber_id: int, stage: str, exc: Exception) -> str:
    error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AlertdError) else str(exc)
    log.error(
        "digest for subscriber %d skipped, could not be %s (its hits stay pending): %s",
        subscriber_id,
        stage,
        error,
        # An expected failure (a broken template) is one line; a bug, its traceback.
        exc_info=not isinstance(exc, AlertdError),
    )
    return error


def _record_failures(
    session: Session, failed: dict[int, str], queued_ids: list[int], now: datetime
) -> None:
    """Keep each skipped subscriber's latest error; forget those whose digest went out."""
    if queued_ids:
        session.exec(
            delete(ComposeFailure).where(col(ComposeFailure.subscriber_id).in_(queued_ids))
        )
    for subscriber_id, error in failed.items():
        known = session.get(ComposeFailure, subscriber_id)
        if known is None:
            session.add(
                ComposeFailure(
                    subscriber_id=subscriber_id,
                    error=error,
                    first_failed_at=now,
                    last_failed_at=now,
                )
            )
        else:
            known.error, known.last_failed_at = error, now
            known.attempts += 1


def _pending_for(
    session: Session, subscriber_ids: Sequence[int], frequencies: list[str]
) -> dict[int, list[Row]]:
    """Each subscriber's unsent hits on due alerts, by alert, newest answer first."""
    rows = session.exec(
        select(Hit, Alert, Item)
        .join(Alert, col(Alert.id) == col(Hit.alert_id))
        .join(Item, col(Item.id) == col(Hit.item_id))
        .where(
            col(Hit.subscriber_id).in_(subscriber_ids),
            _unsent(),
            col(Alert.frequency).in_(frequencies),
            col(Alert.unsubscribed_at).is_(None),
            col(Alert.paused_at).is_(None),
        )
        .order_by(col(Alert.id), col(Item.day).desc(), col(Item.id))
    ).all()
    pending: dict[int, list[Row]] = defaultdict(list)
    for hit, alert, item in rows:
        pending[hit.subscriber_id].append(Row(hit, alert, item))
    return pending


def _unsent() -> ColumnElement[bool]:
    # "+ 0" keeps SQLite off the outbox_id index, which it prefers to an IN list of
    # subscribers: it would read every pending hit of every subscriber for each chunk.
    return (col(Hit.outbox_id) + 0).is_(None)


def pending_rows(session: Session, subscriber_id: int, frequencies: list[str]) -> list[Row]:
    """One subscriber's unsent hits on alerts of these frequencies (what a digest would show)."""
    return _pending_for(session, [subscriber_id], frequencies).get(subscriber_id, [])


def _ledger_for(session: Session, subscriber_ids: Sequence[int]) -> dict[tuple[int, int], int]:
    """The digest that already sent each (subscriber id, item id) of their unsent hits.

    Joined through the hits, so the query's size does not grow with the answers pending.
    """
    entries = session.exec(
        select(Hit.subscriber_id, Hit.item_id, Ledger.outbox_id)
        .join(Item, col(Item.id) == col(Hit.item_id))
        .join(
            Ledger,
            and_(
                col(Ledger.subscriber_id) == col(Hit.subscriber_id),
                col(Ledger.source) == col(Item.source),
                col(Ledger.source_id) == col(Item.source_id),
                col(Ledger.version) == col(Item.version),
            ),
        )
        .where(col(Hit.subscriber_id).in_(subscriber_ids), _unsent())
    ).all()
    return {(subscriber_id, item_id): outbox for subscriber_id, item_id, outbox in entries}


def _settle(
    rows: list[Row], sent_before: dict[tuple[int, int], int], done: list[dict[str, Any]]
) -> list[Row]:
    """The rows still to mail; those already mailed through another alert are done."""
    fresh = []
    for row in rows:
        outbox_id = sent_before.get((row.hit.subscriber_id, row.hit.item_id))
        if outbox_id is None:
            fresh.append(row)
        else:
            done.append({"id": row.hit.id, "outbox_id": outbox_id})
    return fresh


def _render_job(session: Session, run: _Run, subscriber: Subscriber, rows: list[Row]) -> RenderJob:
    domain = run.settings.mail.from_address.rpartition("@")[2]
    message_id = make_msgid(idstring="digest", domain=domain)
    digest = build_digest(session, run.settings, subscriber, rows, run.memo)
    return RenderJob(digest, message_id, run.now)


def _outbox(
    subscriber: Subscriber, job: RenderJob, rendered: RenderedDigest, now: datetime
) -> dict[str, Any]:
    """The outbox row of a subscriber's rendered digest."""
    assert subscriber.id is not None
    return queued_row(
        subscriber_id=subscriber.id,
        recipient=subscriber.email,
        message_id=job.message_id,
        subject=rendered.subject,
        message=rendered.message,
        now=now,
    )


def _write(
    session: Session,
    queued: list[tuple[dict[str, Any], list[Row]]],
    done: list[dict[str, Any]],
    now: datetime,
) -> None:
    """Insert the outbox and ledger rows and mark the hits: a few statements, not a few
    per digest (the hits' ORM objects are left stale: the chunk is done with them)."""
    ledger: list[dict[str, Any]] = []
    if queued:
        inserted = session.exec(
            insert(Outbox).returning(col(Outbox.message_id), col(Outbox.id)),
            params=[outbox for outbox, _ in queued],
        )
        # RETURNING need not follow the VALUES' order (SQLite): match rows by Message-ID.
        outbox_ids = {message_id: outbox_id for message_id, outbox_id in inserted}
        for outbox, rows in queued:
            _claim(rows, outbox_ids[outbox["message_id"]], now, done, ledger)
    if done:
        session.exec(update(Hit), params=done)
    if ledger:
        # Unique on (subscriber, source, source_id, version): a racing duplicate aborts the
        # whole transaction, so no item version can ever be mailed twice to one person.
        session.exec(insert(Ledger), params=ledger)


def _claim(
    rows: list[Row],
    outbox_id: int,
    now: datetime,
    done: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
) -> None:
    claimed: set[int] = set()
    for row in rows:
        done.append({"id": row.hit.id, "outbox_id": outbox_id})
        item = row.item
        if item.id is None or item.id in claimed:
            continue
        claimed.add(item.id)
        ledger.append(
            {
                "subscriber_id": row.hit.subscriber_id,
                "source": item.source,
                "source_id": item.source_id,
                "version": item.version,
                "item_id": item.id,
                "outbox_id": outbox_id,
                "created_at": now,
            }
        )
