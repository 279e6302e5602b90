"""Render workers: a chunk's digests rendered in other processes, on the other cores."""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

import jinja2

from alertd.config import Settings
from alertd.render import Digest, RenderedDigest, build_environment, render_message

log = logging.getLogger("alertd.render_pool")


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


def _render_in_worker(job: RenderJob) -> RenderedDigest:
    assert _worker is not None, "render worker not started"
    settings, env = _worker
    return render_message(job.digest, settings, env, message_id=job.message_id, now=job.now)


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
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.settings,),
        )

    def render(self, jobs: Sequence[RenderJob], env: jinja2.Environment) -> list[RenderedDigest]:
        """The jobs' digests, in order.

        A worker that died (killed, out of memory) breaks the whole pool: it is replaced,
        and this batch is rendered here, so composing never fails for it.

        Raises:
            TemplateError, HeaderInjection: as ``render_message``.
        """
        # A few slices per worker: large enough to amortise the pickling round trip.
        size = max(1, math.ceil(len(jobs) / (self.processes * 4)))
        try:
            return list(self._executor.map(_render_in_worker, jobs, chunksize=size))
        except BrokenProcessPool as exc:
            log.warning("render workers died (%s): restarting them", exc)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            return render_here(jobs, self.settings, env)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def render_here(
    jobs: Sequence[RenderJob], settings: Settings, env: jinja2.Environment
) -> list[RenderedDigest]:
    """The jobs' digests rendered in this process."""
    return [
        render_message(job.digest, settings, env, message_id=job.message_id, now=job.now)
        for job in jobs
    ]
