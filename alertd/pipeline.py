"""The pipeline: one run_once(now) polls, matches, queues due digests and drains the outbox."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import jinja2
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from alertd.config import Settings
from alertd.db import describe_error
from alertd.digests.compose import compose_due_digests
from alertd.digests.render_pool import RenderPool
from alertd.errors import AlertdError
from alertd.kinds import api_kinds
from alertd.mail.sender import DrainOptions, Sender
from alertd.mail.transports import MailerFactory
from alertd.matching import LiveMatcher, match_new_items
from alertd.metrics import Metrics
from alertd.sources.feeds import due_feed_sources
from alertd.sources.member_names import MemberNames
from alertd.sources.parliament import ParliamentApi, make_http_client
from alertd.sources.source import Source
from alertd.sources.state import PollLease
from alertd.sources.window import WindowSource

log = logging.getLogger("alertd.pipeline")
# A source is due this much before its interval has passed: cron or a worker starting a few
# seconds late must not find the last poll "too recent" and skip a whole interval.
POLL_JITTER = timedelta(minutes=1)


@dataclass
class RunReport:
    """What one run did; the summary line and tests read it."""

    # Each source polled: whether its poll succeeded (a source skipped is not here).
    polls: dict[str, bool] = field(default_factory=dict)
    fetched: int = 0
    # Every new item stored (answer versions, tabled questions, statements, feed items),
    # and the same by source (parliament, statements, feed:NAME).
    new_items: int = 0
    new_items_by_source: dict[str, int] = field(default_factory=dict)
    hits: int = 0
    digests_queued: int = 0
    sent: int = 0
    deferred: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    # Stages (poll, match, compose, drain) that raised; the stages after them still ran.
    failed_stages: list[str] = field(default_factory=list)

    @property
    def polled(self) -> bool:
        """Whether any source was polled (rather than skipped: not due, or held elsewhere)."""
        return bool(self.polls)

    def summary(self) -> str:
        return (
            f"fetched={self.fetched} new_items={self.new_items} hits={self.hits} "
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
    # The live alerts in one match engine: built by the first match, then kept current.
    matcher: LiveMatcher = field(default_factory=LiveMatcher)

    # Drains the outbox one drain at a time; the web app wakes it when it queues a mail.
    sender: Sender = field(init=False)

    def __post_init__(self) -> None:
        self.sender = Sender(self.engine, self.make_mailer, self.drain_options())

    def drain_options(self) -> DrainOptions:
        return DrainOptions.for_settings(
            self.settings, self.worker_id, self.metrics.smtp_seconds.observe
        )


def _sources(
    runtime: Runtime, client: httpx.AsyncClient, now: datetime, on_demand: bool
) -> list[Source]:
    """The sources to poll this run: each kind of Parliament's business that is switched on
    (written questions, then statements), then the feeds that are due.

    A Parliament kind is polled at most once its own interval (less the jitter) has passed,
    however many workers run the poll job; ``on_demand`` (alertd run --once) polls it
    whenever no other worker holds it.
    """
    settings = runtime.settings
    sources: list[Source] = []
    # One per run: at most members.lookups_per_poll lookups in all.
    member_names = MemberNames(runtime.engine, settings.members, client)
    for kind in api_kinds():
        polled = kind.poll_settings(settings)
        if polled is None:
            continue
        interval = timedelta(minutes=polled.interval_minutes)
        lease = PollLease(
            owner=runtime.worker_id,
            lease_s=settings.delivery.lease_s,
            min_gap=timedelta(0) if on_demand else max(interval - POLL_JITTER, timedelta(0)),
        )
        sources.append(
            WindowSource(
                runtime.engine,
                ParliamentApi(settings.parliament, client, kind.api, kind.api.base_url(settings)),
                kind,
                settings,
                zone=settings.digest.zone,
                lookback_days=polled.lookback_days,
                lease=lease,
                member_names=member_names,
            )
        )
    sources.extend(
        due_feed_sources(
            runtime.engine,
            client,
            now=now,
            default_interval_minutes=settings.parliament.poll_interval_minutes,
            tolerance=POLL_JITTER,
            # A feed's own interval decides when it is due; the lease only keeps workers apart.
            lease=PollLease(runtime.worker_id, settings.delivery.lease_s, min_gap=timedelta(0)),
        )
    )
    return sources


# Called after each source's poll: the daemon sends what it stored without waiting for the
# sources still being polled.
SourceDone = Callable[[], Awaitable[None]]


async def _poll(
    runtime: Runtime,
    report: RunReport,
    now: datetime,
    on_demand: bool,
    source_done: SourceDone | None = None,
) -> None:
    client = runtime.http or make_http_client(runtime.settings.parliament)
    try:
        sources = await asyncio.to_thread(_sources, runtime, client, now, on_demand)
        for source in sources:
            await _poll_source(source, report, now)
            if source_done is not None:
                await source_done()
    finally:
        if runtime.http is None:
            await client.aclose()


async def _poll_until_stopped(
    runtime: Runtime,
    report: RunReport,
    now: datetime,
    on_demand: bool,
    source_done: SourceDone | None = None,
) -> None:
    """Poll, but give up at once when a stop is requested: a poll sends nothing, stores what
    it fetched as it goes, and the next run polls again (a hanging source must not hold up
    a shutdown)."""
    poll = asyncio.ensure_future(_poll(runtime, report, now, on_demand, source_done))
    stop = asyncio.ensure_future(runtime.stopping.wait())
    try:
        await asyncio.wait({poll, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not poll.done():
            poll.cancel()
            await asyncio.wait({poll})
    if poll.cancelled():
        log.info("stopping: the poll in flight was abandoned")
        return
    poll.result()


async def _poll_source(source: Source, report: RunReport, now: datetime) -> None:
    try:
        result = await source.poll(now)
    except AlertdError as exc:
        # One source failing must not stop the others, nor matching and sending what is
        # already stored.
        log.error("%s: poll failed: %s", source.name, exc)
        report.errors.append(str(exc))
        report.polls[source.name] = False
        return
    report.new_items += result.new_items
    by_source = report.new_items_by_source
    by_source[source.name] = by_source.get(source.name, 0) + result.new_items
    report.fetched += result.fetched
    if result.polled:
        report.polls[source.name] = True
        log.info(
            "polled %s: %d listed, %d new items", source.name, result.fetched, result.new_items
        )


async def _stage(name: str, report: RunReport, work: Callable[[], Awaitable[None]]) -> None:
    """Run one stage; a failure is logged and reported, and the next stages still run."""
    try:
        await work()
    except Exception as exc:
        # The stages share no state but the database, where each commits its own work: a
        # failed stage leaves nothing half-done for the next one to trip over.
        message = describe_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
        log.error(
            "%s failed: %s",
            name,
            message or type(exc).__name__,
            # A bug deserves its traceback; an expected failure, one line.
            exc_info=not isinstance(exc, AlertdError | SQLAlchemyError),
        )
        report.errors.append(f"{name}: {message or type(exc).__name__}")
        report.failed_stages.append(name)


async def poll_once(
    runtime: Runtime,
    *,
    now: datetime,
    source_done: SourceDone | None = None,
    on_demand: bool = False,
) -> RunReport:
    """Only the poll of a cycle, ``source_done`` awaited after each source.

    The daemon runs it beside its cycles of matching and sending (run_once with poll=False):
    a slow source, up to parliament.fetch_deadline_s, never holds up a digest that is due.
    """
    started = time.monotonic()
    report = RunReport()
    await _stage(
        "poll",
        report,
        lambda: _poll_until_stopped(runtime, report, now, on_demand, source_done),
    )
    runtime.metrics.record_run(report, time.monotonic() - started)
    if report.fetched or report.errors:
        log.info("%.2fs poll finished: %s", time.monotonic() - started, report.summary())
    return report


async def run_once(
    runtime: Runtime, *, now: datetime, poll: bool = True, on_demand: bool = False
) -> RunReport:
    """One whole cycle at time ``now``: poll, match, compose, drain.

    ``on_demand`` (alertd run --once): Parliament is polled even if it was polled less
    than an interval ago (the lease still keeps two workers from polling it at once).

    Every stage commits its own work, so a crash anywhere is recovered by the next run
    without loss or duplicates; and a stage that fails is reported without stopping the
    stages after it (digests already queued still go out when composing fails).
    """
    started = time.monotonic()
    report = RunReport()
    engine, settings = runtime.engine, runtime.settings

    # The database stages are synchronous: they run off the event loop.
    async def match() -> None:
        report.hits = await asyncio.to_thread(
            match_new_items, engine, now=now, matcher=runtime.matcher
        )

    async def compose() -> None:
        report.digests_queued = await asyncio.to_thread(
            compose_due_digests,
            engine,
            settings,
            runtime.templates,
            now=now,
            pool=runtime.render_pool,
            # A stop is seen between chunks: a SIGTERM need not wait for a long compose.
            stopping=runtime.stopping.is_set,
        )

    async def drain() -> None:
        delivered = await runtime.sender.drain(now=now, stopping=runtime.stopping)
        report.sent, report.deferred, report.rejected = (
            delivered.sent,
            delivered.deferred,
            delivered.rejected,
        )
        report.errors.extend(delivered.errors)
        if delivered.halted:
            report.errors.append(delivered.halted)

    if poll:
        await _stage("poll", report, lambda: _poll_until_stopped(runtime, report, now, on_demand))
    for name, work in (("match", match), ("compose", compose), ("drain", drain)):
        if runtime.stopping.is_set():
            break
        await _stage(name, report, work)
    runtime.metrics.record_run(report, time.monotonic() - started)
    busy = report.fetched or report.hits or report.digests_queued or report.sent or report.errors
    log.log(
        logging.INFO if busy else logging.DEBUG,
        "%.2fs run finished: %s",
        time.monotonic() - started,
        report.summary(),
    )
    return report
