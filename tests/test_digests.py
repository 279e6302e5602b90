"""Composing digests a chunk of subscribers at a time: each queued once, conflicts redone."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import DatabaseSettings, Settings
from alertd.db import is_postgres, open_database, transaction
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import RenderedDigest, build_environment
from alertd.digests.render_pool import RenderBatch, RenderJob, RenderPool
from alertd.kinds.written_question import QuestionStage, WrittenQuestion
from alertd.models import Alert, Hit, Item, Ledger, Member, Outbox, OutboxState, Subscriber
from alertd.queries import compile_query

NOW = datetime(2024, 9, 2, 12, 0, tzinfo=UTC)
ZAHAWI = 4113


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def _question(session: Session, api_id: int, words: str) -> Item:
    question = Item(
        kind=WrittenQuestion.name,
        source="parliament",
        source_id=str(api_id),
        version=1,
        version_key="1",
        stage=QuestionStage.ANSWERED,
        house="Commons",
        title=f"Heading {api_id}",
        secondary_text=f"What is being done about {words}?",
        body_text=f"The Government is working hard on {words} across the country.",
        day=date(2024, 9, 2),
        details={
            "uin": f"U{api_id}",
            "date_tabled": date(2024, 9, 1).isoformat(),
            "date_for_answer": None,
            "is_named_day": False,
            "grouped_uins": [],
        },
        url=f"https://questions.example/{api_id}",
        ingested_at=NOW,
        matched_at=NOW,
    )
    session.add(question)
    return question


def _alert(session: Session, subscriber: Subscriber, query: str) -> Alert:
    assert subscriber.id is not None
    alert = Alert(
        subscriber_id=subscriber.id,
        query=query,
        canonical=compile_query(session, query).canonical,
        frequency="immediate",
        confirmed=True,
        confirmed_at=NOW,
        created_at=NOW,
    )
    session.add(alert)
    session.flush()
    return alert


def _hit(session: Session, alert: Alert, question: Item) -> None:
    assert alert.id is not None and question.id is not None
    session.add(
        Hit(
            alert_id=alert.id,
            subscriber_id=alert.subscriber_id,
            item_id=question.id,
            created_at=NOW,
        )
    )


def _subscribers(engine: Engine, count: int, alerted: dict[str, Sequence[int]]) -> list[Subscriber]:
    """``count`` subscribers, each with these alerts hitting these questions (by api id)."""
    with transaction(engine) as session:
        questions = {}
        for query, api_ids in alerted.items():
            for api_id in api_ids:
                if api_id not in questions:
                    questions[api_id] = _question(session, api_id, query)
        session.add(Member(id=ZAHAWI, name="Nadhim Zahawi"))
        session.flush()
        made = []
        for n in range(count):
            subscriber = Subscriber(email=f"reader{n}@example.org", created_at=NOW)
            session.add(subscriber)
            session.flush()
            for query, api_ids in alerted.items():
                alert = _alert(session, subscriber, query)
                for api_id in api_ids:
                    _hit(session, alert, questions[api_id])
            made.append(subscriber)
        return made


def _sent_before(engine: Engine, subscriber: Subscriber, api_id: int) -> int:
    """A digest this subscriber already got with that answer, as the ledger records it."""
    assert subscriber.id is not None
    with transaction(engine) as session:
        question = session.exec(select(Item).where(Item.source_id == str(api_id))).one()
        assert question.id is not None
        outbox = Outbox(
            subscriber_id=subscriber.id,
            recipient=subscriber.email,
            message_id=f"<earlier.{subscriber.id}@alertd.test>",
            message=b"",
            status=OutboxState.SENT,
            created_at=NOW,
            next_attempt_at=NOW,
        )
        session.add(outbox)
        session.flush()
        assert outbox.id is not None
        session.add(
            Ledger(
                subscriber_id=subscriber.id,
                source="parliament",
                source_id=str(api_id),
                version=1,
                item_id=question.id,
                outbox_id=outbox.id,
                created_at=NOW,
            )
        )
        return outbox.id


def _compose(engine: Engine, settings: Settings) -> int:
    return compose_due_digests(engine, settings, build_environment(settings), now=NOW)


def _text(outbox: Outbox) -> str:
    message = message_from_bytes(outbox.message, policy=default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    return " ".join(str(body.get_content()).split())


def _outboxes(engine: Engine) -> dict[str, list[Outbox]]:
    with Session(engine) as session:
        found: dict[str, list[Outbox]] = {}
        for outbox in session.exec(select(Outbox).order_by(col(Outbox.id))).all():
            found.setdefault(outbox.recipient, []).append(outbox)
        return found


def test_an_item_is_shared_only_by_digests_showing_it_the_same_way(
    db_engine: Engine, settings: Settings
) -> None:
    [both] = _subscribers(db_engine, 1, {"schools": [1], "teachers": [1]})
    with transaction(db_engine) as session:
        only = Subscriber(email="only@example.org", created_at=NOW)
        session.add(only)
        session.flush()
        question = session.exec(select(Item)).one()
        _hit(session, _alert(session, only, "schools"), question)

    assert _compose(db_engine, settings) == 2

    sent = _outboxes(db_engine)
    assert "Also matches: teachers" in _text(sent[both.email][0])
    assert "Also matches" not in _text(sent["only@example.org"][0])


def test_subscribers_locked_by_another_worker_are_left_to_it(
    db_engine: Engine, settings: Settings
) -> None:
    if not is_postgres(db_engine):
        pytest.skip("SQLite has one writer at a time: no row locks to skip")
    readers = _subscribers(db_engine, 5, {"schools": [1]})
    with Session(db_engine) as other, other.begin():
        other.exec(select(Subscriber).where(Subscriber.id == readers[3].id).with_for_update()).one()
        assert _compose(db_engine, settings) == 4
    assert readers[3].email not in _outboxes(db_engine)
    assert _compose(db_engine, settings) == 1


@pytest.fixture
def render_pool(settings: Settings) -> Iterator[RenderPool]:
    pool = RenderPool(settings, 2)
    yield pool
    pool.close()


def _render_batch(
    pool: RenderPool, settings: Settings, jobs: list[RenderJob]
) -> list[RenderedDigest]:
    batch = RenderBatch(pool, settings, build_environment(settings))
    for job in jobs:
        batch.add(job)
    return batch.results()


def _bodies(engine: Engine) -> dict[str, tuple[str, str]]:
    """Each recipient's subject and text part (Message-IDs differ from run to run, and link
    signatures from database to database: each subscriber has a random link secret)."""
    return {
        recipient: (str(rows[0].subject), _LINK_SIGNATURE.sub(r"\1SIGNATURE", _text(rows[0])))
        for recipient, rows in _outboxes(engine).items()
    }


_LINK_SIGNATURE = re.compile(r"(/(?:manage|unsubscribe|stop|feed)/[a-z]+\.\d+\.)[\w-]+")


@pytest.mark.slow
def test_render_workers_give_the_digests_rendered_here(
    db_engine: Engine,
    make_settings: Callable[..., Settings],
    settings: Settings,
    render_pool: RenderPool,
    tmp_path: Path,
) -> None:
    alerted = {"schools": [1, 2], f"member:{ZAHAWI}": [3]}
    _subscribers(db_engine, 30, alerted)
    env = build_environment(settings)
    assert compose_due_digests(db_engine, settings, env, now=NOW, pool=render_pool) == 30
    other = open_database(DatabaseSettings(url=f"sqlite:///{tmp_path}/here.db"))
    try:
        _subscribers(other, 30, alerted)
        assert compose_due_digests(other, settings, env, now=NOW) == 30
        assert _bodies(db_engine) == _bodies(other)
    finally:
        other.dispose()
    assert "Nadhim Zahawi" in next(iter(_bodies(db_engine).values()))[1]


def test_a_stop_between_chunks_leaves_the_rest_for_the_next_run(
    db_engine: Engine, settings: Settings
) -> None:
    _subscribers(db_engine, 250, {"schools": [1]})
    asked: list[int] = []

    def stop_after_the_first_chunk() -> bool:
        asked.append(1)
        return len(asked) > 1

    env = build_environment(settings)
    first = compose_due_digests(
        db_engine, settings, env, now=NOW, stopping=stop_after_the_first_chunk
    )
    assert 0 < first < 250
    assert compose_due_digests(db_engine, settings, env, now=NOW) == 250 - first
    assert sum(len(boxes) for boxes in _outboxes(db_engine).values()) == 250
