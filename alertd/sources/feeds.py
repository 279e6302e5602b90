"""Feeds as sources: fetch RSS/Atom politely (conditional GET, redirects, 410), parse, store."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import feedparser
import httpx
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import FeedConfig
from alertd.db import transaction
from alertd.errors import (
    AlertdError,
    FeedGone,
    PermanentError,
    SourceInvalid,
    SourceUnavailable,
    TransientError,
    UsageError,
)
from alertd.htmltext import html_to_text, sanitise_html
from alertd.models import Feed, FeedEntry, Question
from alertd.sources.ingest import PollLease, record_poll, take_poll_lease

log = logging.getLogger("alertd.sources.feeds")
MAX_REDIRECTS = 5
PERMANENT = (301, 308)
TEMPORARY = (302, 303, 307)


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
    moved_to: str | None


async def fetch_feed(client: httpx.AsyncClient, feed: Feed) -> Fetched:
    """GET the feed with its stored validators, following up to five redirects.

    Raises:
        SourceUnavailable: timeout, connection error, 429 or 5xx.
        FeedGone: 410.
        SourceInvalid: any other failure status, or too many redirects.
    """
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9"}
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    url, moved_to, permanent = feed.url, None, True
    for _ in range(MAX_REDIRECTS + 1):
        response = await _get(client, url, headers)
        if response.status_code in PERMANENT + TEMPORARY and "location" in response.headers:
            url = str(response.url.join(response.headers["location"]))
            # Only a chain of permanent redirects moves the feed for good.
            permanent = permanent and response.status_code in PERMANENT
            moved_to = url if permanent else moved_to
            continue
        return _outcome(response, moved_to)
    raise SourceInvalid(f"feed {feed.url} redirects more than {MAX_REDIRECTS} times")


async def _get(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    try:
        return await client.get(url, headers=headers, follow_redirects=False)
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(f"GET {url} timed out") from exc
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"GET {url} failed: {exc!r}") from exc


def _outcome(response: httpx.Response, moved_to: str | None) -> Fetched:
    url, status = str(response.url), response.status_code
    etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
    if status == 304:
        return Fetched(None, etag, modified, moved_to)
    if status == 410:
        raise FeedGone(f"GET {url} answered 410 Gone: feed disabled")
    if status == 429 or status >= 500:
        raise SourceUnavailable(f"GET {url} answered HTTP {status}")
    if status != 200:
        raise SourceInvalid(f"GET {url} answered HTTP {status}")
    return Fetched(response.content, etag, modified, moved_to)


def _published(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    # feedparser gives UTC struct_time; timegm reads it as UTC (mktime would use local time).
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC)


def _item(entry: Any) -> FeedItem:
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
    return FeedItem(
        uid, title or link or "(untitled)", link, summary_html, summary_text, _published(entry)
    )


def parse_feed(body: bytes, url: str) -> list[FeedItem]:
    """Items of an RSS 0.9x/1.0/2.0 or Atom document.

    Raises:
        SourceInvalid: the body is not a feed at all (an HTML error page, say).
    """
    parsed = feedparser.parse(body)
    if not parsed.get("version"):
        raise SourceInvalid(f"{url} did not return a feed (got something that is not RSS/Atom)")
    if parsed.get("bozo"):
        log.warning(
            "feed %s is malformed (%s); using the %d entries it still has",
            url,
            parsed.get("bozo_exception"),
            len(parsed.entries),
        )
    return [_item(entry) for entry in parsed.entries]


def store_feed_items(engine: Engine, feed: Feed, items: list[FeedItem], *, now: datetime) -> int:
    """Store items not seen before; on the feed's first good fetch, as seen (never alerted)."""
    assert feed.id is not None
    new = 0
    with transaction(engine) as session:
        for item in items:
            seen = session.exec(
                select(FeedEntry.id).where(FeedEntry.feed_id == feed.id, FeedEntry.uid == item.uid)
            ).first()
            if seen is not None:
                continue
            entry = FeedEntry(feed_id=feed.id, uid=item.uid, first_seen_at=now)
            session.add(entry)
            session.flush()
            assert entry.id is not None
            session.add(_question_row(feed, entry.id, item, now))
            new += 1
    return new


