"""Subscribers' and alerts' lifecycle: subscribe, confirm, pause, stop, bounce, suspend.

Each operation runs in one transaction; one that leaves a queued digest with no live alert
(stopping or pausing alerts, suspending their owner) cancels that digest in the same
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.addresses import email_key, normalise_email
from alertd.db import transaction
from alertd.errors import NotYours, UsageError
from alertd.matching import followed_member
from alertd.models import UNSENT, Alert, Hit, Ledger, Outbox, OutboxState, Subscriber
from alertd.queries import check_query_words, compile_query
from alertd.schedule import Frequency, parse_frequency
from alertd.subscriptions.vocabulary import NotifyOn

log = logging.getLogger("alertd.subscriptions")


def default_notify_on(canonical: str) -> NotifyOn:
    """What an alert hears of unless its owner chose: a plain follow of a Member's questions
    (member: or asker:) hears of them as tabled and again when answered; any other alert,
    of answers."""
    follow = followed_member(canonical)
    if follow is not None and follow.field in ("member", "asker"):
        return NotifyOn.TABLED_AND_ANSWERED
    return NotifyOn.ANSWERED


def find_subscriber(session: Session, address: str) -> Subscriber | None:
    """The subscriber of an address in any case: Parent@Example.ORG is parent@example.org."""
    key = email_key(address)
    return session.exec(select(Subscriber).where(Subscriber.email_key == key)).first()


def subscriber_of(session: Session, address: str, now: datetime) -> Subscriber:
    """The subscriber of a normalised address, added (and flushed, so it has its id) if new."""
    subscriber = find_subscriber(session, address)
    if subscriber is None:
        subscriber = Subscriber(email=address, created_at=now)
        session.add(subscriber)
        session.flush()
    return subscriber


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
    notify_on: NotifyOn | None = None,
    refuse_duplicate: bool = False,
) -> Alert:
    """Save an alert for an address (adding the subscriber); nothing is saved on bad input.

    ``notify_on``: what it hears of (None: ``default_notify_on``). A ``confirmed`` alert is
    confirmed as by ``confirm``, lifting its owner's suspension.

    Raises:
        UsageError: a bad address, query or frequency; or (``refuse_duplicate``) the
            address already has an active alert for the same query.
    """
    address = normalise_email(email)
    chosen = parse_frequency(frequency)
    check_query_words(query_text)
    with transaction(engine) as session:
        query = compile_query(session, query_text)
        subscriber = subscriber_of(session, address, now)
        if refuse_duplicate:
            same = session.exec(
                select(Alert.id).where(
                    Alert.subscriber_id == subscriber.id,
                    col(Alert.unsubscribed_at).is_(None),
                    Alert.canonical == query.canonical,
                )
            ).first()
            if same is not None:
                raise UsageError(f"{subscriber.email} already has this alert (id {same})")
        assert subscriber.id is not None
        alert = Alert(
            subscriber_id=subscriber.id,
            query=" ".join(query_text.split()),
            canonical=query.canonical,
            frequency=chosen,
            created_at=now,
            notify_on=notify_on or default_notify_on(query.canonical),
        )
        if confirmed:
            _confirm(alert, subscriber, now)
        session.add(alert)
        session.flush()
        return alert


def renew_pending(
    alert: Alert, frequency: Frequency, notify_on: NotifyOn | None, now: datetime
) -> None:
    """Start an unconfirmed alert afresh (its session saves it), as when it is signed up for
    again: the new frequency and stages, and ``now`` as the start of its confirmation
    window."""
    alert.frequency, alert.created_at = frequency, now
    alert.notify_on = notify_on or default_notify_on(alert.canonical)


def confirm(engine: Engine, alert_id: int, now: datetime) -> bool:
    """Confirm a pending alert, lifting its owner's suspension; False when it was confirmed
    already (a confirmation link works once), or is stopped or gone."""
    with transaction(engine) as session:
        alert = session.get(Alert, alert_id, with_for_update=True)
        if alert is None or alert.unsubscribed_at is not None or alert.confirmed:
            return False
        subscriber = session.get(Subscriber, alert.subscriber_id)
        assert subscriber is not None
        _confirm(alert, subscriber, now)
    return True


def _confirm(alert: Alert, subscriber: Subscriber, now: datetime) -> None:
    # Only answers that reach alertd from now on are mailed: no flood of old answers.
    alert.confirmed, alert.confirmed_at = True, now
    # A followed confirmation link proves mail reaches the address again, as does an
    # operator's --confirmed: the suspension after bounces or a complaint is lifted.
    subscriber.suspended_at, subscriber.consecutive_bounces = None, 0


def change_alert(
    engine: Engine,
    alert_id: int,
    now: datetime,
    *,
    subscriber_id: int,
    paused: bool | None = None,
    frequency: Frequency | None = None,
) -> Alert:
    """Pause, resume or change the frequency of one of a subscriber's alerts. Pausing
    cancels the queued digests it leaves with no live alert: a paused alert sends nothing;
    what they carried of it waits for its first digest after it is resumed.

    Raises:
        NotYours: the alert is not one of the subscriber's active alerts.
    """
    with transaction(engine) as session:
        alert = _active_alert(session, alert_id, subscriber_id)
        if paused is not None and paused != (alert.paused_at is not None):
            alert.paused_at = now if paused else None
            if paused:
                _cancel_dead_digests(session, alert.subscriber_id, now)
        if frequency is not None:
            alert.frequency = frequency
        return alert


def stop_alert(
    engine: Engine, alert_id: int, now: datetime, *, subscriber_id: int | None = None
) -> Alert:
    """Stop an active alert (one of ``subscriber_id``'s, when given). It is kept, as what it
    was sent stays on record, but never matches again.

    Raises:
        NotYours: there is no such active alert (of that subscriber).
    """
    with transaction(engine) as session:
        alert = _active_alert(session, alert_id, subscriber_id)
        alert.unsubscribed_at = now
        _cancel_dead_digests(session, alert.subscriber_id, now)
        return alert


def stop_all(engine: Engine, subscriber_id: int, now: datetime) -> int:
    """Stop every active alert of a subscriber; how many there were."""
    with transaction(engine) as session:
        rows = session.exec(
            select(Alert).where(
                Alert.subscriber_id == subscriber_id, col(Alert.unsubscribed_at).is_(None)
            )
        ).all()
        for alert in rows:
            alert.unsubscribed_at = now
        _cancel_dead_digests(session, subscriber_id, now)
        return len(rows)


def _active_alert(session: Session, alert_id: int, subscriber_id: int | None) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None or alert.unsubscribed_at is not None:
        raise NotYours(f"no active alert with id {alert_id}")
    if subscriber_id is not None and alert.subscriber_id != subscriber_id:
        raise NotYours(f"no active alert with id {alert_id}")
    return alert


def record_bounce(engine: Engine, subscriber_id: int, max_bounces: int, now: datetime) -> int:
    """Count a bounce reported after sending (``alertd bounce``); the count in a row now."""
    with transaction(engine) as session:
        return count_bounce(session, subscriber_id, max_bounces, now)


def count_bounce(session: Session, subscriber_id: int, max_bounces: int, now: datetime) -> int:
    """Count a bounce in the caller's transaction, suspending the subscriber at
    ``max_bounces`` in a row; the count in a row now (0: no such subscriber)."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return 0
    subscriber.consecutive_bounces += 1
    if subscriber.consecutive_bounces >= max_bounces and subscriber.suspended_at is None:
        _suspend(session, subscriber, now)
        log.warning("suspended %s after %d bounces", subscriber.email, max_bounces)
    return subscriber.consecutive_bounces


# Only a subscriber who bounced before is written to: the common case writes nothing.
_CLEAR_BOUNCES = (
    sa.update(Subscriber)
    .where(
        col(Subscriber.id) == sa.bindparam("subscriber_id"),
        col(Subscriber.consecutive_bounces) != 0,
    )
    .values(consecutive_bounces=0)
)


def clear_bounces(connection: sa.Connection, subscriber_id: int) -> None:
    """Mail reached the subscriber: no bounces in a row now (in the caller's transaction)."""
    connection.execute(_CLEAR_BOUNCES, {"subscriber_id": subscriber_id})


def suspend(engine: Engine, subscriber_id: int, now: datetime) -> bool:
    """Suspend a subscriber that exists (after a complaint): nothing is mailed to them until
    one of their alerts is confirmed again; False if they were suspended already."""
    with transaction(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        if subscriber.suspended_at is not None:
            return False
        _suspend(session, subscriber, now)
    return True


def _suspend(session: Session, subscriber: Subscriber, now: datetime) -> None:
    assert subscriber.id is not None
    subscriber.suspended_at = now
    # Digests queued or retrying for them are never sent now.
    _cancel_dead_digests(session, subscriber.id, now)


def dead_digest() -> sa.ColumnElement[bool]:
    """Whether an outbox row is a digest nobody is to receive now (SQL, on ``Outbox``).

    A digest is live while one of its alerts is (confirmed, neither paused nor stopped) and
    its subscriber is not suspended. Transactional mails (no hits) are never dead.
    """
    has_hits = sa.exists().where(col(Hit.outbox_id) == col(Outbox.id))
    suspended = sa.exists().where(
        col(Subscriber.id) == col(Outbox.subscriber_id), col(Subscriber.suspended_at).is_not(None)
    )
    live_alert = sa.exists().where(
        col(Hit.outbox_id) == col(Outbox.id),
        col(Alert.id) == col(Hit.alert_id),
        col(Alert.confirmed).is_(True),
        col(Alert.unsubscribed_at).is_(None),
        col(Alert.paused_at).is_(None),
    )
    return sa.and_(has_hits, sa.or_(suspended, ~live_alert))


def cancel_dead_among(session: Session, outbox_ids: Sequence[int], now: datetime) -> set[int]:
    """Cancel those of the outbox rows (whatever their state) that are dead digests, in the
    caller's transaction; their ids. For the sender, which holds the rows: it re-checks them
    when it claims, gives back or retries them."""
    if not outbox_ids:
        return set()
    dead = session.exec(
        select(Outbox.id).where(col(Outbox.id).in_(list(outbox_ids)), dead_digest())
    ).all()
    ids = {outbox_id for outbox_id in dead if outbox_id is not None}
    _cancel(session, ids, now)
    return ids


def _cancel_dead_digests(session: Session, subscriber_id: int, now: datetime) -> int:
    """Cancel the subscriber's unsent digests that no longer have a live alert; how many.

    Called in the transaction of every operation here that stops or pauses an alert or
    suspends: a digest queued (or retrying, for up to delivery.retry_for_hours) before is
    never sent. One being sent at that moment is left to the sender, which checks again
    before it retries or gives it back (``cancel_dead_among``).
    """
    session.flush()
    ids = session.exec(
        select(Outbox.id)
        .where(
            col(Outbox.subscriber_id) == subscriber_id,
            col(Outbox.status).in_(UNSENT),
            dead_digest(),
        )
        .with_for_update()
    ).all()
    cancelled = {outbox_id for outbox_id in ids if outbox_id is not None}
    _cancel(session, cancelled, now)
    if cancelled:
        log.info("cancelled %d queued digest(s) of subscriber %d", len(cancelled), subscriber_id)
    return len(cancelled)


def _cancel(session: Session, outbox_ids: set[int], now: datetime) -> None:
    """Cancel digests: never sent, so their ledger rows go. Their hits of paused alerts
    wait again for the alert's next digest after it is resumed; hits of stopped alerts, or
    of a suspended subscriber, stay with the cancelled digest and are never sent."""
    if not outbox_ids:
        return
    ids = list(outbox_ids)
    session.execute(
        sa.update(Outbox)
        .where(col(Outbox.id).in_(ids))
        .values(
            status=OutboxState.CANCELLED,
            last_error=f"cancelled {now.isoformat()}: no live alert",
            lease_owner=None,
            lease_until=None,
        )
    )
    session.execute(sa.delete(Ledger).where(col(Ledger.outbox_id).in_(ids)))
    paused_alert = sa.select(col(Alert.id)).where(
        col(Alert.confirmed).is_(True),
        col(Alert.unsubscribed_at).is_(None),
        col(Alert.paused_at).is_not(None),
    )
    not_suspended = sa.select(col(Subscriber.id)).where(col(Subscriber.suspended_at).is_(None))
    session.execute(
        sa.update(Hit)
        .where(
            col(Hit.outbox_id).in_(ids),
            col(Hit.alert_id).in_(paused_alert),
            col(Hit.subscriber_id).in_(not_suspended),
        )
        .values(outbox_id=None)
    )
