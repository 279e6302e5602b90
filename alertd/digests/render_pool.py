"""Render workers: a chunk's digests rendered in other processes, on the other cores."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

import jinja2

from alertd.config import Settings
from alertd.digests.render import RenderedDigest, build_environment, render_message
from alertd.digests.view import Digest

log = logging.getLogger("alertd.digests.render_pool")


@dataclass(frozen=True)
class RenderJob:
    """One digest to render, with what makes its bytes unique."""

    digest: Digest
    message_id: str
    now: datetime


# Each worker process's settings and templates, built once when it starts.
_worker: tuple[Settings, jinja2.Environment] | None = None


def _start_worker(settings: Settings) -> None:
    global _worker
    _worker = (settings, build_environment(settings))


def _render_in_worker(jobs: list[RenderJob]) -> list[RenderedDigest]:
    assert _worker is not None, "render worker not started"
    settings, env = _worker
    return render_here(jobs, settings, env)


class RenderPool:
    """``digest.render_processes`` worker processes rendering digests, kept for the daemon's life.

    Rendering is pure CPU (templates, CSS inlining, encoding), so it scales with cores while
    the database work of composing stays in the calling process. The workers are spawned,
    not forked: the daemon has threads, which a fork would copy mid-lock.
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.processes = processes
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.settings,),
        )
        # Start every worker now (an executor spawns them lazily): the first mail run then
        # pays no start-up, and a worker that cannot start shows at once.
        for started in [executor.submit(_render_in_worker, []) for _ in range(self.processes)]:
            started.result()
        return executor

    def submit(self, jobs: list[RenderJob]) -> Future[list[RenderedDigest]]:
        return self._executor.submit(_render_in_worker, jobs)

    def restart(self, exc: BaseException) -> None:
        """Replace workers that died (killed, out of memory): the pool is broken for good."""
        log.warning("render workers died (%s): restarting them", exc)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class RenderBatch:
    """Digests handed to the render workers as they are built, a slice at a time, so the
    workers render while the caller builds the next ones; results come back in order.

    Without a pool, or if the workers die, the digests are rendered here: composing never
    fails because of a render worker.
    """

    SLICE = 16  # digests per hand-over: amortises the pickling round trip

    def __init__(self, pool: RenderPool | None, settings: Settings, env: jinja2.Environment):
        self.pool, self.settings, self.env = pool, settings, env
        self._slices: list[tuple[list[RenderJob], Future[list[RenderedDigest]] | None]] = []
        self._pending: list[RenderJob] = []
        self._broken = False

    def add(self, job: RenderJob) -> None:
        self._pending.append(job)
        if len(self._pending) >= self.SLICE:
            self._hand_over()

    def _hand_over(self) -> None:
        jobs, self._pending = self._pending, []
        future = None
        if self.pool is not None and jobs and not self._broken:
            try:
                future = self.pool.submit(jobs)
            except BrokenProcessPool as exc:
                self._give_up(exc)
        self._slices.append((jobs, future))

    def _give_up(self, exc: BrokenProcessPool) -> None:
        # This batch is finished here; the next one gets fresh workers.
        assert self.pool is not None
        self.pool.restart(exc)
        self._broken = True

    def results(self) -> list[RenderedDigest]:
        """Every digest added, rendered, in the order added.

        Raises:
            TemplateError, HeaderInjection: as ``render_message``.
        """
        self._hand_over()
        rendered: list[RenderedDigest] = []
        for jobs, future in self._slices:
            if future is not None and not self._broken:
                try:
                    rendered += future.result()
                    continue
                except BrokenProcessPool as exc:
                    self._give_up(exc)
            rendered += render_here(jobs, self.settings, self.env)
        self._slices = []
        return rendered


def render_here(
    jobs: Sequence[RenderJob], settings: Settings, env: jinja2.Environment
) -> list[RenderedDigest]:
    """The jobs' digests rendered in this process."""
    return [
        render_message(job.digest, settings, env, message_id=job.message_id, now=job.now)
        for job in jobs
    ]
