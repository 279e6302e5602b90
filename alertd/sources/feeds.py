"""Feeds as sources: fetch RSS/Atom politely (conditional GET, redirects, 410), parse, store."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser
import httpx
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

import alertd.matching.history  # noqa: F401  (indexes each Item as it is inserted)
from alertd.config import FeedConfig
from alertd.db import transaction
from alertd.errors import SourceError, SourceGone, SourceInvalid, UsageError
from alertd.htmltext import html_to_text, sanitise_html, web_link
from alertd.models import Feed, Item, ItemKind, SourceState
from alertd.sources import http
from alertd.sources.source import PollResult, feed_source
from alertd.sources.state import (
    PollLease,
    record_poll,
    release_poll_lease,
    source_states,
    take_poll_lease,
)

log = logging.getLogger("alertd.sources.feeds")
PERMANENT = (301, 308)


@dataclass(frozen=True)
class FeedItem:
    uid: str
    title: str
    link: str
    summary_html: str
    summary_text: str
    published: datetime | None


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


def _published(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    # feedparser gives UTC struct_time; timegm reads it as UTC (mktime would use local time).
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC)


def _item(entry: Any, base_url: str, fallback_link: str) -> FeedItem:
    title = html_to_text(str(entry.get("title") or "")).strip()
    link = str(entry.get("link") or "")
    raw_summary = str(entry.get("summary") or entry.get("description") or "")
    summary_html = sanitise_html(raw_summary)
    summary_text = html_to_text(summary_html)
    guid = str(entry.get("id") or "")
    content = f"{title}\n{link}\n{summary_text}".encode()
    uid = guid or link or "sha256:" + hashlib.sha256(content).hexdigest()
    if len(uid) > 128:
        uid = "sha256:" + hashlib.sha256(uid.encode()).hexdigest()
    # The uid keeps the link as given (items stored before links were checked keep theirs);
    # what is stored and shown is an absolute http(s) link, else the feed's own.
    shown_link = web_link(link, base_url) or fallback_link
    return FeedItem(
        uid,
        title or shown_link or "(untitled)",
        shown_link,
        summary_html,
        summary_text,
        _published(entry),
    )


def parse_feed(body: bytes, url: str) -> list[FeedItem]:
    """Items of an RSS 0.9x/1.0/2.0 or Atom document.

    Raises:
        SourceInvalid: the body is not a feed at all (an HTML error page, say).
    """
    parsed = feedparser.parse(body)
    if not parsed.get("version"):
        raise SourceInvalid(
            f"{url} did not return a feed (got something that is not RSS/Atom)",
            url=http.shown_url(url),
        )
    if parsed.get("bozo"):
        log.warning(
            "feed %s is malformed (%s); using the %d entries it still has",
            url,
            parsed.get("bozo_exception"),
            len(parsed.entries),
        )
    # Never the feed's URL itself as given: it may carry a user:password.
    own_link = http.shown_url(url)
    fallback = web_link(str(parsed.feed.get("link") or ""), own_link) or web_link(own_link) or ""
    return [_item(entry, own_link, fallback) for entry in parsed.entries]


def store_feed_items(
    engine: Engine, feed: Feed, items: list[FeedItem], *, now: datetime, seeding: bool
) -> int:
    """Store items not seen before; when ``seeding`` (the feed's first good fetch), as
    matched already: what a feed holds when it is added is never alerted."""
    source = feed_source(feed.name)
    new = 0
    with transaction(engine) as session:
        for item in items:
            seen = session.exec(
                select(Item.id).where(Item.source == source, Item.source_id == item.uid)
            ).first()
            if seen is not None:
                continue
            session.add(_item_row(source, item, now, seeding))
            new += 1
    return new


def _item_row(source: str, item: FeedItem, now: datetime, seeding: bool) -> Item:
    return Item(
        kind=ItemKind.FEED_ITEM,
        source=source,
        source_id=item.uid,
        version=1,
        version_key="feed",
        heading=item.title,
        answer_html=item.summary_html,
        answer_text=item.summary_text,
        url=item.link,
        date_answered=(item.published or now).date(),
        published_at=item.published,
        ingested_at=now,
        matched_at=now if seeding else None,
    )


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
        taken = await asyncio.to_thread(take_poll_lease, engine, name, self.lease, now=now)
        if taken is False:
            return PollResult(name, fetched=0, new_items=0, polled=False)
        try:
            fetched = await fetch_feed(self.client, feed)
            items = (
                []
                if fetched.body is None
                else await asyncio.to_thread(parse_feed, fetched.body, feed.url)
            )
            new = (
                await asyncio.to_thread(
                    store_feed_items, engine, feed, items, now=now, seeding=not self.seeded
                )
                if items
                else 0
            )
        except SourceError as exc:
            if isinstance(exc, SourceGone):
                await asyncio.to_thread(_disable, engine, feed, str(exc))
            await asyncio.to_thread(record_poll, engine, name, now=now, error=str(exc))
            raise
        except asyncio.CancelledError:
            await asyncio.to_thread(release_poll_lease, engine, name, self.lease.owner)
            raise
        await asyncio.to_thread(_record_fetch, engine, feed, fetched)
        await asyncio.to_thread(record_poll, engine, name, now=now, new_count=new)
        return PollResult(name, fetched=len(items), new_items=new)


def _disable(engine: Engine, feed: Feed, reason: str) -> None:
    with transaction(engine) as session:
        row = session.get(Feed, feed.id)
        assert row is not None
        row.enabled, row.disabled_reason = False, reason
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


def add_feed(engine: Engine, name: str, url: str, interval_minutes: int | None = None) -> Feed:
    """Register a feed.

    Raises:
        UsageError: a bad name or URL, or the name is taken.
    """
    config = _validated(name, url, interval_minutes)
    with transaction(engine) as session:
        feed = session.exec(select(Feed).where(Feed.name == config.name)).first()
        if feed is not None and feed.disabled_reason != "removed":
            raise UsageError(f"a feed named {config.name!r} exists already")
        feed = feed or Feed(name=config.name, url=config.url)
        feed.url, feed.poll_interval_minutes = config.url, config.poll_interval_minutes
        feed.enabled, feed.disabled_reason = True, None
        session.add(feed)
        session.flush()
        return feed


def _validated(name: str, url: str, interval_minutes: int | None) -> FeedConfig:
    try:
        return FeedConfig(name=name, url=url, poll_interval_minutes=interval_minutes)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise UsageError(f"feed {field}: {error['msg'].removeprefix('Value error, ')}") from None


def remove_feed(engine: Engine, name: str) -> None:
    """Stop polling a feed; its items stay (they may be in digests already)."""
    with transaction(engine) as session:
        feed = session.exec(select(Feed).where(Feed.name == name)).first()
        if feed is None or not feed.enabled and feed.disabled_reason == "removed":
            raise UsageError(f"no feed named {name!r}")
        feed.enabled, feed.disabled_reason = False, "removed"


def list_feeds(
    engine: Engine, *, enabled_only: bool = False
) -> list[tuple[Feed, SourceState | None]]:
    """The feeds by name, each with its poll state (None before its first poll)."""
    statement = select(Feed).order_by(col(Feed.name))
    if enabled_only:
        statement = statement.where(col(Feed.enabled).is_(True))
    with Session(engine) as session:
        feeds = session.exec(statement).all()
    states = source_states(engine, [feed_source(feed.name) for feed in feeds])
    return [(feed, states.get(feed_source(feed.name))) for feed in feeds]


def sync_config_feeds(engine: Engine, configured: Sequence[FeedConfig]) -> None:
    """Register the [[feeds]] of the config file that the database does not know yet."""
    with transaction(engine) as session:
        known = set(session.exec(select(Feed.name)).all())
        for config in configured:
            if config.name not in known:
                session.add(
                    Feed(
                        name=config.name,
                        url=config.url,
                        poll_interval_minutes=config.poll_interval_minutes,
                    )
                )
