"""`alertd run`: the runtime's lifespan, a cycle runner the scheduler wakes, signals, web app."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from alertd.config import Settings
from alertd.db import open_database
from alertd.digests.render import build_environment
from alertd.digests.render_pool import RenderPool
from alertd.mail.transports import mailer_factory
from alertd.pipeline import RunReport, Runtime, poll_once, run_once
from alertd.sources.feed_registry import sync_config_feeds
from alertd.sources.feeds import shortest_interval_minutes
from alertd.sources.parliament import make_http_client

log = logging.getLogger("alertd.daemon")
Clock = Callable[[], datetime]
# What an operator sends to stop alertd: the service manager's SIGTERM, or Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Inside, SIGTERM and SIGINT call ``stop`` (and no longer end the process, or raise
    KeyboardInterrupt); after, they do again."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


@asynccontextmanager
async def lifespan(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the database (migrating it), templates, mailer and HTTP client; close in reverse.

    Raises:
        ConfigError, DatabaseUnavailable, TemplateError: start-up cannot go on.
    """
    engine = open_database(settings.database)
    sync_config_feeds(engine, settings.feeds)
    try:
        templates = build_environment(settings)
        make_mailer = mailer_factory(settings.mail.delivery, settings.mail.maildir, settings.smtp)
        processes = settings.digest.render_processes
        pool = RenderPool(settings, processes) if processes else None
        try:
            async with make_http_client(settings.parliament) as http:
                yield Runtime(settings, engine, make_mailer, templates, http, render_pool=pool)
        finally:
            if pool is not None:
                pool.close()
    finally:
        engine.dispose()


class Daemon:
    """Runs cycles one at a time in a runner task it owns; on SIGTERM/SIGINT it stops taking
    new work and lets the cycle in flight finish.

    Polls run beside the cycles, in a task of their own (one at a time): a source that
    answers slowly never holds up matching and sending. Each source polled asks for a
    cycle, which matches and sends what it stored.

    The scheduler's jobs only ask the runner for a cycle and return at once: APScheduler
    cancels a job still running when it shuts down (whatever ``wait=`` says), which would
    cut a send short and leave its outbox row to be sent again.
    """

    def __init__(self, runtime: Runtime, clock: Clock = utc_now) -> None:
        self.runtime = runtime
        self.clock = clock
        self.cycles = 0
        self._stop = runtime.stopping
        self._wake = asyncio.Event()
        self._poll_wanted = False
        self._polling: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Daemon cycles={self.cycles} stopping={self._stop.is_set()}>"

    async def request_cycle(self, poll: bool = True) -> None:
        """Ask for a cycle (with a poll, or only composing and sending); returns at once.

        Requests made while a cycle runs are merged into one cycle after it (one with a
        poll if any of them wanted one). The poll starts at once unless one is running
        already; the cycle does not wait for it.
        """
        self._poll_wanted = self._poll_wanted or poll
        self._wake.set()

    async def run_cycle(self, poll: bool = True) -> RunReport | None:
        """One cycle now; None if the daemon is stopping or the cycle failed."""
        if self._stop.is_set():
            return None
        try:
            report = await run_once(self.runtime, now=self.clock(), poll=poll)
        except Exception:
            # A bug in one cycle must not end the daemon; the next cycle retries.
            log.exception("run failed")
            return None
        self.cycles += 1
        return report

    async def _run_cycles(self) -> None:
        """The runner: one cycle per wake-up, until a stop is requested."""
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                if self._stop.is_set():
                    return
                poll, self._poll_wanted = self._poll_wanted, False
                self._wake.clear()
                if poll and self._polling is None:
                    self._polling = asyncio.create_task(self._poll(), name="alertd poll")
                await self.run_cycle(poll=False)
        finally:
            stopping.cancel()
            if self._polling is not None:
                # It gives up at once on a stop (see pipeline._poll_until_stopped).
                await asyncio.wait({self._polling})

    async def _poll(self) -> None:
        """One poll; after each source, a cycle to match and send what it stored."""

        async def source_done() -> None:
            await self.request_cycle(poll=False)

        try:
            await poll_once(self.runtime, now=self.clock(), source_done=source_done)
        except Exception:
            log.exception("poll failed")
        finally:
            self._polling = None

    def stop(self) -> None:
        self._stop.set()

    def poll_every_minutes(self) -> int:
        """How often the poll job runs: as often as the most frequent source wants (a feed
        polled every 5 minutes is; Parliament's lease keeps it to once an interval)."""
        return shortest_interval_minutes(
            self.runtime.engine, self.runtime.settings.parliament.poll_interval_minutes
        )

    def build_scheduler(self, poll_every_minutes: int) -> AsyncIOScheduler:
        settings = self.runtime.settings
        zone = settings.digest.zone
        scheduler = AsyncIOScheduler(timezone=zone)
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 3600}
        scheduler.add_job(
            self.request_cycle,
            IntervalTrigger(minutes=poll_every_minutes, timezone=zone),
            next_run_time=self.clock(),
            id="poll",
            **common,
        )
        # Retries and digests queued by another worker go out between polls too.
        scheduler.add_job(
            self.request_cycle,
            IntervalTrigger(seconds=settings.delivery.send_interval_s, timezone=zone),
            kwargs={"poll": False},
            id="send",
            **common,
        )
        # Daily and weekly digests are due from daily_at; run_once knows which are due.
        at = settings.digest.daily_at
        scheduler.add_job(
            self.request_cycle,
            CronTrigger(hour=at.hour, minute=at.minute, timezone=zone),
            kwargs={"poll": False},
            id="digests",
            **common,
        )
        return scheduler

    async def serve(self) -> None:
        """Run until a signal (or stop()), then let the cycle in flight finish (the caller
        says "stopped", once the web app's sender has finished too).

        The cycle stops taking new digests at once (a poll in flight is abandoned); after
        delivery.shutdown_timeout_s it is cancelled, which is safe: every stage commits as
        it goes.
        """
        settings = self.runtime.settings
        # Feeds added while running with a shorter interval count from the next start.
        poll_every = await asyncio.to_thread(self.poll_every_minutes)
        runner = asyncio.create_task(self._run_cycles(), name="alertd cycles")
        try:
            with stop_on_signals(self.stop):
                await self._schedule_until_stopped(poll_every)
        finally:
            self.stop()  # also when serve() itself is cancelled: the runner must end
            # Signals are the default ones again: a second Ctrl-C does not wait for this.
            await self._finish(runner, settings.delivery.shutdown_timeout_s)

    async def _schedule_until_stopped(self, poll_every_minutes: int) -> None:
        settings = self.runtime.settings
        scheduler = self.build_scheduler(poll_every_minutes)
        scheduler.start()
        log.info(
            "alertd running: polling every %d min, digests at %s %s",
            settings.parliament.poll_interval_minutes,
            settings.digest.daily_at,
            settings.digest.timezone,
        )
        try:
            await self._stop.wait()
        finally:
            # Its jobs only wake the runner: nothing of ours is running in it to cancel.
            scheduler.shutdown(wait=False)

    async def _finish(self, runner: asyncio.Task[None], timeout_s: float) -> None:
        done, _ = await asyncio.wait({runner}, timeout=timeout_s)
        if not done:
            log.error("the cycle in flight did not finish within %.0fs: cancelled", timeout_s)
            runner.cancel()
            await asyncio.wait({runner})
        elif runner.exception() is not None:
            log.error("the cycle runner failed", exc_info=runner.exception())


