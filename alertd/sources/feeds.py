"""Feeds as sources: fetch RSS/Atom politely (conditional GET, redirects, 410), store new items."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.engine import Engine

from alertd.db import transaction
from alertd.errors import SourceGone
from alertd.items import add_items
from alertd.kinds.feed_item import feed_source, parse_feed
from alertd.models import Feed, FeedState
from alertd.sources import http
from alertd.sources.feed_registry import list_feeds
from alertd.sources.source import PollResult
from alertd.sources.state import PollLease, holding

log = logging.getLogger("alertd.sources.feeds")
PERMANENT = (301, 308)


@dataclass(frozen=True)
class Fetched:
    """What a conditional GET gave: a body, or nothing new (304); and where the feed lives now."""

    body: bytes | None
    etag: str | None
    last_modified: str | None
    # The address a chain of permanent redirects (301/308) ends at, if any.
    moved_to: str | None


async def fetch_feed(client: httpx.AsyncClient, feed: Feed) -> Fetched:
    """GET the feed with its stored validators, following up to five redirects (none from a
    public address to a non-public one: see http.get).

    Raises:
        SourceUnavailable: timeout, connection error, 429 or 5xx.
        SourceGone: 410.
        SourceInvalid: any other failure status, too many or refused redirects, or a body
            over the size cap.
    """
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9"}
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    response = await http.get(client, feed.url, headers=headers)
    http.check_status(response, ok=(200, 304))
    etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
    body = None if response.status_code == 304 else response.content
    return Fetched(body, etag, modified, _moved_to(response))


def _moved_to(response: httpx.Response) -> str | None:
    """Where the leading run of permanent redirects points: only such a chain moves the feed
    for good (a temporary hop after it does not undo it; one before it makes it temporary)."""
    hops = response.history
    targets = [str(later.url) for later in [*hops, response][1:]]
    moved_to = None
    for hop, target in zip(hops, targets, strict=True):
        if hop.status_code not in PERMANENT:
            break
        moved_to = target
    return moved_to


@dataclass
class FeedSource:
    """One RSS/Atom feed as a source: a conditional GET, its new items stored."""

    engine: Engine
    client: httpx.AsyncClient
    feed: Feed
    lease: PollLease
    # Whether the feed had a good fetch before (its items then are alerted).
    seeded: bool

    @property
    def name(self) -> str:
        return feed_source(self.feed.name)

    async def poll(self, now: datetime) -> PollResult:
        """One conditional fetch of the feed; its validators, its poll state, and any new
        address or 410 (it is disabled) are recorded.

        Raises:
            SourceUnavailable, SourceInvalid (SourceGone on 410): the poll failed.
        """
        engine, feed, name = self.engine, self.feed, self.name
        async with holding(engine, name, self.lease, now=now) as held:
            if held is None:
                return PollResult(name, fetched=0, new_items=0, polled=False)
            try:
                fetched = await fetch_feed(self.client, feed)
            except SourceGone as exc:
                await asyncio.to_thread(_disable, engine, feed, str(exc))
                raise
            items = (
                []
                if fetched.body is None
                else await asyncio.to_thread(
                    parse_feed, fetched.body, feed.url, http.shown_url(feed.url), now=now
                )
            )
            # What a feed holds when it is first fetched is never alerted.
            held.new_count = (
                await asyncio.to_thread(
                    add_items,
                    engine,
                    name,
                    items,
                    now=now,
                    today=now.date(),
                    never_alert=not self.seeded,
                )
                if items
                else 0
            )
            await asyncio.to_thread(_record_fetch, engine, feed, fetched)
        return PollResult(name, fetched=len(items), new_items=held.new_count)


def _disable(engine: Engine, feed: Feed, reason: str) -> None:
    with transaction(engine) as session:
        row = session.get(Feed, feed.id)
        assert row is not None
        row.state, row.disabled_reason = FeedState.GONE, reason
    log.warning("feed %s disabled: %s", feed.name, reason)


def _record_fetch(engine: Engine, feed: Feed, fetched: Fetched) -> None:
    """Keep the feed's validators for the next conditional GET, and its new address."""
    with transaction(engine) as session:
        row = session.get(Feed, feed.id)
        assert row is not None
        row.etag = fetched.etag or row.etag
        row.last_modified = fetched.last_modified or row.last_modified
        moved_to = fetched.moved_to
        if not moved_to or moved_to == row.url:
            return
        old_host, new_host = httpx.URL(row.url).host, httpx.URL(moved_to).host
        if old_host != new_host:
            # Someone else's server now names the feed: an operator decides to follow it.
            log.warning(
                "feed %s: %s redirects permanently to another host, %s; the stored URL is kept "
                "(if %s is trusted, remove the feed and add it again with %s)",
                row.name,
                old_host,
                new_host,
                new_host,
                http.shown_url(moved_to),
            )
            return
        log.info(
            "feed %s moved permanently: %s -> %s",
            row.name,
            http.shown_url(row.url),
            http.shown_url(moved_to),
        )
        row.url = moved_to


def due_feed_sources(
    engine: Engine,
    client: httpx.AsyncClient,
    *,
    now: datetime,
    default_interval_minutes: int,
    lease: PollLease,
    tolerance: timedelta = timedelta(0),
) -> list[FeedSource]:
    """Every enabled feed whose interval has passed since its last poll (or will within
    ``tolerance``: a run starting a little early must not skip a whole interval)."""
    sources = []
    for feed, state in list_feeds(engine, enabled_only=True):
        interval_s = 60.0 * (feed.poll_interval_minutes or default_interval_minutes)
        interval_s -= min(tolerance.total_seconds(), interval_s / 2)
        last_poll = state.last_poll_at if state else None
        if last_poll is None or (now - last_poll).total_seconds() >= interval_s:
            seeded = state is not None and state.last_ok_at is not None
            sources.append(FeedSource(engine, client, feed, lease, seeded))
    return sources


def shortest_interval_minutes(engine: Engine, default_interval_minutes: int) -> int:
    """The shortest of the default poll interval and the enabled feeds' own intervals."""
    intervals = [
        feed.poll_interval_minutes or default_interval_minutes
        for feed, _ in list_feeds(engine, enabled_only=True)
    ]
    return min([default_interval_minutes, *intervals])
