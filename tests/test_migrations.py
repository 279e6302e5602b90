"""Migrations move data: a database filled at 0001 keeps every row through to the head."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alertd import queries
from alertd.config import DatabaseSettings
from alertd.db import alembic_config, create_db_engine, upgrade
from alertd.items import add_items
from alertd.kinds import statement, written_question
from alertd.kinds.kind import Role, member_in
from alertd.models import (
    Alert,
    BackfillDay,
    Feed,
    Hit,
    Item,
    Ledger,
    SourceState,
    Subscriber,
)

from standin_api import load_2021_statements

# Every database here is migrated by the migrations under test, never copied from a template.
pytestmark = pytest.mark.migrations

T0 = datetime(2024, 1, 2, 10, 0)  # naive UTC, as the columns store it
T1 = datetime(2024, 1, 3, 10, 0)
T2 = datetime(2024, 1, 4, 10, 0)


def _question(id: int, api_id: int, version: int, key: str, **values: Any) -> dict[str, Any]:
    row = {
        "id": id,
        "api_id": api_id,
        "source": "parliament",
        "answer_version": version,
        "version_key": key,
        "uin": f"{api_id}X",
        "house": "Commons",
        "heading": f"Heading {id}",
        "question_text": f"Question {id}",
        "answer_html": f"<p>Answer {id}</p>",
        "answer_text": f"Answer {id}",
        "asking_member_id": 4138,
        "asking_member_name": "Ms Asker",
        "asking_member_party": "Labour",
        "asking_member_constituency": "Somewhere",
        "answering_member_id": 4000,
        "answering_member_name": "Mr Answerer",
        "answering_body_id": 17,
        "answering_body_name": "Department for Education",
        "date_tabled": date(2024, 1, 1),
        "date_answered": date(2024, 1, 2),
        "date_answer_corrected": None,
        "is_holding": False,
        "is_correction": False,
        "is_withdrawn": False,
        "url": f"https://questions-statements.parliament.uk/{api_id}",
        "ingested_at": T0,
        "matched_at": T0,
    }
    row.update(values)
    return row


def _feed_question(id: int, entry_id: int, feed: str, title: str) -> dict[str, Any]:
    # How 0001 stored a feed item: minus its FeedEntry id, no UIN or House.
    return _question(
        id,
        -entry_id,
        1,
        "feed",
        source=feed,
        uin="",
        house="",
        heading=title,
        question_text="",
        answer_html=f"<p>{title} summary</p>",
        answer_text=f"{title} summary",
        asking_member_id=None,
        asking_member_name=None,
        asking_member_party=None,
        asking_member_constituency=None,
        answering_member_id=None,
        answering_member_name=None,
        answering_body_id=None,
        answering_body_name=None,
        date_tabled=date(2024, 1, 3),
        date_answered=date(2024, 1, 3),
        url=f"https://news.example/{entry_id}",
    )


ROWS_0001: dict[str, list[dict[str, Any]]] = {
    "subscriber": [
        {"id": 1, "email": "a@example.org", "created_at": T0, "consecutive_bounces": 0},
        {"id": 2, "email": "b@example.org", "created_at": T0, "consecutive_bounces": 1},
    ],
    "alert": [
        {
            "id": 1,
            "subscriber_id": 1,
            "query": "schools",
            "canonical": "schools",
            "frequency": "daily",
            "confirmed": True,
            "confirmed_at": T0,
            "created_at": T0,
            "last_digest_at": T1,
        },
        {
            "id": 2,
            "subscriber_id": 2,
            "query": "teachers",
            "canonical": "teachers",
            "frequency": "immediate",
            "confirmed": True,
            "confirmed_at": T0,
            "created_at": T0,
            "last_digest_at": None,
        },
    ],
    "feed": [
        {
            "id": 1,
            "name": "gov-news",
            "url": "https://news.example/feed",
            "etag": '"v1"',
            "last_modified": "Wed, 03 Jan 2024 10:00:00 GMT",
            "enabled": True,
            "last_poll_at": T2,
            "last_ok_at": T1,
            "last_error": "GET https://news.example/feed answered HTTP 503",
            "seeded": True,
        },
        {"id": 2, "name": "blog", "url": "https://blog.example/rss", "enabled": True},
        {
            "id": 3,
            "name": "old",
            "url": "https://old.example/atom",
            "enabled": False,
            "disabled_reason": "removed",
            "last_poll_at": T0,
            "last_ok_at": T0,
            "seeded": True,
        },
    ],
    "feedentry": [
        {"id": 1, "feed_id": 1, "uid": "tag:news.example,2024:1", "first_seen_at": T0},
        {"id": 2, "feed_id": 1, "uid": "https://news.example/2", "first_seen_at": T1},
        # Seen, with no item: must stay known so it is never alerted.
        {"id": 3, "feed_id": 1, "uid": "sha256:" + "ab" * 32, "first_seen_at": T1},
    ],
    "question": [
        _question(10, 1500, 1, "holding:2024-01-02", is_holding=True),
        _question(11, 1500, 2, "answer:2024-01-03:-", date_answered=date(2024, 1, 3)),
        _question(
            12,
            1500,
            3,
            "answer:2024-01-03:2024-01-04",
            date_answered=date(2024, 1, 3),
            date_answer_corrected=date(2024, 1, 4),
            is_correction=True,
            matched_at=None,
        ),
        _question(13, 1600, 1, "answer:2024-01-02:-", house="Lords", uin="HL123"),
        _feed_question(20, 1, "gov-news", "Item one"),
        _feed_question(21, 2, "gov-news", "Item two"),
    ],
    "outbox": [
        {
            "id": 1,
            "subscriber_id": 1,
            "recipient": "a@example.org",
            "message_id": "<1@alertd.test>",
            "subject": "Digest",
            "message": b"digest one",
            "status": "sent",
            "attempts": 1,
            "created_at": T1,
            "next_attempt_at": T1,
            "sent_at": T1,
        }
    ],
    "hit": [
        {"id": 1, "alert_id": 1, "subscriber_id": 1, "question_id": 11, "created_at": T1,
         "outbox_id": 1},
        {"id": 2, "alert_id": 1, "subscriber_id": 1, "question_id": 20, "created_at": T1,
         "outbox_id": 1},
        {"id": 3, "alert_id": 1, "subscriber_id": 1, "question_id": 12, "created_at": T2},
        {"id": 4, "alert_id": 2, "subscriber_id": 2, "question_id": 13, "created_at": T2},
    ],
    "ledger": [
        {"id": 1, "subscriber_id": 1, "api_id": 1500, "answer_version": 2, "question_id": 11,
         "outbox_id": 1, "created_at": T1},
        {"id": 2, "subscriber_id": 1, "api_id": -1, "answer_version": 1, "question_id": 20,
         "outbox_id": 1, "created_at": T1},
    ],
    "sourcestate": [
        {"name": "parliament", "high_water": date(2024, 1, 3), "last_poll_at": T2,
         "last_ok_at": T2, "last_new_count": 3, "lease_owner": "host:1:ab",
         "lease_until": T2},
        # A feed's state as record_poll kept it beside the feed's own columns.
        {"name": "feed:old", "last_poll_at": T1, "last_ok_at": None,
         "last_error": "GET https://old.example/atom answered HTTP 500", "last_new_count": 0},
    ],
}  # fmt: skip


@pytest.fixture
def engine_at_0001(database_url: str) -> Iterator[Engine]:
    """A database migrated to 0001 only and filled as 0001's code filled it."""
    engine = create_db_engine(DatabaseSettings(url=database_url))
    command.upgrade(alembic_config(engine), "0001")
    with engine.begin() as connection:
        tables = sa.MetaData()
        tables.reflect(connection)
        for name, rows in ROWS_0001.items():
            columns = tables.tables[name].columns
            full = [{c.name: row.get(c.name, _default(c)) for c in columns} for row in rows]
            connection.execute(tables.tables[name].insert(), full)
        if engine.dialect.name == "postgresql":
            for name in ("question", "hit", "ledger", "feedentry"):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"(SELECT MAX(id) FROM {name}))"
                )
    yield engine
    engine.dispose()


