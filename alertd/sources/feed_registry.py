"""Feed registration: the feeds alertd polls, added from the config file or `alertd feeds`."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import FeedConfig
from alertd.db import transaction
from alertd.errors import UsageError
from alertd.kinds.feed_item import feed_source
from alertd.models import Feed, FeedState, SourceState
from alertd.sources.state import source_states


def add_feed(engine: Engine, name: str, url: str, interval_minutes: int | None = None) -> Feed:
    """Register a feed.

    Raises:
        UsageError: a bad name or URL, or the name is taken.
    """
    config = _validated(name, url, interval_minutes)
    with transaction(engine) as session:
        feed = session.exec(select(Feed).where(Feed.name == config.name)).first()
        if feed is not None and feed.state != FeedState.REMOVED:
            raise UsageError(f"a feed named {config.name!r} exists already")
        feed = feed or Feed(name=config.name, url=config.url)
        feed.url, feed.poll_interval_minutes = config.url, config.poll_interval_minutes
        feed.state, feed.disabled_reason = FeedState.ACTIVE, None
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
        if feed is None or feed.state == FeedState.REMOVED:
            raise UsageError(f"no feed named {name!r}")
        feed.state = FeedState.REMOVED


def list_feeds(
    engine: Engine, *, enabled_only: bool = False
) -> list[tuple[Feed, SourceState | None]]:
    """The feeds by name, each with its poll state (None before its first poll)."""
    statement = select(Feed).order_by(col(Feed.name))
    if enabled_only:
        statement = statement.where(col(Feed.state) == FeedState.ACTIVE)
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
