"""In-memory rate limits and work slots; each process counts only its own requests."""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alertd.config import WebSettings
from alertd.errors import Busy

# Retry-After of a request refused because every slot was taken: about one preview's time.
BUSY_RETRY_AFTER_S = 5
# IPv6 clients are counted by network: one host is usually given a whole /64 to pick from.
IPV6_CLIENT_PREFIX = 64


def client_key(address: str) -> str:
    """What a client's requests are counted under: its IPv4 address, or its IPv6 /64
    (an IPv4-mapped IPv6 address counts as the IPv4 one); anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


class SlidingWindow:
    """At most ``limit`` events per key in any ``window_s`` seconds.

    Keys are kept in the order of their newest event, so the idle ones (no event left in
    the window) are all at the front: each call drops those, and a key is dropped at most
    once per time it is added, so a call costs O(1) amortised however many keys are held.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events

    def allow(self, key: str, now: float) -> bool:
        """Record an event for ``key`` if within the limit; else False, recording nothing."""
        with self._lock:
            self._drop_idle(now)
            events = self._recent(key, now)
            if len(events) >= self.limit:
                return False
            events.append(now)
            self._events[key] = events
            self._events.move_to_end(key)
            return True

    def retry_after(self, key: str, now: float) -> int:
        """Whole seconds until ``key`` may have another event (0 if it may now)."""
        with self._lock:
            events = self._recent(key, now)
            if len(events) < self.limit:
                return 0
            return max(1, int(events[0] + self.window_s - now + 0.999))

    def __len__(self) -> int:
        """How many keys are held (for tests and the bench)."""
        return len(self._events)

    def _drop_idle(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._events:
            key, events = next(iter(self._events.items()))
            if events and events[-1] > cutoff:
                return
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
