"""In-memory rate limits and work slots; each process counts only its own requests."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alertd.config import WebSettings
from alertd.errors import Busy

_PRUNE_ABOVE_KEYS = 10_000
# Retry-After of a request refused because every slot was taken: about one preview's time.
BUSY_RETRY_AFTER_S = 5


class SlidingWindow:
    """At most ``limit`` events per key in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events

    def allow(self, key: str, now: float) -> bool:
        """Record an event for ``key`` if within the limit; else False, recording nothing."""
        with self._lock:
            if len(self._events) > _PRUNE_ABOVE_KEYS:
                self._prune(now)
            events = self._recent(key, now)
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def retry_after(self, key: str, now: float) -> int:
        """Whole seconds until ``key`` may have another event (0 if it may now)."""
        with self._lock:
            events = self._recent(key, now)
            if len(events) < self.limit:
                return 0
            return max(1, int(events[0] + self.window_s - now + 0.999))

    def _prune(self, now: float) -> None:
        for key in list(self._events):
            if not self._recent(key, now):
                del self._events[key]


class WorkSlots:
    """At most ``size`` pieces of costly work at once; one that finds no free slot is
    refused at once (Busy), never queued: a queue would only grow while the CPU is full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a slot for the block.

        Raises:
            Busy: every slot is taken.
        """
        if not self._free.acquire(blocking=False):
            raise Busy(BUSY_RETRY_AFTER_S)
        try:
            yield
        finally:
            self._free.release()


@dataclass(frozen=True)
class Limits:
    """The web app's limits: sign-ups and emails per IP and per address, lookups and
    previews per IP, and the slots previews (and sign-up breadth checks) run in."""

    signups_per_ip: SlidingWindow
    mails_per_ip: SlidingWindow
    mails_per_address: SlidingWindow
    lookups_per_ip: SlidingWindow
    previews_per_ip: SlidingWindow
    preview_slots: WorkSlots

    @classmethod
    def from_settings(cls, web: WebSettings) -> Limits:
        hour, minute = 3600.0, 60.0
        return cls(
            signups_per_ip=SlidingWindow(web.signups_per_ip_per_hour, hour),
            mails_per_ip=SlidingWindow(web.mails_per_ip_per_hour, hour),
            mails_per_address=SlidingWindow(web.mails_per_address_per_hour, hour),
            lookups_per_ip=SlidingWindow(web.lookups_per_ip_per_minute, minute),
            previews_per_ip=SlidingWindow(web.previews_per_ip_per_minute, minute),
            preview_slots=WorkSlots(web.preview_concurrency),
        )
