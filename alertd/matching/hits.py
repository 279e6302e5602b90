"""Hits: match the items not matched yet against every live alert, and record the hits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete, select, update

from alertd.db import is_postgres, transaction
from alertd.kinds import kind_of
from alertd.kinds.kind import Version
from alertd.matching.analysis import analyse
from alertd.matching.live import LiveAlert, LiveMatcher
from alertd.models import Alert, Hit, Item
from alertd.subscriptions.vocabulary import Hearing, NotifyOn

log = logging.getLogger("alertd.matching.hits")
# Hit rows go to the database this many at a time: a sitting day of debates gives tens of
# millions at a million alerts, never all held at once. A chunk is ~10 MiB; sorted, its rows
# share index pages (on SQLite, 20,000 a chunk took ~20 % more CPU than 50,000).
HITS_PER_INSERT = 50_000
_HIT: sa.Table = Hit.__table__  # type: ignore[attr-defined]
_HIT_COLUMNS = ("alert_id", "subscriber_id", "item_id", "created_at")


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
    with matcher.lock:
        matcher.refresh(session)
        rows = _fresh_hits(matcher.match(documents), items, told)
        return _insert_hits(session, rows, now)


def _fresh_hits(
    matches: Iterable[tuple[LiveAlert, list[int]]],
    items: Sequence[Item],
    told: set[tuple[int, int]],
) -> Iterator[tuple[int, int, int]]:
    """(alert id, subscriber id, item id) of each hit among the matches, as they come: an
    alert gets items that reached alertd after it was confirmed, that it hears of as news,
    and that it was not told of already."""
    item_ids = [item.id for item in items if item.id is not None]
    assert len(item_ids) == len(items)
    ingested = [item.ingested_at for item in items]
    hearings = [kind_of(item).hears(item) for item in items]
    # Whether an alert hears of each item depends on its notify_on alone: worked out once
    # per notify_on met, not per (alert, item).
    heard_by: dict[str, list[bool]] = {}
    for alert, indexes in matches:
        heard = heard_by.get(alert.notify_on)
        if heard is None:
            heard = heard_by[alert.notify_on] = _heard_items(alert.notify_on, hearings)
        confirmed_at = alert.confirmed_at
        for i in indexes:
            if confirmed_at is not None and ingested[i] < confirmed_at:
                continue
            if not heard[i] or (alert.id, item_ids[i]) in told:
                continue
            yield alert.id, alert.subscriber_id, item_ids[i]


def _heard_items(notify_on: str, hearings: Sequence[Hearing | None]) -> list[bool]:
    """For each item (by what hearing of it takes), whether an alert that hears of
    ``notify_on`` hears of it as news (a question as tabled, an answer)."""
    return [hearing is not None and NotifyOn(notify_on).hears(hearing) for hearing in hearings]


def _insert_hits(session: Session, rows: Iterable[tuple[int, int, int]], now: datetime) -> int:
    """Insert the hits (alert id, subscriber id, item id), created ``now``, in chunks of
    HITS_PER_INSERT; how many. Plain rows, no ORM object and no id read back: at ~50 M a
    day, a Hit object each was hours of CPU and tens of GiB."""
    connection = session.connection()
    created_at = _bound_created_at(connection, now)
    write = _copy_hits if is_postgres(connection.engine) else _executemany_hits
    count = 0
    for chunk in _chunks(rows, HITS_PER_INSERT):
        # In index order: a chunk's rows land near each other in the (alert, item) index.
        chunk.sort()
        write(connection, [(*row, created_at) for row in chunk])
        count += len(chunk)
    return count


def _chunks(
    rows: Iterable[tuple[int, int, int]], size: int
) -> Iterator[list[tuple[int, int, int]]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _bound_created_at(connection: sa.Connection, now: datetime) -> object:
    """``now`` as the driver takes it for Hit.created_at, converted by the column's type
    (to naive UTC) once, not once a row."""
    # The dialect's own type: SQLite stores a datetime as text in SQLAlchemy's format.
    dialect = connection.dialect
    process = _HIT.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    return now if process is None else process(now)


def _executemany_hits(connection: sa.Connection, rows: list[tuple[object, ...]]) -> None:
    # The driver's executemany: Core's would process each row's parameters in Python, which
    # takes as long again as SQLite's insert of the row.
    compiled = sa.insert(_HIT).compile(dialect=connection.dialect, column_keys=[*_HIT_COLUMNS])
    assert compiled.positiontup == [*_HIT_COLUMNS]
    connection.exec_driver_sql(str(compiled), rows)


def _copy_hits(connection: sa.Connection, rows: list[tuple[object, ...]]) -> None:
    # COPY: psycopg's executemany sends the statement once a row, several times slower.
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        statement = f"COPY {_HIT.name} ({', '.join(_HIT_COLUMNS)}) FROM STDIN"
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


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
    item_id = follow_up.id
    _insert_hits(session, ((alert, subscriber, item_id) for alert, subscriber in mailed), now)
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
