"""Subscribers' and alerts' lifecycle: subscribe, confirm, stop, count bounces, suspend."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.addresses import email_key, normalise_email
from alertd.config import DeliverySettings
from alertd.db import transaction
from alertd.errors import UsageError
from alertd.models import UNSENT, Alert, Hit, Ledger, Outbox, OutboxState, Subscriber
from alertd.queries import check_query_words, compile_query
from alertd.schedule import parse_frequency

log = logging.getLogger("alertd.subscriptions")


# The question stages an alert can hear about (Alert.notify_on), in the order they happen.
NOTIFY_STAGES = ("tabled", "answered")
_FOLLOWS_ASKER = re.compile(r"(member|asker):\d+")


def parse_notify_on(value: str | Iterable[str] | None, canonical: str) -> str:
    """The stored form of what an alert hears about ("tabled,answered", "answered").

    None gives the default: a plain follow of a Member's questions hears of them as they are
    tabled and again when answered; any other alert, of answers.

    Raises:
        UsageError: anything but answers, or questions as tabled and their answers.
    """
    if value is None:
        return "tabled,answered" if _FOLLOWS_ASKER.fullmatch(canonical) else "answered"
    words = value.split(",") if isinstance(value, str) else list(value)
    chosen = {word.strip().lower() for word in words if word.strip()}
    # Told of a question as tabled, a reader is always told of its answer: no "tabled" alone.
    if chosen not in ({"answered"}, {"tabled", "answered"}):
        shown = ",".join(sorted(chosen)) or "nothing"
        raise UsageError(f"--on {shown!r}: use answered, or tabled,answered")
    return ",".join(stage for stage in NOTIFY_STAGES if stage in chosen)


def find_subscriber(session: Session, address: str) -> Subscriber | None:
    """The subscriber of an address in any case: Parent@Example.ORG is parent@example.org."""
    key = email_key(address)
    return session.exec(select(Subscriber).where(Subscriber.email_key == key)).first()


def subscriber_email(engine: Engine, subscriber_id: int) -> str:
    """The address of a subscriber, as first typed."""
    with Session(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        return subscriber.email


def subscribe(
    engine: Engine,
    email: str,
    query_text: str,
    frequency: str,
    *,
    confirmed: bool,
    now: datetime,
    notify_on: str | Iterable[str] | None = None,
    refuse_duplicate: bool = False,
) -> Alert:
    """Save an alert for an address (creating the subscriber); nothing is saved on bad input.

    ``notify_on`` is what it hears about (see ``parse_notify_on``; None: the default).

    Raises:
        UsageError: a bad address, query, frequency or stage; or (``refuse_duplicate``) the
            address already has an active alert for the same query.
    """
    address = normalise_email(email)
    chosen = parse_frequency(frequency)
    check_query_words(query_text)
    with transaction(engine) as session:
        query = compile_query(session, query_text)
        stages = parse_notify_on(notify_on, query.canonical)
        subscriber = find_subscriber(session, address)
        if subscriber is not None and refuse_duplicate:
            same = session.exec(
                select(Alert.id).where(
                    Alert.subscriber_id == subscriber.id,
                    col(Alert.unsubscribed_at).is_(None),
                    Alert.canonical == query.canonical,
                )
            ).first()
            if same is not None:
                raise UsageError(f"{subscriber.email} already has this alert (id {same})")
        if subscriber is None:
            subscriber = Subscriber(email=address, created_at=now)
            session.add(subscriber)
            session.flush()
        assert subscriber.id is not None
        alert = Alert(
            subscriber_id=subscriber.id,
            query=" ".join(query_text.split()),
            canonical=query.canonical,
            frequency=chosen,
            created_at=now,
            notify_on=stages,
        )
        if confirmed:
            _mark_confirmed(alert, now)
        session.add(alert)
        session.flush()
        return alert


def confirm_alert_row(alert: Alert, now: datetime) -> None:
    """Mark a loaded alert confirmed (its session saves it)."""
    _mark_confirmed(alert, now)


def _mark_confirmed(alert: Alert, now: datetime) -> None:
    # Only answers that reach alertd from now on are mailed: no flood of old answers.
    alert.confirmed = True
    alert.confirmed_at = now


def confirm_alert(engine: Engine, alert_id: int, now: datetime) -> Alert:
    with transaction(engine) as session:
        alert = _get_alert(session, alert_id)
        if not alert.confirmed:
            _mark_confirmed(alert, now)
        return alert


def unsubscribe(engine: Engine, alert_id: int, now: datetime) -> Alert:
    """Stop an alert; it is kept (what it was sent stays on record) but never matches again.

    Raises:
        UsageError: there is no such active alert.
    """
    with transaction(engine) as session:
        alert = _get_alert(session, alert_id)
        alert.unsubscribed_at = now
        cancel_dead_digests(session, alert.subscriber_id, now)
        return alert


def _get_alert(session: Session, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None or alert.unsubscribed_at is not None:
        raise UsageError(f"no active alert with id {alert_id}")
    return alert


def record_bounce(
    engine: Engine, subscriber_id: int, settings: DeliverySettings, now: datetime
) -> int:
    """Count a bounce reported after sending (``alertd bounce``); the count in a row now."""
    with transaction(engine) as session:
        return count_bounce(session, subscriber_id, settings, now)


def count_bounce(
    session: Session, subscriber_id: int, settings: DeliverySettings, now: datetime
) -> int:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return 0
    subscriber.consecutive_bounces += 1
    if subscriber.consecutive_bounces >= settings.max_bounces and subscriber.suspended_at is None:
        subscriber.suspended_at = now
        log.warning("suspended %s after %d bounces", subscriber.email, settings.max_bounces)
        cancel_dead_digests(session, subscriber_id, now)
    return subscriber.consecutive_bounces


def cancel_dead_digests(session: Session, subscriber_id: int, now: datetime) -> int:
    """Cancel the subscriber's unsent digests that no longer have a live alert; how many.

    Called in the transaction that stops an alert, unsubscribes or suspends: a digest
    queued (or retrying, for up to delivery.retry_for_hours) before is then never sent.
    A digest is live while one of its alerts is (confirmed, not stopped) and the subscriber
    is not suspended; transactional mails (no hits) are left alone. The cancelled digest's
    ledger rows go too: it was never sent.
    """
    session.flush()
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return 0
    has_hits = sa.exists().where(col(Hit.outbox_id) == col(Outbox.id))
    wanted = [
        col(Outbox.subscriber_id) == subscriber_id,
        col(Outbox.status).in_(UNSENT),
        has_hits,
    ]
    if subscriber.suspended_at is None:
        live_alert = (
            sa.select(col(Hit.id))
            .join(Alert, col(Alert.id) == col(Hit.alert_id))
            .where(
                col(Hit.outbox_id) == col(Outbox.id),
                col(Alert.confirmed).is_(True),
                col(Alert.unsubscribed_at).is_(None),
            )
        )
        wanted.append(~live_alert.exists())
    ids = list(session.exec(select(Outbox.id).where(*wanted).with_for_update()).all())
    if not ids:
        return 0
    session.execute(
        sa.update(Outbox)
        .where(col(Outbox.id).in_(ids), col(Outbox.status).in_(UNSENT))
        .values(
            status=OutboxState.CANCELLED,
            last_error=f"cancelled {now.isoformat()}: no live alert",
            lease_owner=None,
            lease_until=None,
        )
    )
    session.execute(sa.delete(Ledger).where(col(Ledger.outbox_id).in_(ids)))
    log.info("cancelled %d queued digest(s) of subscriber %d", len(ids), subscriber_id)
    return len(ids)