def _default(column: sa.Column[Any]) -> Any:
    if column.nullable:
        return None
    if isinstance(column.type, sa.Boolean):
        return False
    return 0 if isinstance(column.type, sa.Integer) else ""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def test_upgrade_moves_every_row(engine_at_0001: Engine) -> None:
    upgrade(engine_at_0001)
    with Session(engine_at_0001) as session:
        items = {item.id: item for item in session.exec(select(Item)).all()}
        hits = {hit.id: hit for hit in session.exec(select(Hit)).all()}
        ledger = {row.id: row for row in session.exec(select(Ledger)).all()}
        states = {s.name: s for s in session.exec(select(SourceState)).all()}

    # Answers keep their ids, versions and fields; the source id is the question id.
    identity = {i: (it.kind, it.source, it.source_id, it.version) for i, it in items.items()}
    question = written_question.WrittenQuestion.name
    assert identity[10] == (question, "parliament", "1500", 1)
    assert identity[11] == (question, "parliament", "1500", 2)
    assert identity[12] == (question, "parliament", "1500", 3)
    assert identity[13] == (question, "parliament", "1600", 1)
    correction = items[12]
    assert correction.version_key == "answer:2024-01-03:2024-01-04"
    assert correction.corrected_on == date(2024, 1, 4)
    assert correction.matched_at is None
    assert items[10].stage == "holding" and items[10].matched_at == _utc(T0)
    assert (items[13].details["uin"], items[13].house) == ("HL123", "Lords")
    asker = member_in(items[11], Role.ASKER)
    assert asker is not None and asker.name == "Ms Asker"
    assert items[11].answering_body_name == "Department for Education"
    assert written_question.date_tabled(items[11]) == date(2024, 1, 1)

    # Feed items: their feed's source and their entry's uid, no Parliament fields.
    feed = "feed_item"
    assert identity[20] == (feed, "feed:gov-news", "tag:news.example,2024:1", 1)
    assert identity[21] == (feed, "feed:gov-news", "https://news.example/2", 1)
    item = items[20]
    assert (item.details.get("uin"), item.house, item.details.get("date_tabled")) == (
        None,
        None,
        None,
    )
    assert (item.title, item.url) == ("Item one", "https://news.example/1")
    assert item.body_text == "Item one summary"
    assert item.day == date(2024, 1, 3)
    # The entry seen without an item stays known (matched already: never alerted).
    seen_only = [it for i, it in items.items() if i not in (10, 11, 12, 13, 20, 21)]
    assert [(it.kind, it.source, it.source_id) for it in seen_only] == [
        (feed, "feed:gov-news", "sha256:" + "ab" * 32)
    ]
    assert seen_only[0].matched_at == _utc(T1)

    # Hits and the ledger point at the same rows, now items.
    assert {i: (h.alert_id, h.item_id, h.outbox_id) for i, h in hits.items()} == {
        1: (1, 11, 1),
        2: (1, 20, 1),
        3: (1, 12, None),
        4: (2, 13, None),
    }
    assert {i: (r.subscriber_id, r.source, r.source_id, r.version, r.item_id) for i, r in
            ledger.items()} == {
        1: (1, "parliament", "1500", 2, 11),
        2: (1, "feed:gov-news", "tag:news.example,2024:1", 1, 20),
    }  # fmt: skip

    # Feeds' poll state is in SourceState; a feed never polled has none yet.
    parliament = states["parliament"]
    assert (parliament.high_water, parliament.last_new_count) == (date(2024, 1, 3), 3)
    assert parliament.lease_owner == "host:1:ab"
    news = states["feed:gov-news"]
    assert (news.last_poll_at, news.last_ok_at) == (_utc(T2), _utc(T1))
    assert news.last_error == "GET https://news.example/feed answered HTTP 503"
    old = states["feed:old"]  # the later of the feed's and the state's polls wins
    assert (old.last_poll_at, old.last_ok_at) == (_utc(T1), _utc(T0))
    assert old.last_error == "GET https://old.example/atom answered HTTP 500"
    assert "feed:blog" not in states

    columns = sa.inspect(engine_at_0001)
    assert {c["name"] for c in columns.get_columns("feed")} == {
        "id", "name", "url", "poll_interval_minutes", "etag", "last_modified", "state",
        "disabled_reason",
    }  # fmt: skip
    # 0013: a removed feed's state says so (the reason no longer does).
    with Session(engine_at_0001) as session:
        feeds = {
            feed.name: (feed.state, feed.disabled_reason) for feed in session.exec(select(Feed))
        }
    assert feeds == {
        "gov-news": ("active", None),
        "blog": ("active", None),
        "old": ("removed", None),
    }
    assert "last_digest_at" not in {c["name"] for c in columns.get_columns("alert")}
    assert not {"question", "feedentry"} & set(columns.get_table_names())


