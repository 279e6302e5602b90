"""The outbox: claim due digests under a lease, send them through a pool, record each outcome."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import DeliverySettings
from alertd.db import transaction, write_connection
from alertd.errors import DeliveryDeferred, DeliveryHalted, DeliveryRejected, MailServerUnavailable
from alertd.mail.transports import Mailer, MailerFactory
from alertd.models import Outbox, Subscriber

log = logging.getLogger("alertd.mail.outbox")
FIRST_RETRY_S = 300.0
LONGEST_RETRY_S = 6 * 3600.0


@dataclass
class DeliveryReport:
    sent: int = 0
    deferred: int = 0
    rejected: int = 0
    halted: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DrainOptions:
    """How one run drains the outbox."""

    # The envelope sender (MAIL FROM) of a subscriber's digests: mail.from, or a VERP address.
    sender_for: Callable[[int], str]
    delivery: DeliverySettings
    connections: int = 1
    max_per_second: float | None = None
    worker_id: str = "alertd"
    observe_send_s: Callable[[float], None] | None = None


def retry_delay(attempts: int, rng: random.Random) -> timedelta:
    """Exponential backoff with jitter: about 5 min, 10, 20 … capped at 6 h."""
    base = min(FIRST_RETRY_S * 2 ** max(attempts - 1, 0), LONGEST_RETRY_S)
    return timedelta(seconds=base * rng.uniform(0.8, 1.2))


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claimed:
    """An outbox row this worker holds under a lease until ``lease_until``, with what to send."""

    id: int
    recipient: str
    message: bytes
    subscriber_id: int
    lease_until: datetime


def claim_due(
    engine: Engine, *, now: datetime, limit: int, lease_s: float, owner: str
) -> list[Claimed]:
    """Take up to ``limit`` due rows for this worker; other workers skip them.

    Due: pending or retrying rows whose time (``now``) has come, and rows whose sender's
    lease ran out (it died mid-send). Leases run on the wall clock, whatever ``now`` is,
    because they guard against other processes. On PostgreSQL the rows are picked
    FOR UPDATE SKIP LOCKED.
    """
    lease_now = wall_clock()
    until = lease_now + timedelta(seconds=lease_s)
    # One index range per state, each already in order: an OR of them, or ORDER BY id, made
    # the database sort every due row for each claim (quadratic over a big mail run).
    wanted = (
        sa.and_(col(Outbox.status) == "sending", col(Outbox.lease_until) < lease_now),
        sa.and_(col(Outbox.status) == "retry", col(Outbox.next_attempt_at) <= now),
        sa.and_(col(Outbox.status) == "pending", col(Outbox.next_attempt_at) <= now),
    )
    claimed: list[Claimed] = []
    with transaction(engine) as session:
        for condition in wanted:
            rows = session.exec(
                select(Outbox.id, Outbox.recipient, Outbox.message, Outbox.subscriber_id)
                .where(condition)
                .order_by(col(Outbox.status), col(Outbox.next_attempt_at), col(Outbox.id))
                .limit(limit - len(claimed))
                .with_for_update(skip_locked=True)
            ).all()
            claimed += [
                Claimed(row_id, recipient, message, subscriber_id, until)
                for row_id, recipient, message, subscriber_id in rows
                if row_id is not None
            ]
            if len(claimed) >= limit:
                break
        if claimed:
            session.execute(
                sa.update(Outbox)
                .where(col(Outbox.id).in_([c.id for c in claimed]))
                .values(status="sending", lease_owner=owner, lease_until=until)
            )
    return claimed


# Prebuilt: they run for every message sent.
_RENEW_LEASE = (
    sa.update(Outbox)
    .where(
        col(Outbox.id) == sa.bindparam("outbox_id"),
        col(Outbox.lease_owner) == sa.bindparam("owner"),
        col(Outbox.status) == "sending",
    )
    .values(lease_until=sa.bindparam("until"))
)
_MARK_SENT = (
    sa.update(Outbox)
    .where(col(Outbox.id) == sa.bindparam("outbox_id"))
    .values(
        status="sent",
        sent_at=sa.bindparam("now"),
        last_error=None,
        lease_owner=None,
        lease_until=None,
        attempts=col(Outbox.attempts) + 1,
    )
)
# Only a subscriber who bounced before is written to: the common case writes nothing.
_CLEAR_BOUNCES = (
    sa.update(Subscriber)
    .where(
        col(Subscriber.id) == sa.bindparam("subscriber_id"),
        col(Subscriber.consecutive_bounces) != 0,
    )
    .values(consecutive_bounces=0)
)


def renew_lease(engine: Engine, outbox_id: int, owner: str, lease_s: float) -> datetime | None:
    """Extend our lease on a row; the new end of the lease, or None if it is no longer ours."""
    until = wall_clock() + timedelta(seconds=lease_s)
    with write_connection(engine) as connection:
        result = connection.execute(
            _RENEW_LEASE, {"outbox_id": outbox_id, "owner": owner, "until": until}
        )
        return until if result.rowcount else None


def _holds_lease(engine: Engine, row: Claimed, owner: str, lease_s: float) -> bool:
    """Whether we may send ``row`` now, renewing its lease if half of it has passed.

    A chunk claimed together may wait in the queue; a send lasts well under half a lease
    (a few SMTP timeouts), so a row sent within that half needs no write of its own, and one
    sent later is renewed first: no other worker can take it over while it is being sent.
    """
    if wall_clock() < row.lease_until - timedelta(seconds=lease_s / 2):
        return True
    return renew_lease(engine, row.id, owner, lease_s) is not None


def release(engine: Engine, ids: Sequence[int], owner: str) -> None:
    """Give back claimed rows that were not attempted (stop or halt), due again at once."""
    if not ids:
        return
    with transaction(engine) as session:
        session.execute(
            sa.update(Outbox)
            .where(col(Outbox.id).in_(list(ids)), col(Outbox.lease_owner) == owner)
            .values(
                status=sa.case((col(Outbox.attempts) > 0, "retry"), else_="pending"),
                lease_owner=None,
                lease_until=None,
            )
        )


class _RateLimit:
    """Spaces sends evenly over all connections: at most ``per_second`` a second."""

    def __init__(self, per_second: float | None) -> None:
        self.interval_s = 1.0 / per_second if per_second else 0.0
        self.next_slot = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval_s:
            return
        async with self.lock:
            delay = self.next_slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.next_slot = max(time.monotonic(), self.next_slot) + self.interval_s


@dataclass
class _Drain:
    engine: Engine
    options: DrainOptions
    now: datetime
    rng: random.Random
    stopping: asyncio.Event
    report: DeliveryReport = field(default_factory=DeliveryReport)
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    mailers: list[Mailer] = field(default_factory=list)

    def should_stop(self) -> bool:
        return self.stopping.is_set() or self.halt.is_set()

    async def open_mailers(
        self, stack: AsyncExitStack, make_mailer: MailerFactory, wanted: int
    ) -> list[Mailer]:
        """``wanted`` mailers, kept open for the whole drain: no reconnect per chunk."""
        try:
            while len(self.mailers) < wanted:
                self.mailers.append(await stack.enter_async_context(make_mailer()))
        except (DeliveryHalted, MailServerUnavailable) as exc:
            self.stop_batch(exc)
        return self.mailers[:wanted]

    async def send_chunk(
        self, mailers: list[Mailer], queue: deque[Claimed], limit: _RateLimit
    ) -> None:
        workers = [asyncio.create_task(self.worker(mailer, queue, limit)) for mailer in mailers]
        try:
            await asyncio.gather(*workers)
        except Exception:
            # The mailers outlive this chunk: after a bug in one worker the others must not
            # go on sending through mailers the drain is about to close.
            self.halt.set()
            await asyncio.wait(workers)
            raise

    async def worker(self, mailer: Mailer, queue: deque[Claimed], limit: _RateLimit) -> None:
        while queue and not self.should_stop():
            row = queue.popleft()
            await limit.wait()
            await self.deliver(mailer, row)

    def stop_batch(self, exc: Exception) -> None:
        if not self.halt.is_set():
            log.error("delivery stopped for this run: %s", exc)
            self.report.halted = str(exc)
        self.halt.set()

    async def deliver(self, mailer: Mailer, row: Claimed) -> None:
        if not _holds_lease(
            self.engine, row, self.options.worker_id, self.options.delivery.lease_s
        ):
            return  # our lease ran out and another worker took the row over
        outbox_id, recipient, subscriber_id = row.id, row.recipient, row.subscriber_id
        started = time.monotonic()
        try:
            await mailer.send(self.options.sender_for(subscriber_id), recipient, row.message)
        except (DeliveryHalted, MailServerUnavailable) as exc:
            release(self.engine, [outbox_id], self.options.worker_id)
            self.stop_batch(exc)
            return
        except (DeliveryDeferred, DeliveryRejected) as exc:
            permanent = isinstance(exc, DeliveryRejected)
            record_failure(
                self.engine,
                outbox_id,
                str(exc),
                self.options.delivery,
                self.now,
                self.rng,
                permanent=permanent,
            )
            self.report.errors.append(str(exc))
            if permanent:
                self.report.rejected += 1
            else:
                self.report.deferred += 1
            log.warning(
                "%.2fs ✗ %s outbox=%d to=%s: %s",
                time.monotonic() - started,
                "rejected" if permanent else "deferred",
                outbox_id,
                recipient,
                exc,
            )
            return
        record_sent(self.engine, outbox_id, subscriber_id, self.now)
        if self.options.observe_send_s is not None:
            self.options.observe_send_s(time.monotonic() - started)
        self.report.sent += 1
        log.info("%.2fs ✓ sent outbox=%d to=%s", time.monotonic() - started, outbox_id, recipient)


async def drain_outbox(
    engine: Engine,
    make_mailer: MailerFactory,
    options: DrainOptions,
    *,
    now: datetime,
    stopping: asyncio.Event | None = None,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """Send the due digests through ``options.connections`` mailers at once.

    Each outcome is committed as soon as it is known. A stop request (SIGTERM) or an
    operator-level failure (authentication, policy, server down) stops taking new rows;
    rows claimed but not tried are released for the next run. The mailers are opened
    when the first rows are claimed and stay open until the drain ends.
    """
    drain = _Drain(engine, options, now, rng or random.Random(), stopping or asyncio.Event())
    limit = _RateLimit(options.max_per_second)
    budget = options.delivery.batch_size
    try:
        async with AsyncExitStack() as stack:
            while budget > 0 and not drain.should_stop():
                claimed = claim_due(
                    engine,
                    now=now,
                    limit=min(budget, options.connections * 16),
                    lease_s=options.delivery.lease_s,
                    owner=options.worker_id,
                )
                if not claimed:
                    break
                budget -= len(claimed)
                queue = deque(claimed)
                wanted = min(options.connections, len(queue))
                mailers = await drain.open_mailers(stack, make_mailer, wanted)
                await drain.send_chunk(mailers, queue, limit)
                release(engine, [row.id for row in queue], options.worker_id)
    except (DeliveryHalted, MailServerUnavailable) as exc:
        # Closing a mailer can fail as opening one can; every outcome is recorded by now.
        drain.stop_batch(exc)
    return drain.report


def record_sent(engine: Engine, outbox_id: int, subscriber_id: int, now: datetime) -> None:
    """Mark one message sent, at once: a crash after this never sends it again."""
    with write_connection(engine) as connection:
        connection.execute(_MARK_SENT, {"outbox_id": outbox_id, "now": now})
        connection.execute(_CLEAR_BOUNCES, {"subscriber_id": subscriber_id})


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
            row.status = "dead"
            if permanent:
                _count_bounce(session, row.subscriber_id, settings, now)
        else:
            row.status = "retry"
            row.next_attempt_at = now + retry_delay(row.attempts, rng)


def _count_bounce(
    session: Session, subscriber_id: int, settings: DeliverySettings, now: datetime
) -> None:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return
    subscriber.consecutive_bounces += 1
    if subscriber.consecutive_bounces >= settings.max_bounces and subscriber.suspended_at is None:
        subscriber.suspended_at = now
        log.warning("suspended %s after %d bounces", subscriber.email, settings.max_bounces)
