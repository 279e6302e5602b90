"""The index of stored items finds exactly what the exact evaluator finds over every item."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd import alerts
from alertd.config import DatabaseSettings
from alertd.db import alembic_config, create_db_engine, open_database, upgrade
from alertd.errors import QueryError
from alertd.matching import AnalysedDocument, analyse, item_document, parse_query
from alertd.matching.history import TABLE
from alertd.matching.query import tokenize
from alertd.models import Item, ItemKind
from alertd.sources.feeds import FeedItem, add_feed, store_feed_items
from alertd.sources.ingest import store_items
from alertd.sources.parliament import AnswerItem, parse_item
from alertd.sources.statements import parse_statement, store_statements

from db_templates import PostgresDatabases
from standin_api import load_2021_answered, load_2021_statements, load_2024_records

NOW = datetime(2024, 9, 1, 12, 0, tzinfo=UTC)
EARLY = date(2000, 1, 1)


@dataclass
class History:
    engine: Engine
    documents: list[tuple[Item, AnalysedDocument]]
    words: list[str]
    heading_words: list[str]
    phrases: list[str]
    members: list[int]
    departments: list[int]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('history')}/alertd.db"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = databases.migrated()
    try:
        yield databases.url(name)
    finally:
        databases.drop(name)


def _answers() -> list[AnswerItem]:
    return [parse_item(record) for record in [*load_2021_answered(), *load_2024_records()]]


@pytest.fixture(scope="module")
def history(history_url: str) -> Iterator[History]:
    """The recorded answers stored as the poller and backfill store them, a corrected
    answer (a new version) and a feed's items."""
    engine = open_database(DatabaseSettings(url=history_url))
    answers = _answers()
    half = len(answers) // 2
    store_items(engine, answers[:half], now=NOW)
    store_items(engine, answers[half:], now=NOW, alert=False)
    original = next(a for a in answers if a.date_answered is not None and not a.is_holding)
    corrected = dataclasses.replace(
        original,
        date_answer_corrected=NOW.date(),
        answer_text=original.answer_text + " Corrected: the figures for zebras were wrong.",
    )
    assert store_items(engine, [corrected], now=NOW) == 1
    feed = add_feed(engine, "blog", "https://blog.example/atom")
    feed_items = [
        FeedItem(
            uid=f"entry-{n}",
            title=title,
            link=f"https://blog.example/{n}",
            summary_html=f"<p>{summary}</p>",
            summary_text=summary,
            published=datetime(2024, 8, n + 1, tzinfo=UTC),
        )
        for n, (title, summary) in enumerate(
            [
                ("School funding in Wales", "Teachers and schools: the new settlement."),
                ("Zebra crossings", "Road safety near schools, and the crossings' costs."),
            ]
        )
    ]
    assert store_feed_items(engine, feed, feed_items, now=NOW, seeding=True) == 2
    # The written statements of 1 Feb 2021, and one of them corrected (a new version).
    statements = [parse_statement(record) for record in load_2021_statements()]
    assert store_statements(engine, statements, now=NOW, today=NOW.date()) == 10
    corrected_statement = dataclasses.replace(
        statements[0],
        text=statements[0].text + " Correction: zebras were counted twice.",
        fingerprint="corrected",
    )
    assert store_statements(engine, [corrected_statement], now=NOW, today=NOW.date()) == 1
    with Session(engine) as session:
        items = session.exec(select(Item).order_by(col(Item.id))).all()
    documents = [(item, analyse(item_document(item))) for item in items]
    words = sorted({t for item, _ in documents for t in tokenize(item.question_text)})
    heading_words = sorted({t for item, _ in documents for t in tokenize(item.heading)})
    phrases = sorted(
        {
            " ".join(tokens[at : at + size])
            for item, _ in documents[::7]
            for tokens in [tokenize(item.question_text)]
            for size in (2, 3)
            for at in range(0, max(len(tokens) - size, 0), 5)
        }
    )
    yield History(
        engine=engine,
        documents=documents,
        words=words,
        heading_words=heading_words,
        phrases=phrases,
        members=sorted({i.asking_member_id for i, _ in documents if i.asking_member_id}),
        departments=sorted({i.answering_body_id for i, _ in documents if i.answering_body_id}),
    )
    engine.dispose()


def _exact(history: History, text: str, since: date) -> list[int]:
    """What the exact evaluator finds, every stored item analysed afresh, newest first."""
    with Session(history.engine) as session:
        query = alerts.compile_query(session, text)
    found = [
        item
        for item, document in history.documents
        if not item.is_holding
        and item.date_answered is not None
        and item.date_answered >= since
        and query.matches(document)
    ]
    found.sort(key=lambda item: (-item.date_answered.toordinal(), item.id))  # type: ignore[union-attr]
    return [item.id for item in found if item.id is not None]