def test_upgraded_database_takes_new_rows(engine_at_0001: Engine) -> None:
    """Ids continue past the copied rows (PostgreSQL sequences), constraints hold."""
    upgrade(engine_at_0001)
    now = datetime(2024, 1, 5, tzinfo=UTC)
    with Session(engine_at_0001) as session:
        item = Item(
            kind=written_question.WrittenQuestion.name,
            source="parliament",
            source_id="1500",
            version=4,
            version_key="answer:2024-01-03:2024-01-05",
            url="https://questions-statements.parliament.uk/1500",
            ingested_at=now,
        )
        session.add(item)
        session.flush()
        assert item.id is not None and item.id > 21
        hit = Hit(alert_id=2, subscriber_id=2, item_id=item.id, created_at=now)
        session.add(hit)
        session.flush()
        assert hit.id is not None and hit.id > 4
        session.add(
            Ledger(
                subscriber_id=1,
                source="parliament",
                source_id="1500",
                version=2,
                item_id=11,
                outbox_id=1,
                created_at=now,
            )
        )
        with pytest.raises(sa.exc.IntegrityError):
            session.flush()  # that version was sent to that subscriber already


def test_0006_gives_every_subscriber_a_link_secret_and_never_reuses_ids(
    engine_at_0001: Engine,
) -> None:
    """Rows and their ids survive; each subscriber has its own random link secret; on SQLite
    the id of a deleted newest row is not given again (AUTOINCREMENT); and back down."""
    engine = engine_at_0001
    upgrade(engine)
    with engine.begin() as connection:
        secrets = dict(connection.execute(sa.text("SELECT id, link_secret FROM subscriber")).all())
        alerts = connection.execute(sa.text("SELECT id, subscriber_id FROM alert")).all()
        assert set(secrets) == {1, 2} and len(set(secrets.values())) == 2
        assert all(len(secret) == 32 for secret in secrets.values())
        assert sorted(alerts) == sorted((a["id"], a["subscriber_id"]) for a in ROWS_0001["alert"])
        newest = max(a["id"] for a in ROWS_0001["alert"])
        connection.execute(sa.text("DELETE FROM hit WHERE alert_id = :id"), {"id": newest})
        connection.execute(sa.text("DELETE FROM alert WHERE id = :id"), {"id": newest})
        if engine.dialect.name == "postgresql":  # the fixture gave its ids explicitly
            for name in ("alert", "subscriber"):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"(SELECT MAX(id) + 1 FROM {name}))"
                )
    with Session(engine) as session:
        alert = Alert(subscriber_id=1, query="x", canonical="x", frequency="daily", created_at=T0)
        subscriber = Subscriber(email="new@example.org", created_at=_utc(T0))
        alert.created_at = _utc(T0)
        session.add_all([alert, subscriber])
        session.commit()
        assert alert.id is not None and alert.id > newest
        assert subscriber.link_secret not in secrets.values()
    config = alembic_config(engine)
    command.downgrade(config, "0005")
    assert "link_secret" not in {c["name"] for c in sa.inspect(engine).get_columns("subscriber")}
    command.upgrade(config, "head")