async def run_daemon(settings: Settings) -> None:
    """`alertd run`: the daemon, and the web app beside it (unless web.enabled is false),
    until SIGTERM or SIGINT.

    Raises:
        ConfigError: the web app's port cannot be bound (found before anything starts).
        ConfigError, DatabaseUnavailable, TemplateError: start-up cannot go on.
    """
    sock = None
    if settings.web.enabled:
        # Imported only here: `run --once` and a daemon without its web app never need it.
        from alertd.web.server import listen

        # Bound before anything else starts: a busy port is one line and exit 2, with no
        # poll begun and no lease taken.
        sock = listen(settings.web.host, settings.web.port)
    try:
        async with lifespan(settings) as runtime:
            daemon = Daemon(runtime)
            if sock is None:
                log.info("web app off (web.enabled = false)")
                await daemon.serve()
            else:
                await _serve_with_web(daemon, sock)
            # Last: after the web app's sender has finished the send in flight too.
            log.info("alertd stopped after %d cycles", daemon.cycles)
    finally:
        if sock is not None:
            sock.close()


async def _serve_with_web(daemon: Daemon, sock: socket.socket) -> None:
    from alertd.web import serve_web

    runtime = daemon.runtime
    settings = runtime.settings
    host, port = sock.getsockname()[:2]
    log.info("web app listening on %s:%d (its links use %s)", host, port, settings.web.base_url)
    # The web app (sign-up, unsubscribe links; the daemon's metrics on web.metrics_port) runs
    # beside the scheduler and stops with it: both watch runtime.stopping, which SIGTERM sets.
    # The web app's emails wake the runtime's sender, which runs in the app's lifespan.
    await asyncio.gather(
        daemon.serve(),
        serve_web(
            settings,
            runtime.engine,
            runtime.stopping,
            sock=sock,
            metrics=runtime.metrics,
            sender=runtime.sender,
        ),
    )


async def run_one_pass(settings: Settings) -> RunReport:
    """`alertd run --once`: one poll, match and send, then return what it did.

    As in the daemon, SIGTERM or SIGINT stops claiming, lets the send in flight finish and
    abandons a poll (cron's `timeout` sends SIGTERM); the next run goes on from there.

    Raises:
        ConfigError, DatabaseUnavailable, TemplateError: start-up cannot go on.
    """
    async with lifespan(settings) as runtime:
        with stop_on_signals(runtime.stopping.set):
            report = await run_once(runtime, now=utc_now(), on_demand=True)
        if runtime.stopping.is_set():
            log.info("stopped early: the next run goes on")
        return report
