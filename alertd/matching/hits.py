"""Hits: match the items not matched yet against every live alert, and record the hits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from alertd.db import transaction
from alertd.matching.analysis import Document, analyse
from alertd.matching.live import LiveAlert, LiveMatcher
from alertd.models import ITEM_TYPES, Alert, Hit, Item

log = logging.getLogger("alertd.matching.hits")


def item_document(item: Item) -> Document:
    return Document(
        heading=item.heading,
        question_text=item.question_text,
        answer_text=item.answer_text,
        house=item.house or "",
        asking_member_id=item.asking_member_id,
        answering_member_id=item.answering_member_id,
        answering_body_id=item.answering_body_id,
        item_type=ITEM_TYPES.get(item.kind, ""),
    )


def match_new_answers(engine: Engine, *, now: datetime, matcher: LiveMatcher | None = None) -> int:
    """Match every unmatched answer version; record hits and mark them matched, atomically.

    An alert only gets answers that reached alertd after it was confirmed, so a new
    subscriber is never flooded with history. `matcher` is the daemon's, kept from run to
    run; without one, a matcher is built for this call. Returns the number of hits recorded.
    """
    live = LiveMatcher() if matcher is None else matcher
    _load_unless_idle(engine, live)
    with transaction(engine) as session:
        items = session.exec(
            select(Item)
            .where(col(Item.matched_at).is_(None))
            .order_by(col(Item.id))
            # Several workers: each matches the answers no other is matching right now.
            .with_for_update(skip_locked=True)
        ).all()
        if not items:
            return 0
        corrections = {q.id for q in items if _corrects_an_answer(session, q)}
        hits = sum(_correction_hits(session, q, now) for q in items if q.id in corrections)
        fresh = [q for q in items if q.id not in corrections]
        hits += _match_fresh(session, live, fresh, now)
        for item in items:
            item.matched_at = now
            session.add(item)
    log.info("matched %d new items: %d hits", len(items), hits)
    return hits


def _load_unless_idle(engine: Engine, matcher: LiveMatcher) -> None:
    """Load a new matcher before the write transaction (on SQLite, the database's write
    lock): reading every live alert takes seconds at a million. Not when nothing waits."""
    if matcher.version is not None:
        return
    with Session(engine) as session:
        waiting = session.exec(select(Item.id).where(col(Item.matched_at).is_(None)).limit(1))
        if waiting.first() is not None:
            with matcher.lock:
                matcher.refresh(session)


def _match_fresh(
    session: Session, matcher: LiveMatcher, items: Sequence[Item], now: datetime
) -> int:
    """Hits of answers seen for the first time (or substantive after a holding answer)."""
    if not items:
        return 0
    documents = [analyse(item_document(q)) for q in items]
    hits = 0
    with matcher.lock:
        matcher.refresh(session)
        for alert, indexes in matcher.match(documents):
            hits += _record_hits(session, alert, [items[i] for i in indexes], now)
    return hits


def _earlier_answers(item: Item) -> SelectOfScalar[int | None]:
    return select(col(Item.id)).where(
        Item.source == item.source,
        Item.source_id == item.source_id,
        col(Item.version) < item.version,
        col(Item.is_holding).is_(False),
    )


def _corrects_an_answer(session: Session, item: Item) -> bool:
    """A correction of an answer alertd stored (a first sight of a corrected one is fresh)."""
    if item.date_answer_corrected is None or item.version == 1:
        return False
    return session.exec(_earlier_answers(item)).first() is not None


def _correction_hits(session: Session, correction: Item, now: datetime) -> int:
    """A corrected answer goes to the people the earlier answer went to, under the same alert."""
    assert correction.id is not None
    earlier = _earlier_answers(correction)
    mailed = session.exec(
        select(Hit.alert_id, Hit.subscriber_id)
        .join(Alert, col(Alert.id) == col(Hit.alert_id))
        .where(
            col(Hit.item_id).in_(earlier),
            col(Hit.outbox_id).is_not(None),
            col(Alert.unsubscribed_at).is_(None),
        )
        .distinct()
    ).all()
    for alert_id, subscriber_id in mailed:
        session.add(
            Hit(
                alert_id=alert_id,
                subscriber_id=subscriber_id,
                item_id=correction.id,
                created_at=now,
            )
        )
    return len(mailed)


def _record_hits(session: Session, alert: LiveAlert, items: list[Item], now: datetime) -> int:
    count = 0
    for item in items:
        assert item.id is not None
        if alert.confirmed_at is not None and item.ingested_at < alert.confirmed_at:
            continue
        session.add(
            Hit(
                alert_id=alert.id,
                subscriber_id=alert.subscriber_id,
                item_id=item.id,
                created_at=now,
            )
        )
        count += 1
    return count
