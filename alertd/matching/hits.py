"""Hits: match answer versions not matched yet against every live alert, and record the hits."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from alertd.db import transaction
from alertd.errors import QueryError
from alertd.matching.analysis import Document, Query, analyse, parse_query
from alertd.matching.engine import MatchEngine
from alertd.models import Alert, Hit, Question, Subscriber

log = logging.getLogger("alertd.matching.hits")


def question_document(question: Question) -> Document:
    return Document(
        heading=question.heading,
        question_text=question.question_text,
        answer_text=question.answer_text,
        house=question.house,
        asking_member_id=question.asking_member_id,
        answering_member_id=question.answering_member_id,
        answering_body_id=question.answering_body_id,
    )


def _live_alerts(session: Session) -> dict[str, list[Alert]]:
    """Confirmed, active alerts of subscribers not suspended, grouped by canonical query."""
    rows = session.exec(
        select(Alert)
        .join(Subscriber, col(Subscriber.id) == col(Alert.subscriber_id))
        .where(
            col(Alert.confirmed).is_(True),
            col(Alert.unsubscribed_at).is_(None),
            col(Alert.paused_at).is_(None),
            col(Subscriber.suspended_at).is_(None),
        )
    ).all()
    grouped: dict[str, list[Alert]] = defaultdict(list)
    for alert in rows:
        grouped[alert.canonical].append(alert)
    return grouped


def _compile(grouped: dict[str, list[Alert]]) -> dict[str, Query]:
    compiled: dict[str, Query] = {}
    for canonical in grouped:
        try:
            compiled[canonical] = parse_query(canonical)
        except QueryError as exc:
            # Saved queries were valid when saved; one that no longer parses is skipped loudly.
            log.error("alert query %r no longer parses: %s", canonical, exc)
    return compiled


def match_new_answers(engine: Engine, *, now: datetime) -> int:
    """Match every unmatched answer version; record hits and mark them matched, atomically.

    An alert only gets answers that reached alertd after it was confirmed, so a new
    subscriber is never flooded with history. Returns the number of hits recorded.
    """
    with transaction(engine) as session:
        questions = session.exec(
            select(Question)
            .where(col(Question.matched_at).is_(None))
            .order_by(col(Question.id))
            # Several workers: each matches the answers no other is matching right now.
            .with_for_update(skip_locked=True)
        ).all()
        if not questions:
            return 0
        corrections = {q.id for q in questions if _corrects_an_answer(session, q)}
        hits = sum(_correction_hits(session, q, now) for q in questions if q.id in corrections)
        fresh = [q for q in questions if q.id not in corrections]
        hits += _match_fresh(session, fresh, now)
        for question in questions:
            question.matched_at = now
            session.add(question)
    log.info("matched %d new answer versions: %d hits", len(questions), hits)
    return hits


def _match_fresh(session: Session, questions: Sequence[Question], now: datetime) -> int:
    """Hits of answers seen for the first time (or substantive after a holding answer)."""
    if not questions:
        return 0
    grouped = _live_alerts(session)
    documents = [analyse(question_document(q)) for q in questions]
    matched = MatchEngine(_compile(grouped)).match(documents)
    hits = 0
    for canonical, indexes in matched.items():
        for alert in grouped[canonical]:
            hits += _record_hits(session, alert, [questions[i] for i in indexes], now)
    return hits


def _earlier_answers(question: Question) -> SelectOfScalar[int | None]:
    return select(col(Question.id)).where(
        Question.api_id == question.api_id,
        col(Question.answer_version) < question.answer_version,
        col(Question.is_holding).is_(False),
    )


def _corrects_an_answer(session: Session, question: Question) -> bool:
    """A correction of an answer alertd stored (a first sight of a corrected one is fresh)."""
    if question.date_answer_corrected is None or question.answer_version == 1:
        return False
    return session.exec(_earlier_answers(question)).first() is not None


def _correction_hits(session: Session, correction: Question, now: datetime) -> int:
    """A corrected answer goes to the people the earlier answer went to, under the same alert."""
    assert correction.id is not None
    earlier = _earlier_answers(correction)
    mailed = session.exec(
        select(Hit.alert_id, Hit.subscriber_id)
        .join(Alert, col(Alert.id) == col(Hit.alert_id))
        .where(
            col(Hit.question_id).in_(earlier),
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
                question_id=correction.id,
                created_at=now,
            )
        )
    return len(mailed)


def _record_hits(session: Session, alert: Alert, questions: list[Question], now: datetime) -> int:
    assert alert.id is not None
    count = 0
    for question in questions:
        assert question.id is not None
        if alert.confirmed_at is not None and question.ingested_at < alert.confirmed_at:
            continue
        session.add(
            Hit(
                alert_id=alert.id,
                subscriber_id=alert.subscriber_id,
                question_id=question.id,
                created_at=now,
            )
        )
        count += 1
    return count