def test_written_statements_migration_goes_down_and_up_again(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=database_url))
    try:
        upgrade(engine)
        now = datetime(2021, 2, 1, 18, 0, tzinfo=UTC)
        statements = [statement.parse(record) for record in load_2021_statements()]
        assert add_items(engine, "statements", statements, now=now, today=now.date()) == 10
        since = date(2021, 1, 1)
        found = queries.matching_ids(engine, '"hong kong" type:statement', since)
        assert len(found) == 2
        command.downgrade(alembic_config(engine), "0005")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("item")}
        assert "attachments" not in columns and "answering_member_role" not in columns
        with engine.connect() as connection:
            indexed = connection.execute(sa.text("SELECT count(*) FROM item_index")).scalar_one()
        assert indexed == 10  # the index is rebuilt, not lost
        command.upgrade(alembic_config(engine), "head")
        assert queries.matching_ids(engine, '"hong kong" type:statement', since) == found
        assert queries.matching_ids(engine, '"hong kong" type:question', since) == []
    finally:
        engine.dispose()


def test_0009_merges_subscribers_whose_addresses_differ_only_in_case(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=database_url))
    command.upgrade(alembic_config(engine), "0005")
    subscribers = [
        {"id": 1, "email": "Parent@example.org", "created_at": T0, "consecutive_bounces": 0},
        {"id": 2, "email": "other@example.org", "created_at": T0, "consecutive_bounces": 0},
        {"id": 3, "email": "parent@example.org", "created_at": T1, "consecutive_bounces": 0},
    ]
    alert = {"query": "schools", "canonical": "schools", "frequency": "daily", "confirmed": True}
    with engine.begin() as connection:
        tables = sa.MetaData()
        tables.reflect(connection)
        connection.execute(tables.tables["subscriber"].insert(), subscribers)
        connection.execute(
            tables.tables["alert"].insert(),
            [
                {"id": 1, "subscriber_id": 1, "created_at": T0, **alert},
                {"id": 2, "subscriber_id": 3, "created_at": T1, **alert, "query": "nhs"},
            ],
        )
    command.upgrade(alembic_config(engine), "heads")
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT id, email, email_key FROM subscriber ORDER BY id")
        ).all()
        owners = connection.execute(sa.text("SELECT id, subscriber_id FROM alert ORDER BY id"))
        assert [tuple(row) for row in owners] == [(1, 1), (2, 1)]
    # The first address as typed stays; both alerts are now its own.
    assert [tuple(row) for row in rows] == [
        (1, "Parent@example.org", "parent@example.org"),
        (2, "other@example.org", "other@example.org"),
    ]
    with engine.begin() as connection, pytest.raises(sa.exc.IntegrityError):
        connection.execute(
            sa.text(
                "INSERT INTO subscriber (email, email_key, created_at, consecutive_bounces, "
                "changed_version) VALUES ('PARENT@example.org', 'parent@example.org', "
                ":t, 0, 0)"
            ),
            {"t": T2},
        )
    engine.dispose()


