"""The outbox as one state machine: every transition of a queued message happens here, but
the cancelling of digests nobody will receive (alertd.subscriptions.lifecycle does it, here
too: when a digest is claimed, given back or retried)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from alertd.config import DeliverySettings
from alertd.db import transaction, write_connection
from alertd.models import Outbox, OutboxKind, OutboxState
from alertd.subscriptions.lifecycle import cancel_dead_among, clear_bounces, count_bounce


def queued_row(
    *,
    subscriber_id: int,
    recipient: str,
    message_id: str,
    subject: str,
    message: bytes,
    now: datetime,
    kind: OutboxKind = OutboxKind.DIGEST,
) -> dict[str, Any]:
    """The values of a new outbox row (for a bulk INSERT): pending, due at ``now``."""
    return {
        "kind": kind,
        "subscriber_id": subscriber_id,
        "recipient": recipient,
        "message_id": message_id,
        "subject": subject,
        "message": message,
        "status": OutboxState.PENDING,
        "created_at": now,
        "next_attempt_at": now,
    }


def enqueue(
    engine: Engine,
    *,
    subscriber_id: int,
    recipient: str,
    message_id: str,
    subject: str,
    message: bytes,
    now: datetime,
) -> int:
    """Queue one transactional email: pending, due at ``now``, before any digest; its id."""
    row = queued_row(
        subscriber_id=subscriber_id,
        recipient=recipient,
        message_id=message_id,
        subject=subject,
        message=message,
        now=now,
        kind=OutboxKind.TRANSACTIONAL,
    )
    with write_connection(engine) as connection:
        inserted = connection.execute(sa.insert(Outbox).values(row).returning(col(Outbox.id)))
        outbox_id = inserted.scalar_one()
        assert outbox_id is not None
        return outbox_id


def retry_delay(attempts: int, settings: DeliverySettings, rng: random.Random) -> timedelta:
    """Exponential backoff with jitter: about ``delivery.first_retry_s`` (5 min), twice that,
    four times … never more than ``delivery.max_retry_s`` (6 h) apart.

    ``delivery.retry_for_hours`` bounds the total.
    """
    # The exponent is capped so a message retried for weeks never overflows a float.
    doubled = settings.first_retry_s * 2 ** min(max(attempts - 1, 0), 64)
    jittered = min(doubled, settings.max_retry_s) * rng.uniform(0.8, 1.2)
    return timedelta(seconds=min(jittered, settings.max_retry_s))


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claimed:
    """An outbox row this worker holds under a lease until ``lease_until``, with what to send."""

    id: int
    recipient: str
    message: bytes
    subscriber_id: int
    kind: OutboxKind
    lease_until: datetime


def claim_due(
    engine: Engine, *, now: datetime, limit: int, lease_s: float, owner: str
) -> list[Claimed]:
    """Take up to ``limit`` due rows for this worker; other workers skip them.

    Due: pending or retrying rows whose time (``now``) has come, and rows whose sender's
    lease ran out (it died mid-send). Transactional mails come first: a confirmation link
    waits behind no mail run. Leases run on the wall clock, whatever ``now`` is, because
    they guard against other processes. On PostgreSQL the rows are picked
    FOR UPDATE SKIP LOCKED.
    """
    lease_now = wall_clock()
    until = lease_now + timedelta(seconds=lease_s)
    # One index range per state (and kind), each already in order: an OR of them, or ORDER
    # BY id, made the database sort every due row for each claim (quadratic over a big run).
    wanted = (
        sa.and_(col(Outbox.status) == OutboxState.SENDING, col(Outbox.lease_until) < lease_now),
        *(
            sa.and_(
                col(Outbox.kind) == kind,
                col(Outbox.status) == state,
                col(Outbox.next_attempt_at) <= now,
            )
            for kind in (OutboxKind.TRANSACTIONAL, OutboxKind.DIGEST)
            for state in (OutboxState.RETRY, OutboxState.PENDING)
        ),
    )
    claimed: list[Claimed] = []
    with transaction(engine) as session:
        for condition in wanted:
            while len(claimed) < limit:
                rows = session.execute(
                    sa.select(
                        col(Outbox.id),
                        col(Outbox.recipient),
                        col(Outbox.message),
                        col(Outbox.subscriber_id),
                        col(Outbox.kind),
                    )
                    .where(condition)
                    .order_by(
                        col(Outbox.kind),
                        col(Outbox.status),
                        col(Outbox.next_attempt_at),
                        col(Outbox.id),
                    )
                    .limit(limit - len(claimed))
                    .with_for_update(skip_locked=True)
                ).all()
                # A digest unsubscribed from, paused or suspended since it was queued (or
                # while it was being sent, and came back to retry) is cancelled, not sent.
                cancelled = cancel_dead_among(session, [row[0] for row in rows], now)
                taken = [
                    Claimed(row_id, recipient, message, subscriber_id, OutboxKind(kind), until)
                    for row_id, recipient, message, subscriber_id, kind in rows
                    if row_id not in cancelled
                ]
                if taken:
                    session.execute(
                        sa.update(Outbox)
                        .where(col(Outbox.id).in_([c.id for c in taken]))
                        .values(status=OutboxState.SENDING, lease_owner=owner, lease_until=until)
                    )
                claimed += taken
                # Only rows cancelled left room: this state may have more due rows.
                if not cancelled:
                    break
    return claimed


# Prebuilt: they run for every message sent.
_RENEW_LEASE = (
    sa.update(Outbox)
    .where(
        col(Outbox.id) == sa.bindparam("outbox_id"),
        col(Outbox.lease_owner) == sa.bindparam("owner"),
        col(Outbox.status) == OutboxState.SENDING,
    )
    .values(lease_until=sa.bindparam("until"))
)
_MARK_SENT = (
    sa.update(Outbox)
    .where(col(Outbox.id) == sa.bindparam("outbox_id"))
    .values(
        status=OutboxState.SENT,
        sent_at=sa.bindparam("now"),
        last_error=None,
        lease_owner=None,
        lease_until=None,
        attempts=col(Outbox.attempts) + 1,
    )
)


def renew_lease(engine: Engine, outbox_id: int, owner: str, lease_s: float) -> datetime | None:
    """Extend our lease on a row; the new end of the lease, or None if it is no longer ours."""
    until = wall_clock() + timedelta(seconds=lease_s)
    with write_connection(engine) as connection:
        result = connection.execute(
            _RENEW_LEASE, {"outbox_id": outbox_id, "owner": owner, "until": until}
        )
        return until if result.rowcount else None


def needs_renewal(row: Claimed, lease_s: float) -> bool:
    """Whether ``row``'s lease must be renewed (``renew_lease``) before it is sent.

    A chunk claimed together may wait in the queue; a send lasts well under half a lease
    (a few SMTP timeouts), so a row sent within that half needs no write of its own, and one
    sent later is renewed first: no other worker can take it over while it is being sent.
    """
    return wall_clock() >= row.lease_until - timedelta(seconds=lease_s / 2)


def release(engine: Engine, ids: Sequence[int], owner: str, now: datetime) -> None:
    """Give back claimed rows that were not attempted (stop or halt), due again at once;
    a digest that nobody is to receive now is cancelled instead."""
    if not ids:
        return
    with transaction(engine) as session:
        ours = session.exec(
            select(Outbox.id).where(col(Outbox.id).in_(list(ids)), col(Outbox.lease_owner) == owner)
        ).all()
        cancel_dead_among(session, [row_id for row_id in ours if row_id is not None], now)
        session.execute(
            sa.update(Outbox)
            .where(col(Outbox.id).in_(list(ids)), col(Outbox.lease_owner) == owner)
            .values(
                status=sa.case(
                    (col(Outbox.attempts) > 0, OutboxState.RETRY), else_=OutboxState.PENDING
                ),
                lease_owner=None,
                lease_until=None,
            )
        )


def record_sent(engine: Engine, outbox_id: int, subscriber_id: int, now: datetime) -> None:
    """Mark one message sent, at once: a crash after this never sends it again."""
    with write_connection(engine) as connection:
        connection.execute(_MARK_SENT, {"outbox_id": outbox_id, "now": now})
        clear_bounces(connection, subscriber_id)


def record_failure(
    engine: Engine,
    outbox_id: int,
    error: str,
    settings: DeliverySettings,
    now: datetime,
    rng: random.Random,
    *,
    permanent: bool,
) -> None:
    with transaction(engine) as session:
        row = session.get(Outbox, outbox_id)
        assert row is not None
        row.attempts += 1
        row.last_error = error
        row.lease_owner, row.lease_until = None, None
        expired = now - row.created_at > timedelta(hours=settings.retry_for_hours)
        if permanent or expired:
            row.status = OutboxState.DEAD
            # A refused confirmation or manage link says nothing about digests reaching
            # the subscriber (it may be a mistyped address someone else entered).
            if permanent and row.kind != OutboxKind.TRANSACTIONAL:
                count_bounce(session, row.subscriber_id, settings.max_bounces, now)
        else:
            row.status = OutboxState.RETRY
            row.next_attempt_at = now + retry_delay(row.attempts, settings, rng)
            # Unsubscribed from, paused or suspended while it was being sent: not retried.
            cancel_dead_among(session, [outbox_id], now)