@st.composite
def queries(draw: st.DrawFn, history: History) -> str:
    words = st.sampled_from(history.words)
    prefixes = words.filter(lambda w: len(w) >= 4).map(lambda w: w[: max(3, len(w) - 2)] + "*")
    atom = st.one_of(
        words,
        words,
        st.sampled_from(history.phrases).map(lambda p: f'"{p}"'),
        prefixes,
        st.sampled_from(history.heading_words).map(lambda w: f"heading:{w}"),
        st.sampled_from(history.phrases).map(lambda p: f'heading:"{p}"'),
        prefixes.map(lambda p: f"heading:{p}"),
        st.sampled_from(history.members).map(lambda m: f"member:{m}"),
        st.sampled_from(history.members).map(lambda m: f"asker:{m}"),
        st.sampled_from(history.departments).map(lambda d: f"department:{d}"),
        st.sampled_from(["house:commons", "house:lords"]),
        st.sampled_from(["type:question", "type:statement"]),
        st.just("zebras"),
    )
    conjunct = st.one_of(atom, st.lists(atom, min_size=2, max_size=3).map(" OR ".join))
    first = draw(conjunct)
    rest = draw(
        st.lists(
            st.tuples(st.booleans(), conjunct).map(
                lambda pair: ("-" if pair[0] else "") + f"({pair[1]})"
            ),
            max_size=3,
        )
    )
    return " ".join([f"({first})", *rest])


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_index_finds_what_the_exact_evaluator_finds(history: History, data: st.DataObject) -> None:
    text = data.draw(queries(history), label="query")
    since = data.draw(st.sampled_from([EARLY, date(2024, 8, 1), date(2024, 9, 1)]), label="since")
    try:
        parse_query(text)
    except QueryError:
        assume(False)
    assert alerts.matching_ids(history.engine, text, since) == _exact(history, text, since)


@pytest.mark.parametrize(
    "text",
    [
        "school",
        "zebras",
        "schools -teachers",
        '"the department"',
        "heading:school*",
        "house:lords",
        "educat* OR nhs",
        "-(crossings) (road OR safety)",
        '"hong kong" type:statement',
        "trade -type:question",
        "zebras type:statement",
        "type:question school",
    ],
)
def test_index_agrees_on_chosen_queries(history: History, text: str) -> None:
    assert alerts.matching_ids(history.engine, text, EARLY) == _exact(history, text, EARLY)


def test_corrected_answer_and_feed_items_are_indexed(history: History) -> None:
    found = alerts.matching_answers(history.engine, "zebras", EARLY)
    # The feed's "Zebra crossings", and the corrected answer and statement: new versions,
    # each its own item.
    assert sorted((item.kind, item.version) for item in found) == [
        (ItemKind.FEED_ITEM, 1),
        (ItemKind.STATEMENT, 2),
        (ItemKind.WRITTEN_QUESTION, 2),
    ]
    crossings = alerts.matching_answers(history.engine, 'heading:"zebra crossings"', EARLY)
    assert [item.heading for item in crossings] == ["Zebra crossings"]
    with history.engine.connect() as connection:
        indexed = connection.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
    assert indexed == len(history.documents)


@pytest.mark.migrations
def test_migration_indexes_items_stored_before_it(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=database_url))
    try:
        command.upgrade(alembic_config(engine), "0003")
        answers = [a for a in _answers() if a.date_answered and not a.is_holding][:40]
        with engine.begin() as connection:
            # Core inserts, as an older alertd stored them: nothing indexes them on the way in.
            for number, answer in enumerate(answers, 1):
                row = {
                    "kind": ItemKind.WRITTEN_QUESTION.value,
                    "source": "parliament",
                    "source_id": str(answer.api_id),
                    "version": 1,
                    "version_key": answer.version_key,
                    "heading": answer.heading,
                    "question_text": answer.question_text,
                    "answer_html": answer.answer_html,
                    "answer_text": answer.answer_text,
                    "url": answer.url,
                    "house": answer.house,
                    "answering_body_id": answer.answering_body_id,
                    "date_answered": answer.date_answered,
                    "is_holding": answer.is_holding,
                    "is_withdrawn": False,
                    "ingested_at": NOW,
                    "matched_at": NOW,
                    "id": number,
                }
                # Only the columns that schema had (the model's later ones have defaults).
                columns = Item.__table__.c  # type: ignore[attr-defined]
                old_item = sa.table("item", *(sa.column(n, columns[n].type) for n in row))
                connection.execute(sa.insert(old_item), row)
        upgrade(engine)
        with engine.connect() as connection:
            indexed = connection.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
        assert indexed == len(answers)
        word = tokenize(answers[0].heading)[0]
        with Session(engine) as session:
            items = session.exec(select(Item).order_by(col(Item.id))).all()
        query = parse_query(word)
        expected = sorted(
            (i for i in items if not i.is_holding and query.matches(analyse(item_document(i)))),
            key=lambda i: (-i.date_answered.toordinal(), i.id),  # type: ignore[union-attr]
        )
        found = alerts.matching_ids(engine, word, EARLY)
        assert found == [i.id for i in expected] and answers[0].api_id in {
            int(i.source_id) for i in items if i.id in found
        }
        # Items stored before type: existed are indexed by their kind (migration 0008).
        assert alerts.matching_ids(engine, f"{word} type:question", EARLY) == found
        assert alerts.matching_ids(engine, f"{word} type:statement", EARLY) == []
    finally:
        engine.dispose()
