"""Digests: when alerts are due, claim their hits in the ledger and queue one email each."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid

import jinja2
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alertd.config import WEEKDAYS, DigestSettings, Settings
from alertd.db import transaction
from alertd.errors import QueryError
from alertd.excerpt import excerpt_around, flatten, mark, merge_highlights
from alertd.links import alert_feed_url
from alertd.matching import Highlights, highlight_terms, parse_query
from alertd.models import Alert, DigestRun, Hit, Ledger, Member, Outbox, Question, Subscriber
from alertd.render import (
    Digest,
    DigestItem,
    DigestSection,
    describe_alert,
    render_message,
)
from alertd.tokens import make_token

log = logging.getLogger("alertd.digests")
_MEMBER_ONLY = re.compile(r"(member|asker|answerer):(\d+)")
_PARLIAMENT = "parliament"


def period_start(frequency: str, now: datetime, settings: DigestSettings) -> datetime | None:
    """The start of the daily or weekly period ``now`` falls in; None for immediate alerts."""
    if frequency == "immediate":
        return None
    local = now.astimezone(settings.zone)
    start = local.replace(
        hour=settings.daily_at.hour, minute=settings.daily_at.minute, second=0, microsecond=0
    )
    if start > local:
        start -= timedelta(days=1)
    if frequency == "weekly":
        start -= timedelta(days=(start.weekday() - WEEKDAYS.index(settings.weekly_day)) % 7)
    # Aware arithmetic with a ZoneInfo keeps the wall-clock time across a DST change.
    return start


def _due(engine: Engine, settings: DigestSettings, now: datetime) -> dict[str, datetime | None]:
    due: dict[str, datetime | None] = {"immediate": None}
    with Session(engine) as session:
        for frequency in ("daily", "weekly"):
            start = period_start(frequency, now, settings)
            assert start is not None
            if session.get(DigestRun, (frequency, start)) is None:
                due[frequency] = start
    return due


@dataclass(frozen=True)
class _Row:
    hit: Hit
    alert: Alert
    question: Question


def compose_due_digests(
    engine: Engine, settings: Settings, env: jinja2.Environment, *, now: datetime
) -> int:
    """Queue one digest per subscriber with hits on due alerts; return how many were queued.

    Each subscriber is one transaction: ledger rows, the outbox row and the claimed hits
    commit together, so a crash leaves either a queued digest or untouched hits.
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
    queued = sum(
        _compose_one(engine, settings, env, subscriber_id, list(due), now)
        for subscriber_id in sorted(subscriber_ids)
    )
    for frequency, start in due.items():
        if start is not None:
            _mark_period_done(engine, frequency, start, now)
    if queued:
        log.info("queued %d digests (%s)", queued, ", ".join(due))
    return queued


def _compose_one(
    engine: Engine,
    settings: Settings,
    env: jinja2.Environment,
    subscriber_id: int,
    frequencies: list[str],
    now: datetime,
) -> bool:
    try:
        with transaction(engine) as session:
            # Several workers: the one holding the subscriber's row composes; others skip.
            locked = session.exec(
                select(Subscriber.id)
                .where(Subscriber.id == subscriber_id)
                .with_for_update(skip_locked=True)
            ).first()
            if locked is None:
                return False
            return _compose_for(session, settings, env, subscriber_id, frequencies, now)
    except IntegrityError as exc:
        # A ledger row another worker wrote first: nothing was queued twice; the hits
        # are settled by the next run, which sees that ledger row.
        log.warning("digest for subscriber %d skipped: %s", subscriber_id, exc.orig)
        return False


def _mark_period_done(engine: Engine, frequency: str, start: datetime, now: datetime) -> None:
    try:
        with transaction(engine) as session:
            if session.get(DigestRun, (frequency, start)) is None:
                session.add(DigestRun(frequency=frequency, period_start=start, completed_at=now))
    except IntegrityError:
        pass  # another worker marked it done at the same moment


