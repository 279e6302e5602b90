"""Feed items: the entries of the RSS/Atom feeds alertd polls, each alerted once."""

from __future__ import annotations

import calendar
import hashlib
import logging
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from alertd.errors import SourceInvalid
from alertd.htmltext import html_to_text, sanitise_html, web_link
from alertd.kinds.kind import CardContext, Kind, KindWords, NewItem, Summary
from alertd.models import Item

if TYPE_CHECKING:
    from alertd.digests.view import DigestItem

log = logging.getLogger("alertd.kinds.feed_item")
_FEED_PREFIX = "feed:"

FEED_ITEM = KindWords(
    "new item",
    "new items",
    "new item from your feeds",
    "new items from your feeds",
    "items from the feeds alertd follows",
)


def feed_source(feed_name: str) -> str:
    """A feed's source name: the prefix keeps it apart from every other source's name."""
    return _FEED_PREFIX + feed_name


def feed_name(source: str) -> str | None:
    """The feed a source name names; None for a source that is not a feed."""
    return source.removeprefix(_FEED_PREFIX) if source.startswith(_FEED_PREFIX) else None


def _published(entry: Any) -> datetime | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    # feedparser gives UTC struct_time; timegm reads it as UTC (mktime would use local time).
    return datetime.fromtimestamp(calendar.timegm(parsed), UTC)


def _entry(entry: Any, base_url: str, fallback_link: str, now: datetime) -> NewItem:
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
    published = _published(entry)
    return NewItem(
        kind=FeedItem.name,
        source_id=uid,
        version_key="feed",
        stage="published",
        title=title or shown_link or "(untitled)",
        url=shown_link,
        body_text=summary_text,
        body_html=summary_html,
        # The day it was published, else the day it was first seen.
        day=(published or now).date(),
        published_at=published,
    )


def parse_feed(body: bytes, url: str, shown_url: str, *, now: datetime) -> list[NewItem]:
    """Items of an RSS 0.9x/1.0/2.0 or Atom document fetched from ``url`` (``shown_url``:
    the same without any user:password, which is never stored).

    Raises:
        SourceInvalid: the body is not a feed at all (an HTML error page, say).
    """
    import feedparser  # only when a feed is polled: quick commands never need it

    parsed = feedparser.parse(body)
    if not parsed.get("version"):
        raise SourceInvalid(
            f"{url} did not return a feed (got something that is not RSS/Atom)", url=shown_url
        )
    if parsed.get("bozo"):
        log.warning(
            "feed %s is malformed (%s); using the %d entries it still has",
            url,
            parsed.get("bozo_exception"),
            len(parsed.entries),
        )
    fallback = web_link(str(parsed.feed.get("link") or ""), shown_url) or web_link(shown_url)
    return [_entry(entry, shown_url, fallback or "", now) for entry in parsed.entries]


class FeedItem(Kind):
    """An entry of an RSS or Atom feed; ``type:`` has no name for it."""

    name: ClassVar[str] = "feed_item"
    public_text: ClassVar[bool] = False

    def summary(self, item: Item) -> Summary:
        return Summary(
            title=" ".join(item.title.split()),
            where=feed_name(item.source) or "",
            by="",
            day=item.corrected_on or item.day,
            text=item.body_text,
            url=item.url,
        )

    def words(self, item: Item, told_on: date | None) -> KindWords:
        return FEED_ITEM

    def card(self, item: Item, context: CardContext) -> DigestItem:
        from alertd.digests.excerpt import excerpt_around, flatten
        from alertd.digests.view import Block, DigestItem

        summary = excerpt_around(item.body_text, context.highlights, context.excerpt_chars)
        return DigestItem(
            heading=flatten(item.title),
            url=web_link(item.url) or "",
            words=FEED_ITEM,
            origin=feed_name(item.source) or "",
            origin_label="From ",
            dates=(("Published", item.day),) if item.day else (),
            blocks=(Block("Summary", summary.text, summary.spans, quoted=True),)
            if summary.text
            else (),
            read_label="Read it in full",
            also_matches=context.also_matches,
            body_html=item.body_html,
        )