def test_0013_gives_feeds_a_state_and_backfilled_days_their_own_table(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=database_url))
    command.upgrade(alembic_config(engine), "0012")
    with engine.begin() as connection:
        tables = sa.MetaData()
        tables.reflect(connection)
        connection.execute(
            tables.tables["feed"].insert(),
            [
                {"id": 1, "name": "live", "url": "https://a.example/rss", "enabled": True,
                 "disabled_reason": None},
                {"id": 2, "name": "gone", "url": "https://b.example/rss", "enabled": False,
                 "disabled_reason": "GET https://b.example/rss answered HTTP 410"},
                {"id": 3, "name": "old", "url": "https://c.example/rss", "enabled": False,
                 "disabled_reason": "removed"},
            ],
        )  # fmt: skip
        connection.execute(
            tables.tables["sourcestate"].insert(),
            [
                {"name": "parliament", "high_water": date(2024, 1, 3), "last_poll_at": T0,
                 "last_ok_at": T0, "last_new_count": 4},
                {"name": "parliament-backfill:2021-01-31", "high_water": date(2021, 1, 31),
                 "last_poll_at": T1, "last_ok_at": T1, "last_new_count": 469},
                {"name": "statements-backfill:2021-01-31", "high_water": date(2021, 1, 31),
                 "last_poll_at": T2, "last_ok_at": T2, "last_new_count": 10},
            ],
        )  # fmt: skip
    upgrade(engine)
    with Session(engine) as session:
        feeds = {
            f.name: (f.state, f.enabled, f.disabled_reason) for f in session.exec(select(Feed))
        }
        days = {(d.source, d.day): (d.stored, d.done_at) for d in session.exec(select(BackfillDay))}
        states = set(session.exec(select(SourceState.name)).all())
    assert feeds == {
        "live": ("active", True, None),
        "gone": ("gone", False, "GET https://b.example/rss answered HTTP 410"),
        "old": ("removed", False, None),
    }
    assert days == {
        ("parliament", date(2021, 1, 31)): (469, _utc(T1)),
        ("statements", date(2021, 1, 31)): (10, _utc(T2)),
    }
    # The poll state holds the sources' polls only.
    assert states == {"parliament"}
    # And back: the same rows as 0012 kept them.
    command.downgrade(alembic_config(engine), "0012")
    with engine.connect() as connection:
        names = connection.execute(sa.text("SELECT name FROM sourcestate ORDER BY name"))
        assert [row[0] for row in names] == [
            "parliament",
            "parliament-backfill:2021-01-31",
            "statements-backfill:2021-01-31",
        ]
        flags = connection.execute(
            sa.text("SELECT name, enabled, disabled_reason FROM feed ORDER BY id")
        )
        assert [(name, bool(on), why) for name, on, why in flags] == [
            ("live", True, None),
            ("gone", False, "GET https://b.example/rss answered HTTP 410"),
            ("old", False, "removed"),
        ]
    engine.dispose()
