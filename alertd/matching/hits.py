"""Hits: match the items not matched yet against every live alert, and record the hits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select, update

from alertd.db import transaction
from alertd.kinds import kind_of
from alertd.kinds.kind import Version
from alertd.matching.analysis import analyse
from alertd.matching.live import LiveAlert, LiveMatcher
from alertd.models import Alert, Hit, Item
from alertd.subscriptions.vocabulary import NotifyOn

log = logging.getLogger("alertd.matching.hits")


def match_new_items(engine: Engine, *, now: datetime, matcher: LiveMatcher | None = None) -> int:
    """Match every unmatched item version; record hits and mark them matched, atomically.

    An alert only gets items that reached alertd after it was confirmed, so a new
    subscriber is never flooded with history, and only what it hears of (Alert.notify_on).
    A follow-up (a correction, the answer to a question mailed as tabled, a withdrawal)
    goes to those sent the earlier version, as the item's kind rules. An item its source
    marked never to alert is marked matched, with no hits. `matcher` is the daemon's, kept
    from run to run; without one, a matcher is built for this call. Returns the number of
    hits recorded.
    """
    live = LiveMatcher() if matcher is None else matcher
    _load_unless_idle(engine, live)
    with transaction(engine) as session:
        _settle_never_alert(session, now)
        items = session.exec(
            select(Item)
            .where(col(Item.matched_at).is_(None))
            .order_by(col(Item.id))
            # Several workers: each matches the items no other is matching right now.
            .with_for_update(skip_locked=True)
        ).all()
        if not items:
            return 0
        hits = 0
        fresh: list[Item] = []
        # (alert id, item id): told already, by a follow-up hit or an earlier version heard.
        told: set[tuple[int, int]] = set()
        # An earlier version's id -> the new version whose news it is not (FollowUp.heard).
        heard_before: dict[int, int] = {}
        newest = _newest_versions(items)
        for item in items:
            if item.version < newest[item.source, item.source_id]:
                # Superseded before it was matched (a statement and its correction, a question
                # tabled and answered, seen in one poll): only the newest version is news.
                continue
            follow = kind_of(item).follow_up(item, _earlier(session, item))
            if follow.drop_unsent:
                session.exec(
                    delete(Hit).where(
                        col(Hit.item_id).in_(follow.drop_unsent), col(Hit.outbox_id).is_(None)
                    )
                )
            if follow.told:
                alert_ids = _follow_up_hits(session, item, follow.told, now)
                hits += len(alert_ids)
                told.update((alert_id, item.id) for alert_id in alert_ids if item.id)
            if follow.heard and item.id is not None:
                told.update((alert_id, item.id) for alert_id in _heard(session, follow.heard))
                heard_before[follow.heard[-1]] = item.id
            if not follow.only:
                fresh.append(item)
        told.update(_matched_before(session, live, heard_before))
        hits += _match_fresh(session, live, fresh, now, told)
        for item in items:
            item.matched_at = now
            session.add(item)
    log.info("matched %d new items: %d hits", len(items), hits)
    return hits


def settle_never_alert(engine: Engine, *, now: datetime) -> None:
    """Mark matched, with no hits, the items their source stored never to alert (backfill's
    history), as the next match run would: they are done with as soon as they are stored."""
    with transaction(engine) as session:
        _settle_never_alert(session, now)


def _settle_never_alert(session: Session, now: datetime) -> None:
    session.exec(
        update(Item)
        .where(col(Item.matched_at).is_(None), col(Item.never_alert).is_(True))
        .values(matched_at=now)
    )


def _newest_versions(items: Sequence[Item]) -> dict[tuple[str, str], int]:
    """The newest version of each item among ``items``."""
    newest: dict[tuple[str, str], int] = {}
    for item in items:
        key = (item.source, item.source_id)
        newest[key] = max(newest.get(key, 0), item.version)
    return newest


def _earlier(session: Session, item: Item) -> list[Version]:
    """The item's earlier versions, oldest first, as its kind's follow-up rule sees them."""
    if item.version == 1:
        return []
    columns = (Item.id, Item.version, Item.stage, Item.corrected_on, Item.matched_at)
    rows = session.execute(
        sa.select(*(col(column) for column in columns))
        .where(
            col(Item.source) == item.source,
            col(Item.source_id) == item.source_id,
            col(Item.version) < item.version,
        )
        .order_by(col(Item.version))
    ).all()
    return [
        Version(item_id, version, stage, corrected_on, matched_at is not None)
        for item_id, version, stage, corrected_on, matched_at in rows
        if item_id is not None
    ]


def _load_unless_idle(engine: Engine, matcher: LiveMatcher) -> None:
    """Load a new matcher before the write transaction (on SQLite, the database's write
    lock): reading every live alert takes seconds at a million. Not when nothing waits."""
    if matcher.version is not None:
        return
    with Session(engine) as session:
        waiting = session.exec(
            select(Item.id)
            .where(col(Item.matched_at).is_(None), col(Item.never_alert).is_(False))
            .limit(1)
        )
        if waiting.first() is not None:
            with matcher.lock:
                matcher.refresh(session)


def _match_fresh(
    session: Session,
    matcher: LiveMatcher,
    items: Sequence[Item],
    now: datetime,
    told: set[tuple[int, int]],
) -> int:
    """Hits of items seen for the first time: a question as tabled, an answer (substantive
    after a holding answer), a feed item; none for an alert already told of it (``told``)."""
    if not items:
        return 0
    documents = [analyse(kind_of(item).document(item)) for item in items]
    hits = 0
    with matcher.lock:
        matcher.refresh(session)
        for alert, indexes in matcher.match(documents):
            hits += _record_hits(session, alert, [items[i] for i in indexes], now, told)
    return hits


def _follow_up_hits(
    session: Session, follow_up: Item, earlier: Sequence[int], now: datetime
) -> set[int]:
    """A follow-up goes to the people the earlier version went to, under the same alert;
    the ids of those alerts."""
    assert follow_up.id is not None
    mailed = session.exec(
        select(Hit.alert_id, Hit.subscriber_id)
        .join(Alert, col(Alert.id) == col(Hit.alert_id))
        .where(
            col(Hit.item_id).in_(earlier),
            col(Hit.outbox_id).is_not(None),
            col(Alert.unsubscribed_at).is_(None),
        )
        .distinct()
    ).all()
    for alert_id, subscriber_id in mailed:
        session.add(
            Hit(
                alert_id=alert_id,
                subscriber_id=subscriber_id,
                item_id=follow_up.id,
                created_at=now,
            )
        )
    return {alert_id for alert_id, _ in mailed}


def _matched_before(
    session: Session, matcher: LiveMatcher, heard_before: dict[int, int]
) -> set[tuple[int, int]]:
    """(alert id, new version id) for each alert its earlier version matches: what is news in
    the new version is only what made an alert match it."""
    if not heard_before:
        return set()
    earlier = session.exec(select(Item).where(col(Item.id).in_(heard_before))).all()
    documents = [analyse(kind_of(item).document(item)) for item in earlier]
    found: set[tuple[int, int]] = set()
    with matcher.lock:
        matcher.refresh(session)
        for alert, indexes in matcher.match(documents):
            found.update((alert.id, heard_before[earlier[i].id or 0]) for i in indexes)
    return found


def _heard(session: Session, earlier: Sequence[int]) -> set[int]:
    """The alerts that hit an earlier version, mailed yet or not."""
    rows = session.exec(select(Hit.alert_id).where(col(Hit.item_id).in_(earlier)).distinct())
    return set(rows.all())


def _hears(alert: LiveAlert, item: Item) -> bool:
    """Whether the alert hears of this version as news (a question as tabled, an answer)."""
    hearing = kind_of(item).hears(item)
    return hearing is not None and NotifyOn(alert.notify_on).hears(hearing)


def _record_hits(
    session: Session,
    alert: LiveAlert,
    items: list[Item],
    now: datetime,
    told: set[tuple[int, int]],
) -> int:
    count = 0
    for item in items:
        assert item.id is not None
        if alert.confirmed_at is not None and item.ingested_at < alert.confirmed_at:
            continue
        if (alert.id, item.id) in told or not _hears(alert, item):
            continue
        session.add(
            Hit(
                alert_id=alert.id,
                subscriber_id=alert.subscriber_id,
                item_id=item.id,
                created_at=now,
            )
        )
        count += 1
    return count
