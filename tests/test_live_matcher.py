"""The daemon's long-lived matcher follows alert changes made by any process, run after run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.items import add_items
from alertd.kinds import kind_of
from alertd.kinds.written_question import SOURCE, parse
from alertd.listing import list_alerts
from alertd.matching import Document, LiveMatcher, analyse, hits, match_new_items
from alertd.matching.engine import indexes_of
from alertd.matching.live import AlertRow, LiveAlert
from alertd.models import Alert, AlertsVersion, Hit, Item, Subscriber
from alertd.subscriptions import lifecycle
from alertd.web import service

from standin_api import load_2021_answered

T0 = datetime(2021, 2, 1, 9, 0, tzinfo=UTC)
QUERIES = {"a": "school", "b": "school", "c": "covid", "e": "health OR hospital*"}


def _store(engine: Engine, first: int, last: int, at: datetime) -> None:
    records = load_2021_answered()[first:last]
    stored = add_items(engine, SOURCE, [parse(r) for r in records], now=at, today=at.date())
    assert stored == len(records)


def _expected(engine: Engine) -> set[tuple[int, int]]:
    """The hits a freshly built matcher gives the unmatched items (confirmation rule applied);
    items never to alert (holding answers) are left out, as matching marks them matched."""
    with Session(engine) as session:
        fresh = LiveMatcher()
        fresh.refresh(session)
        items = session.exec(
            select(Item)
            .where(col(Item.matched_at).is_(None), col(Item.never_alert).is_(False))
            .order_by(col(Item.id))
        ).all()
        docs = [analyse(kind_of(item).document(item)) for item in items]
        return {
            (alert.id, items[i].id or 0)
            for alert, indexes in fresh.match(docs)
            for i in indexes
            if alert.confirmed_at is None or items[i].ingested_at >= alert.confirmed_at
        }


def _run(engine: Engine, matcher: LiveMatcher, now: datetime) -> set[tuple[int, int]]:
    """One match with the long-lived matcher; the hits it recorded."""
    with Session(engine) as session:
        before = set(session.exec(select(Hit.alert_id, Hit.item_id)).all())
    match_new_items(engine, now=now, matcher=matcher)
    with Session(engine) as session:
        return set(session.exec(select(Hit.alert_id, Hit.item_id)).all()) - before


def _items_stored_at(engine: Engine, at: datetime) -> set[int]:
    with Session(engine) as session:
        return {i.id or 0 for i in session.exec(select(Item).where(Item.ingested_at == at))}


def _suspend(engine: Engine, subscriber_id: int, now: datetime) -> None:
    # As a hard bounce does (mail.outbox), in its own session.
    with Session(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        subscriber.suspended_at = now
        session.add(subscriber)
        session.commit()


def test_changes_by_other_processes_reach_the_next_run(db_engine: Engine) -> None:
    engine, matcher = db_engine, LiveMatcher()
    ids = {
        name: lifecycle.subscribe(engine, f"{name}@example.org", q, "daily", confirmed=True, now=T0)
        for name, q in QUERIES.items()
    }
    alert = {name: a.id or 0 for name, a in ids.items()}

    # Run 1: the matcher is built from the database.
    _store(engine, 0, 120, T0 + timedelta(hours=1))
    expected = _expected(engine)
    assert {a for a, _ in expected} == set(alert.values())  # every alert has something
    assert _run(engine, matcher, T0 + timedelta(hours=1, minutes=5)) == expected

    # Between runs, other "processes": b stopped (CLI), c paused (web), e's owner suspended
    # (a bounce), d signs up unconfirmed and confirms after the next items arrived.
    lifecycle.stop_alert(engine, alert["b"], T0 + timedelta(hours=2))
    service.update_alert(
        engine, ids["c"].subscriber_id, alert["c"], now=T0 + timedelta(hours=2), paused=True
    )
    _suspend(engine, ids["e"].subscriber_id, T0 + timedelta(hours=2))
    d = lifecycle.subscribe(engine, "d@example.org", "school", "daily", confirmed=False, now=T0)
    _store(engine, 120, 240, T0 + timedelta(hours=3))
    lifecycle.confirm(engine, d.id or 0, T0 + timedelta(hours=4))
    _store(engine, 240, 360, T0 + timedelta(hours=5))

    expected = _expected(engine)
    got = _run(engine, matcher, T0 + timedelta(hours=5, minutes=5))
    assert got == expected
    by_alert = {
        name: {item for a, item in got if a == alert_id} for name, alert_id in alert.items()
    }
    assert by_alert["b"] == by_alert["c"] == by_alert["e"] == set()
    d_items = {item for a, item in got if a == d.id}
    assert d_items and d_items <= _items_stored_at(engine, T0 + timedelta(hours=5))
    assert by_alert["a"] & _items_stored_at(engine, T0 + timedelta(hours=3))

    # c resumed and e's owner confirms a new alert (which lifts the suspension; a confirm
    # link works once): both match again.
    service.update_alert(
        engine, ids["c"].subscriber_id, alert["c"], now=T0 + timedelta(hours=6), paused=False
    )
    assert not lifecycle.confirm(engine, alert["e"], T0 + timedelta(hours=6))  # used already
    again = lifecycle.subscribe(
        engine, "e@example.org", QUERIES["e"], "daily", confirmed=False, now=T0
    )
    assert lifecycle.confirm(engine, again.id or 0, T0 + timedelta(hours=6))
    _store(engine, 360, 469, T0 + timedelta(hours=7))
    expected = _expected(engine)
    got = _run(engine, matcher, T0 + timedelta(hours=7, minutes=5))
    assert got == expected
    assert {a for a, _ in got} >= {alert["c"], alert["e"]}


def test_hits_over_many_chunks_are_each_recorded_once(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hits go to the database in chunks, streamed from the match: with chunks of 7, a run of
    many chunks records every hit once, with its subscriber and time, and counts them all."""
    engine = db_engine
    monkeypatch.setattr(hits, "HITS_PER_INSERT", 7)
    subscribed = [
        lifecycle.subscribe(engine, f"{name}@example.org", q, "daily", confirmed=True, now=T0)
        for name, q in [*QUERIES.items(), ("f", "school"), ("g", "covid OR vaccine*")]
    ]
    _store(engine, 0, 200, T0 + timedelta(hours=1))
    expected = _expected(engine)
    assert len(expected) > 10 * 7
    now = T0 + timedelta(hours=1, minutes=5)
    assert match_new_items(engine, now=now, matcher=LiveMatcher()) == len(expected)
    with Session(engine) as session:
        rows = session.exec(select(Hit)).all()
        # Stored as every created_at is (on SQLite, text in one format): equal in SQL too.
        created_now = session.exec(select(Hit.id).where(Hit.created_at == now)).all()
        unmatched = session.exec(select(Item).where(col(Item.matched_at).is_(None))).all()
    assert sorted((h.alert_id, h.item_id) for h in rows) == sorted(expected)
    owner = {alert.id: alert.subscriber_id for alert in subscribed}
    assert all(h.subscriber_id == owner[h.alert_id] for h in rows)
    assert {h.created_at for h in rows} == {now} and {h.outbox_id for h in rows} == {None}
    assert len(created_now) == len(rows)
    assert unmatched == []


