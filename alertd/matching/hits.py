"""Hits: match the items not matched yet against every live alert, and record the hits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select
from sqlmodel.sql.expression import SelectOfScalar

from alertd.db import transaction
from alertd.matching.analysis import Document, analyse
from alertd.matching.live import LiveAlert, LiveMatcher
from alertd.models import ITEM_TYPES, Alert, Hit, Item, ItemKind, QuestionStage, question_stage
from alertd.subscriptions.vocabulary import NotifyOn

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
    """Match every unmatched item version; record hits and mark them matched, atomically.

    An alert only gets items that reached alertd after it was confirmed, so a new
    subscriber is never flooded with history, and only the question stages it hears about
    (Alert.notify_on). A follow-up (a correction, the answer to a question mailed as tabled,
    a withdrawal) goes to those sent the earlier version. `matcher` is the daemon's, kept
    from run to run; without one, a matcher is built for this call. Returns the number of
    hits recorded.
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
        hits = 0
        fresh: list[Item] = []
        told: set[tuple[int, int]] = set()  # (alert id, item id) already hit as a follow-up
        newest = _newest_versions(items)
        for item in items:
            if item.version < newest[item.source, item.source_id]:
                # Superseded before it was matched (a statement and its correction, a question
                # tabled and answered, seen in one poll): only the newest version is news.
                continue
            _drop_unsent_tabled(session, item)
            earlier, only_follow_up = _follow_up_of(session, item)
            if earlier is not None:
                alert_ids = _follow_up_hits(session, item, earlier, now)
                hits += len(alert_ids)
                told.update((alert_id, item.id) for alert_id in alert_ids if item.id)
            if not only_follow_up:
                fresh.append(item)
        hits += _match_fresh(session, live, fresh, now, told)
        for item in items:
            item.matched_at = now
            session.add(item)
    log.info("matched %d new items: %d hits", len(items), hits)
    return hits


def _newest_versions(items: Sequence[Item]) -> dict[tuple[str, str], int]:
    """The newest version of each item among ``items``."""
    newest: dict[tuple[str, str], int] = {}
    for item in items:
        key = (item.source, item.source_id)
        newest[key] = max(newest.get(key, 0), item.version)
    return newest


def _drop_unsent_tabled(session: Session, item: Item) -> None:
    """A question answered or withdrawn before its digest as tabled went: that hit is dropped
    (the answer is matched as any answer is; a withdrawn question is never alerted)."""
    if item.version == 1 or question_stage(item.version_key) is QuestionStage.TABLED:
        return
    tabled = _earlier_versions(item).where(Item.version_key == QuestionStage.TABLED.value)
    session.exec(delete(Hit).where(col(Hit.item_id).in_(tabled), col(Hit.outbox_id).is_(None)))


def _follow_up_of(session: Session, item: Item) -> tuple[SelectOfScalar[int | None] | None, bool]:
    """The earlier versions whose recipients get this one, and whether only they do."""
    if item.version == 1:
        return None, False
    if item.kind != ItemKind.WRITTEN_QUESTION:
        # A corrected statement goes, as a corrected answer does, to those sent the original
        # (a first sight of a corrected one is fresh).
        earlier = _earlier_versions(item)
        if item.date_answer_corrected is None or session.exec(earlier).first() is None:
            return None, False
        return earlier, True
    stage = question_stage(item.version_key)
    if stage is QuestionStage.WITHDRAWN:
        return _earlier_versions(item), True
    if _corrects_an_answer(session, item):
        return _earlier_answers(item), True
    if stage is QuestionStage.ANSWERED:
        # Now answered: those told when it was tabled; alerts hearing of answers match too.
        tabled = _earlier_versions(item).where(Item.version_key == QuestionStage.TABLED.value)
        return tabled, False
    return None, False


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
    session: Session,
    matcher: LiveMatcher,
    items: Sequence[Item],
    now: datetime,
    told: set[tuple[int, int]],
) -> int:
    """Hits of items seen for the first time: a question as tabled, an answer (substantive
    after a holding answer), a feed item; none for an alert already told of it (``told``)."""
    if not items:
        return 0
    documents = [analyse(item_document(q)) for q in items]
    hits = 0
    with matcher.lock:
        matcher.refresh(session)
        for alert, indexes in matcher.match(documents):
            hits += _record_hits(session, alert, [items[i] for i in indexes], now, told)
    return hits


def _earlier_versions(item: Item) -> SelectOfScalar[int | None]:
    """The item's earlier versions that may have been mailed: matched in an earlier run (one
    matched in this run is superseded, never mailed), and not holding answers."""
    return select(col(Item.id)).where(
        Item.source == item.source,
        Item.source_id == item.source_id,
        col(Item.version) < item.version,
        col(Item.is_holding).is_(False),
        col(Item.matched_at).is_not(None),
    )


def _earlier_answers(item: Item) -> SelectOfScalar[int | None]:
    """The item's earlier answers (not as tabled, not holding)."""
    prefix = QuestionStage.ANSWERED.value + ":"
    return _earlier_versions(item).where(col(Item.version_key).startswith(prefix))


def _corrects_an_answer(session: Session, item: Item) -> bool:
    """A correction of an answer alertd stored (a first sight of a corrected one is fresh)."""
    if item.date_answer_corrected is None or item.version == 1:
        return False
    return session.exec(_earlier_answers(item)).first() is not None


def _follow_up_hits(
    session: Session, follow_up: Item, earlier: SelectOfScalar[int | None], now: datetime
) -> set[int]:
    """A follow-up goes to the people the earlier version went to, under the same alert;
    the ids of those alerts."""
    assert follow_up.id is not None
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
                item_id=follow_up.id,
                created_at=now,
            )
        )
    return {alert_id for alert_id, _ in mailed}


def _hears(alert: LiveAlert, item: Item) -> bool:
    """Whether the alert hears about this stage of a question (any other kind: yes)."""
    stage = question_stage(item.version_key)
    if item.kind != ItemKind.WRITTEN_QUESTION or stage is QuestionStage.ANSWERED:
        return NotifyOn(alert.notify_on).hears("answered")
    if stage is QuestionStage.TABLED:
        return NotifyOn(alert.notify_on).hears("tabled")
    return False  # a withdrawal (or holding answer) is only ever a follow-up


def _record_hits(
    session: Session,
    alert: LiveAlert,
    items: list[Item],
    now: datetime,
    told: set[tuple[int, int]],
) -> int:
    count = 0
    for item in items:
        assert item.id is not None
        if alert.confirmed_at is not None and item.ingested_at < alert.confirmed_at:
            continue
        if (alert.id, item.id) in told or not _hears(alert, item):
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
