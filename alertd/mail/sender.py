"""The sender: drain the outbox through a pool of mailers at a limited rate, one drain at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Self, TypeVar

from sqlalchemy.engine import Engine

from alertd.config import DeliverySettings, Settings
from alertd.errors import PermanentError, StopBatch, TransientError
from alertd.mail import outbox
from alertd.mail.identity import envelope_sender
from alertd.mail.outbox import Claimed
from alertd.mail.transports import Mailer, MailerFactory
from alertd.models import OutboxKind

log = logging.getLogger("alertd.mail.sender")
T = TypeVar("T")


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

    # The envelope sender (MAIL FROM) of a subscriber's mail of a kind: mail.from, or a VERP
    # address that says whose mail of which kind it was.
    sender_for: Callable[[int, OutboxKind], str]
    delivery: DeliverySettings
    connections: int = 1
    max_per_second: float | None = None
    worker_id: str = "alertd"
    observe_send_s: Callable[[float], None] | None = None

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        worker_id: str,
        observe_send_s: Callable[[float], None] | None = None,
    ) -> Self:
        """The configured drain: SMTP's pool size and rate limit, VERP envelope senders."""
        smtp = settings.smtp
        use_pool = settings.mail.delivery == "smtp"
        return cls(
            sender_for=partial(envelope_sender, settings),
            delivery=settings.delivery,
            connections=smtp.connections if use_pool else 1,
            max_per_second=smtp.max_per_second if use_pool else None,
            worker_id=worker_id,
            observe_send_s=observe_send_s,
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
    # The drain's one database thread: off the event loop (it may be serving the web app),
    # and one write at a time, as on the loop before: concurrent writers would only queue
    # on SQLite's lock, each retrying with sleeps.
    database: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="alertd-outbox")
    )

    async def in_database(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.database, call)

    def should_stop(self) -> bool:
        return self.stopping.is_set() or self.halt.is_set()

    async def open_mailers(
        self, stack: AsyncExitStack, make_mailer: MailerFactory, wanted: int
    ) -> list[Mailer]:
        """``wanted`` mailers, kept open for the whole drain: no reconnect per chunk."""
        try:
            while len(self.mailers) < wanted:
                self.mailers.append(await stack.enter_async_context(make_mailer()))
        except StopBatch as exc:
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
        engine, owner, lease_s = self.engine, self.options.worker_id, self.options.delivery.lease_s
        if outbox.needs_renewal(row, lease_s):
            renew = partial(outbox.renew_lease, engine, row.id, owner, lease_s)
            if await self.in_database(renew) is None:
                return  # our lease ran out and another worker took the row over
        outbox_id, recipient, subscriber_id = row.id, row.recipient, row.subscriber_id
        started = time.monotonic()
        try:
            sender = self.options.sender_for(subscriber_id, row.kind)
            await mailer.send(sender, recipient, row.message)
        except StopBatch as exc:
            await self.in_database(partial(outbox.release, engine, [outbox_id], owner, self.now))
            self.stop_batch(exc)
            return
        except (PermanentError, TransientError) as exc:
            # Permanent: the message is dead and counts as a bounce; transient: retried.
            permanent = isinstance(exc, PermanentError)
            failed = partial(
                outbox.record_failure,
                engine,
                outbox_id,
                str(exc),
                self.options.delivery,
                self.now,
                self.rng,
                permanent=permanent,
            )
            await self.in_database(failed)
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
        await self.in_database(
            partial(outbox.record_sent, engine, outbox_id, subscriber_id, self.now)
        )
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
                claim = partial(
                    outbox.claim_due,
                    engine,
                    now=now,
                    limit=min(budget, options.connections * 16),
                    lease_s=options.delivery.lease_s,
                    owner=options.worker_id,
                )
                claimed = await drain.in_database(claim)
                if not claimed:
                    break
                budget -= len(claimed)
                queue = deque(claimed)
                wanted = min(options.connections, len(queue))
                mailers = await drain.open_mailers(stack, make_mailer, wanted)
                await drain.send_chunk(mailers, queue, limit)
                unsent = [row.id for row in queue]
                give_back = partial(outbox.release, engine, unsent, options.worker_id, now)
                await drain.in_database(give_back)
    except StopBatch as exc:
        # Closing a mailer can fail as opening one can; every outcome is recorded by now.
        drain.stop_batch(exc)
    finally:
        # Not waiting: a call cut short by a cancellation still completes in its thread.
        drain.database.shutdown(wait=False)
    return drain.report


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Sender:
    """One process's sender: drains run one at a time, when asked, woken, or every interval.

    ``drain`` is what a scheduled run calls. In the background (``running``) it drains at
    start, whenever ``wake`` is called (the web app queued a mail) and every ``interval_s``
    (retries), so a web request never waits on the mail server.
    """

    def __init__(
        self,
        engine: Engine,
        make_mailer: MailerFactory,
        options: DrainOptions,
        *,
        interval_s: float | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.engine = engine
        self.make_mailer = make_mailer
        self.options = options
        self.interval_s = interval_s
        self.clock = clock
        # One drain at a time: a second one would open more connections than smtp.connections.
        self._lock = asyncio.Lock()
        self._woken = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(
        self, *, now: datetime, stopping: asyncio.Event | None = None
    ) -> DeliveryReport:
        """Send what is due at ``now`` (``drain_outbox``), after any drain in flight."""
        async with self._lock:
            return await drain_outbox(
                self.engine, self.make_mailer, self.options, now=now, stopping=stopping
            )

    def wake(self) -> None:
        """Drain soon: something was queued (call it on the event loop)."""
        self._idle.clear()
        self._woken.set()

    async def settled(self) -> None:
        """Until every wake-up so far was followed by a whole drain (tests wait on it)."""
        await self._idle.wait()

    @contextlib.asynccontextmanager
    async def running(self, shutdown_timeout_s: float) -> AsyncIterator[None]:
        """Drain in the background while inside; on leaving, the send in flight finishes
        (up to ``shutdown_timeout_s``) and no new message is taken."""
        stop = asyncio.Event()
        self.wake()  # a first drain at start: what was queued while nobody was sending
        task = asyncio.create_task(self._loop(stop))
        try:
            yield
        finally:
            stop.set()
            done, _ = await asyncio.wait({task}, timeout=shutdown_timeout_s)
            if not done:
                log.error("the send in flight did not finish within %.0fs", shutdown_timeout_s)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._woken.clear()
            try:
                await self.drain(now=self.clock(), stopping=stop)
            except Exception:
                # A bug in one drain must not end the sender: the next wake-up tries again.
                log.exception("sending failed")
            if not self._woken.is_set():
                self._idle.set()
            await _first_of(self._woken, stop, timeout_s=self.interval_s)


async def _first_of(*events: asyncio.Event, timeout_s: float | None) -> None:
    waiting = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()