def _pending_rows(session: Session, subscriber_id: int, frequencies: list[str]) -> list[_Row]:
    rows = session.exec(
        select(Hit, Alert, Question)
        .join(Alert, col(Alert.id) == col(Hit.alert_id))
        .join(Question, col(Question.id) == col(Hit.question_id))
        .where(
            Hit.subscriber_id == subscriber_id,
            col(Hit.outbox_id).is_(None),
            col(Alert.frequency).in_(frequencies),
            col(Alert.unsubscribed_at).is_(None),
            col(Alert.paused_at).is_(None),
        )
        .order_by(col(Alert.id), col(Question.date_answered).desc(), col(Question.id))
    ).all()
    return [_Row(hit, alert, question) for hit, alert, question in rows]


def _compose_for(
    session: Session,
    settings: Settings,
    env: jinja2.Environment,
    subscriber_id: int,
    frequencies: list[str],
    now: datetime,
) -> bool:
    subscriber = session.get(Subscriber, subscriber_id)
    rows = _pending_rows(session, subscriber_id, frequencies)
    if subscriber is None or not rows:
        return False
    sent_before = _ledger_outboxes(session, subscriber_id, [row.question for row in rows])
    fresh = [row for row in rows if row.question.id not in sent_before]
    for row in rows:
        # Already mailed through another alert: the hit is done, not mailed again.
        if row.question.id in sent_before:
            row.hit.outbox_id = sent_before[row.question.id]
            session.add(row.hit)
    if not fresh:
        return False
    domain = settings.mail.from_address.rpartition("@")[2]
    message_id = make_msgid(idstring="digest", domain=domain)
    digest = _build_digest(session, settings, subscriber, fresh)
    rendered = render_message(digest, settings, env, message_id=message_id, now=now)
    outbox = Outbox(
        subscriber_id=subscriber_id,
        recipient=subscriber.email,
        message_id=message_id,
        subject=rendered.subject,
        message=rendered.message,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(outbox)
    session.flush()
    assert outbox.id is not None
    _claim(session, subscriber_id, fresh, outbox.id, now)
    return True


def _ledger_outboxes(
    session: Session, subscriber_id: int, questions: list[Question]
) -> dict[int, int]:
    """Question ids (of these) this subscriber was already sent, with the digest that did."""
    api_ids = sorted({q.api_id for q in questions})
    entries = session.exec(
        select(Ledger).where(Ledger.subscriber_id == subscriber_id, col(Ledger.api_id).in_(api_ids))
    ).all()
    sent = {(entry.api_id, entry.answer_version): entry.outbox_id for entry in entries}
    return {
        q.id: sent[(q.api_id, q.answer_version)]
        for q in questions
        if q.id is not None and (q.api_id, q.answer_version) in sent
    }


def _claim(
    session: Session, subscriber_id: int, rows: list[_Row], outbox_id: int, now: datetime
) -> None:
    claimed: set[int] = set()
    for row in rows:
        row.hit.outbox_id = outbox_id
        session.add(row.hit)
        question = row.question
        if question.id is None or question.id in claimed:
            continue
        claimed.add(question.id)
        # Unique on (subscriber, api_id, answer_version): a racing duplicate aborts the
        # whole transaction, so no answer can ever be mailed twice to one person.
        session.add(
            Ledger(
                subscriber_id=subscriber_id,
                api_id=question.api_id,
                answer_version=question.answer_version,
                question_id=question.id,
                outbox_id=outbox_id,
                created_at=now,
            )
        )


def _build_digest(
    session: Session, settings: Settings, subscriber: Subscriber, rows: list[_Row]
) -> Digest:
    """A subscriber's digest: answers grouped by the first alert they matched, each once."""
    secret = settings.web.secret_key.get_secret_value()
    base = settings.web.base_url
    assert subscriber.id is not None
    manage_url = f"{base}/manage/{make_token(secret, 'manage', subscriber.id)}"
    labels = {row.alert.id: alert_label(session, row.alert) for row in rows}
    order, by_alert = _group(rows, labels, settings)
    sections = []
    for alert in order:
        assert alert.id is not None
        items = by_alert[alert.id]
        sections.append(
            DigestSection(
                label=labels[alert.id],
                stop_url=f"{base}/alerts/stop/{make_token(secret, 'stop', alert.id)}",
                items=tuple(items[: settings.digest.max_per_alert]),
                total=len(items),
                reason=_reason(alert, labels[alert.id]),
                more_url=manage_url,
                feed_url=alert_feed_url(base, secret, alert.id),
            )
        )
    token = make_token(secret, "unsubscribe", subscriber.id)
    return Digest(
        recipient=subscriber.email,
        sections=tuple(sections),
        unsubscribe_url=f"{base}/unsubscribe/{token}",
        manage_url=manage_url,
    )


def _group(
    rows: list[_Row], labels: dict[int | None, str], settings: Settings
) -> tuple[list[Alert], dict[int, list[DigestItem]]]:
    """The alerts in order, and each one's items: an answer only under its first alert."""
    alerts_of: dict[int, list[Alert]] = defaultdict(list)
    for row in rows:
        assert row.question.id is not None
        alerts_of[row.question.id].append(row.alert)
    highlights = {row.alert.id: _highlights(row.alert) for row in rows}
    placed: set[int] = set()
    by_alert: dict[int, list[DigestItem]] = defaultdict(list)
    order: list[Alert] = []
    for row in rows:
        question_id, alert_id = row.question.id, row.alert.id
        assert question_id is not None and alert_id is not None
        if question_id in placed:
            continue
        placed.add(question_id)
        if alert_id not in by_alert:
            order.append(row.alert)
        matched = alerts_of[question_id]
        others = tuple(
            dict.fromkeys(labels[a.id] for a in matched if labels[a.id] != labels[alert_id])
        )
        marks = merge_highlights(h for a in matched if (h := highlights[a.id]) is not None)
        by_alert[alert_id].append(_item(row.question, settings, others, marks))
    return order, by_alert


def _highlights(alert: Alert) -> Highlights | None:
    try:
        return highlight_terms(parse_query(alert.canonical))
    except QueryError:
        return None  # a query that no longer parses highlights nothing; it still shows


def _reason(alert: Alert, label: str) -> str:
    follow = _MEMBER_ONLY.fullmatch(alert.canonical)
    if follow is None or label == alert.query:
        return describe_alert(label)
    field = follow.group(1)
    if field == "asker":
        return f"you follow questions asked by {label}"
    if field == "answerer":
        return f"you follow answers given by {label}"
    return describe_alert(label, member=True)


def alert_label(session: Session, alert: Alert) -> str:
    """How a digest names an alert: its query, or the Member's name for a plain follow."""
    follow = _MEMBER_ONLY.fullmatch(alert.canonical)
    if follow:
        member = session.get(Member, int(follow.group(2)))
        if member is not None:
            return member.name
    return alert.query


def _name(name: str | None) -> str:
    # Without expanded member data the API gives only an id, stored as the name.
    if name is not None and name.isdigit():
        return f"Member {name}"
    return name or ""


def _person(name: str | None, party: str | None, constituency: str | None) -> str:
    details = ", ".join(part for part in (party, constituency) if part)
    shown = _name(name) or "a Member"
    return f"{shown} ({details})" if details else shown


def _item(
    question: Question, settings: Settings, also: tuple[str, ...], highlights: Highlights
) -> DigestItem:
    feed = question.source != _PARLIAMENT
    asked = _person(
        question.asking_member_name,
        question.asking_member_party,
        question.asking_member_constituency,
    )
    text = mark(question.question_text, highlights)
    answer = excerpt_around(question.answer_text, highlights, settings.digest.excerpt_chars)
    return DigestItem(
        heading=flatten(question.heading) or f"Question {question.uin}",
        department=question.answering_body_name or "",
        asked_by="" if feed else asked,
        answered_by=_name(question.answering_member_name),
        date_tabled=question.date_tabled,
        date_answered=question.date_answered,
        question_text=text.text,
        answer_excerpt=answer.text,
        url=question.url,
        uin=question.uin,
        house=question.house,
        corrected=question.date_answer_corrected is not None,
        also_matches=also,
        question_marks=text.spans,
        excerpt_marks=answer.spans,
        source=question.source if feed else "",
        answer_html=question.answer_html,
    )