def test_a_refresh_reads_only_what_changed(db_engine: Engine) -> None:
    engine, matcher = db_engine, LiveMatcher()
    for n in range(5):
        lifecycle.subscribe(
            engine, f"s{n}@example.org", f"word{n}", "daily", confirmed=True, now=T0
        )
    with Session(engine) as session:
        assert matcher.refresh(session) == 5
        assert matcher.refresh(session) == 0  # nothing changed: nothing read
    stopped = list_alerts(engine)[0]
    lifecycle.stop_alert(engine, stopped.id, T0)
    with Session(engine) as session:
        assert matcher.refresh(session) == 1
        version = session.exec(select(AlertsVersion.version)).one()
        assert matcher.version == version
        assert len(matcher) == matcher.queries == 4
        # A change that does not decide matching (the frequency) bumps nothing.
        alert = session.exec(select(Alert).where(col(Alert.unsubscribed_at).is_(None))).first()
        assert alert is not None
        alert.frequency = "weekly"
        session.add(alert)
        session.commit()
        assert session.exec(select(AlertsVersion.version)).one() == version


def test_fan_out_count_is_the_walk_over_every_matching_alert() -> None:
    """The count per distinct query (what the benchmark reports) equals walking every alert."""
    docs = [
        analyse(
            Document(
                title=r["heading"] or "",
                secondary_text=r["questionText"] or "",
                body_text=r["answerText"] or "",
                house=r["house"],
                members=tuple(
                    (role, member_id)
                    for role, member_id in (
                        ("asker", r["askingMemberId"]),
                        ("answerer", r["answeringMemberId"]),
                    )
                    if member_id is not None
                ),
                department_id=r["answeringBodyId"],
            )
        )
        for r in load_2021_answered()[:80]
    ]
    canonicals = ["school", "covid", "health OR hospital*", '"social care" -covid', "member:4138"]
    matcher = LiveMatcher()
    matcher.load(
        AlertRow(LiveAlert(n, n, None), canonicals[n % len(canonicals)], True) for n in range(1, 40)
    )
    walked = sum(len(indexes) for _, indexes in matcher.match(docs))
    assert walked > 0 and matcher.fan_out_count(docs) == walked
    masks = matcher.match_masks(docs)
    assert {key: indexes_of(mask) for key, mask in masks.items()} == matcher.match_queries(docs)
