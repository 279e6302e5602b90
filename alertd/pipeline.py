"""The pipeline: one run_once(now) polls, matches, queues due digests and drains the outbox."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import jinja2
from sqlalchemy.engine import Engine

from alertd.config import Settings
from alertd.digests.compose import compose_due_digests
from alertd.digests.render_pool import RenderPool
from alertd.errors import AlertdError
from alertd.mail.sender import DrainOptions, Sender
from alertd.mail.transports import MailerFactory
from alertd.matching.hits import match_new_answers
from alertd.metrics import Metrics
from alertd.sources.feeds import poll_due_feeds
from alertd.sources.ingest import PollLease, poll_parliament
from alertd.sources.parliament import ParliamentApi, make_http_client

log = logging.getLogger("alertd.pipeline")


@dataclass
class RunReport:
    """What one run did; the summary line and tests read it."""

    polled: bool = False
    poll_failed: bool = False
    fetched: int = 0
    new_answers: int = 0
    hits: int = 0
    digests_queued: int = 0
    sent: int = 0
    deferred: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"fetched={self.fetched} new_answers={self.new_answers} hits={self.hits} "
            f"digests_queued={self.digests_queued} sent={self.sent} deferred={self.deferred} "
            f"rejected={self.rejected} errors={len(self.errors)}"
        )


def make_worker_id() -> str:
    """Names this process in leases: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    """What run_once needs that lives longer than one run: built once by the caller."""

    settings: Settings
    engine: Engine
    make_mailer: MailerFactory
    templates: jinja2.Environment
    http: httpx.AsyncClient | None = None
    worker_id: str = field(default_factory=make_worker_id)
    # Set on SIGTERM: sending stops taking new digests, the one in flight finishes.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics = field(default_factory=Metrics)
    # Worker processes rendering digests (digest.render_processes); None renders here.
    render_pool: RenderPool | None = None

    # Drains the outbox one drain at a time; the web app wakes it when it queues a mail.
    sender: Sender = field(init=False)

    def __post_init__(self) -> None:
        self.sender = Sender(self.engine, self.make_mailer, self.drain_options())

    def drain_options(self) -> DrainOptions:
        return DrainOptions.for_settings(
            self.settings, self.worker_id, self.metrics.smtp_seconds.observe
        )


async def _poll(runtime: Runtime, report: RunReport, now: datetime) -> None:
    settings = runtime.settings
    client = runtime.http or make_http_client(settings.parliament)
    lease = PollLease(
        owner=runtime.worker_id,
        lease_s=settings.delivery.lease_s,
        # Several workers each run the poll job; one poll per interval is enough.
        min_gap=timedelta(minutes=settings.parliament.poll_interval_minutes / 2),
    )
    try:
        if settings.parliament.enabled:
            await _poll_parliament(runtime, client, lease, report, now)
        feeds = await poll_due_feeds(
            runtime.engine,
            client,
            now=now,
            default_interval_minutes=settings.parliament.poll_interval_minutes,
            lease=PollLease(lease.owner, lease.lease_s, min_gap=timedelta(0)),
        )
    finally:
        if runtime.http is None:
            await client.aclose()
    report.new_answers += feeds.new_items
    report.errors.extend(feeds.errors)


async def _poll_parliament(
    runtime: Runtime, client: httpx.AsyncClient, lease: PollLease, report: RunReport, now: datetime
) -> None:
    settings = runtime.settings
    try:
        result = await poll_parliament(
            runtime.engine,
            ParliamentApi(settings.parliament, client),
            now=now,
            zone=settings.digest.zone,
            lookback_days=settings.parliament.lookback_days,
            lease=lease,
        )
    except AlertdError as exc:
        # One source failing must not stop matching and sending what is already stored.
        log.error("poll failed: %s", exc)
        report.errors.append(str(exc))
        report.polled = report.poll_failed = True
        return
    report.polled = result.polled
    report.fetched += result.fetched
    report.new_answers += result.new_versions
    log.info(
        "polled %s: %d answers listed, %d new versions",
        result.source,
        result.fetched,
        result.new_versions,
    )


async def run_once(runtime: Runtime, *, now: datetime, poll: bool = True) -> RunReport:
    """One whole cycle at time ``now``: every stage commits its own work, so a crash
    anywhere is recovered by the next run without loss or duplicates."""
    started = time.monotonic()
    report = RunReport()
    if poll:
        await _poll(runtime, report, now)
    if runtime.stopping.is_set():
        return report
    # The database stages are synchronous: run them off the event loop.
    report.hits = await asyncio.to_thread(match_new_answers, runtime.engine, now=now)
    report.digests_queued = await asyncio.to_thread(
        compose_due_digests,
        runtime.engine,
        runtime.settings,
        runtime.templates,
        now=now,
        pool=runtime.render_pool,
    )
    delivered = await runtime.sender.drain(now=now, stopping=runtime.stopping)
    report.sent, report.deferred, report.rejected = (
        delivered.sent,
        delivered.deferred,
        delivered.rejected,
    )
    report.errors.extend(delivered.errors)
    if delivered.halted:
        report.errors.append(delivered.halted)
    runtime.metrics.record_run(report, time.monotonic() - started)
    busy = report.fetched or report.hits or report.digests_queued or report.sent or report.errors
    log.log(
        logging.INFO if busy else logging.DEBUG,
        "%.2fs run finished: %s",
        time.monotonic() - started,
        report.summary(),
    )
    return report