def _question_row(feed: Feed, entry_id: int, item: FeedItem, now: datetime) -> Question:
    day = (item.published or now).date()
    return Question(
        api_id=-entry_id,
        source=feed.name,
        answer_version=1,
        version_key="feed",
        uin="",
        house="",
        heading=item.title,
        answer_html=item.summary_html,
        answer_text=item.summary_text,
        date_tabled=day,
        date_answered=day,
        url=item.link,
        ingested_at=now,
        matched_at=None if feed.seeded else now,
    )


async def poll_feed(engine: Engine, client: httpx.AsyncClient, feed: Feed, now: datetime) -> int:
    """One conditional fetch of one feed; returns how many new items were stored.

    Raises:
        SourceUnavailable, SourceInvalid, FeedGone: recorded on the feed, then raised.
    """
    try:
        fetched = await fetch_feed(client, feed)
        items = (
            []
            if fetched.body is None
            else await asyncio.to_thread(parse_feed, fetched.body, feed.url)
        )
        new = store_feed_items(engine, feed, items, now=now) if items else 0
    except FeedGone as exc:
        _record(engine, feed, now, error=str(exc), disable=True)
        raise
    except (TransientError, PermanentError) as exc:
        _record(engine, feed, now, error=str(exc))
        raise
    _record(engine, feed, now, fetched=fetched)
    return new


def _record(
    engine: Engine,
    feed: Feed,
    now: datetime,
    *,
    fetched: Fetched | None = None,
    error: str | None = None,
    disable: bool = False,
) -> None:
    with transaction(engine) as session:
        row = session.get(Feed, feed.id)
        assert row is not None
        row.last_poll_at, row.last_error = now, error
        if disable:
            row.enabled, row.disabled_reason = False, error
            log.warning("feed %s disabled: %s", row.name, error)
        if fetched is not None:
            row.last_ok_at, row.seeded = now, True
            row.etag = fetched.etag or row.etag
            row.last_modified = fetched.last_modified or row.last_modified
            if fetched.moved_to and fetched.moved_to != row.url:
                log.info("feed %s moved permanently: %s -> %s", row.name, row.url, fetched.moved_to)
                row.url = fetched.moved_to


@dataclass
class FeedsPolled:
    new_items: int = 0
    errors: list[str] = field(default_factory=list)


async def poll_due_feeds(
    engine: Engine,
    client: httpx.AsyncClient,
    *,
    now: datetime,
    default_interval_minutes: int,
    lease: PollLease,
) -> FeedsPolled:
    """Poll every enabled feed whose interval has passed; one failing feed stops no other."""
    outcome = FeedsPolled()
    for feed in due_feeds(engine, now, default_interval_minutes):
        source = f"feed:{feed.name}"
        if take_poll_lease(engine, source, lease, now=now) is False:
            continue  # another worker is polling it
        try:
            new = await poll_feed(engine, client, feed, now)
        except AlertdError as exc:
            log.error("poll of feed %s failed: %s", feed.name, exc)
            record_poll(engine, source, now=now, error=str(exc))
            outcome.errors.append(str(exc))
            continue
        record_poll(engine, source, now=now, new_count=new)
        log.info("polled feed %s: %d new items", feed.name, new)
        outcome.new_items += new
    return outcome


def due_feeds(engine: Engine, now: datetime, default_interval_minutes: int) -> list[Feed]:
    with Session(engine) as session:
        feeds = session.exec(select(Feed).where(col(Feed.enabled).is_(True))).all()
    due = []
    for feed in feeds:
        interval_s = 60 * (feed.poll_interval_minutes or default_interval_minutes)
        if feed.last_poll_at is None or (now - feed.last_poll_at).total_seconds() >= interval_s:
            due.append(feed)
    return due


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


def list_feeds(engine: Engine) -> list[Feed]:
    with Session(engine) as session:
        return list(session.exec(select(Feed).order_by(Feed.name)).all())


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
