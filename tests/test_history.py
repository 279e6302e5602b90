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

from alertd.config import DatabaseSettings
from alertd.db import alembic_config, create_db_engine, open_database, upgrade
from alertd.errors import QueryError
from alertd.items import add_items
from alertd.kinds import kind_of, statement, written_question
from alertd.kinds.feed_item import FeedItem, feed_source
from alertd.kinds.kind import NewItem, Role, member_in
from alertd.kinds.statement import Statement
from alertd.kinds.written_question import QuestionStage, WrittenQuestion
from alertd.matching import AnalysedDocument, analyse, parse_query
from alertd.matching.history import TABLE
from alertd.matching.query import tokenize
from alertd.models import Item
from alertd.queries import compile_query, matching_answers, matching_ids
from alertd.sources.feed_registry import add_feed

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


def _answers() -> list[NewItem]:
    records = [*load_2021_answered(), *load_2024_records()]
    return [written_question.parse(record) for record in records]


def _holding(item: NewItem | Item) -> bool:
    return item.stage == QuestionStage.HOLDING


@pytest.fixture(scope="module")
def history(history_url: str) -> Iterator[History]:
    """The recorded answers stored as the poller and backfill store them, a corrected
    answer (a new version) and a feed's items."""
    engine = open_database(DatabaseSettings(url=history_url))
    answers = _answers()
    half = len(answers) // 2
    today = NOW.date()
    questions = written_question.SOURCE
    add_items(engine, questions, answers[:half], now=NOW, today=today)
    add_items(engine, questions, answers[half:], now=NOW, today=today, never_alert=True)
    original = next(a for a in answers if a.day is not None and not _holding(a))
    corrected = dataclasses.replace(
        original,
        corrected_on=NOW.date(),
        version_key=written_question.version_key(QuestionStage.ANSWERED, original.day, today),
        body_text=original.body_text + " Corrected: the figures for zebras were wrong.",
    )
    assert add_items(engine, questions, [corrected], now=NOW, today=today) == 1
    feed = add_feed(engine, "blog", "https://blog.example/atom")
    feed_items = [
        NewItem(
            kind=FeedItem.name,
            source_id=f"entry-{n}",
            version_key="feed",
            stage="published",
            title=title,
            url=f"https://blog.example/{n}",
            body_html=f"<p>{summary}</p>",
            body_text=summary,
            day=date(2024, 8, n + 1),
            published_at=datetime(2024, 8, n + 1, tzinfo=UTC),
        )
        for n, (title, summary) in enumerate(
            [
                ("School funding in Wales", "Teachers and schools: the new settlement."),
                ("Zebra crossings", "Road safety near schools, and the crossings' costs."),
            ]
        )
    ]
    source = feed_source(feed.name)
    assert add_items(engine, source, feed_items, now=NOW, today=today, never_alert=True) == 2
    # The written statements of 1 Feb 2021, and one of them corrected (a new version).
    statements = [statement.parse(record) for record in load_2021_statements()]
    assert add_items(engine, statement.SOURCE, statements, now=NOW, today=today) == 10
    corrected_statement = dataclasses.replace(
        statements[0],
        body_text=statements[0].body_text + " Correction: zebras were counted twice.",
        version_key=f"{statements[0].source_id}:corrected",
    )
    assert add_items(engine, statement.SOURCE, [corrected_statement], now=NOW, today=today) == 1
    with Session(engine) as session:
        items = session.exec(select(Item).order_by(col(Item.id))).all()
    documents = [(item, analyse(kind_of(item).document(item))) for item in items]
    words = sorted({t for item, _ in documents for t in tokenize(item.secondary_text)})
    heading_words = sorted({t for item, _ in documents for t in tokenize(item.title)})
    phrases = sorted(
        {
            " ".join(tokens[at : at + size])
            for item, _ in documents[::7]
            for tokens in [tokenize(item.secondary_text)]
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
        members=sorted({asker.id for i, _ in documents if (asker := member_in(i, Role.ASKER))}),
        departments=sorted({i.answering_body_id for i, _ in documents if i.answering_body_id}),
    )
    engine.dispose()


def _exact(history: History, text: str, since: date) -> list[int]:
    """What the exact evaluator finds, every stored item analysed afresh, newest first."""
    with Session(history.engine) as session:
        query = compile_query(session, text)
    found = [
        item
        for item, document in history.documents
        if not _holding(item)
        and item.day is not None
        and item.day >= since
        and query.matches(document)
    ]
    found.sort(key=lambda item: (-item.day.toordinal(), item.id))  # type: ignore[union-attr]
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
    assert matching_ids(history.engine, text, since) == _exact(history, text, since)


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
    assert matching_ids(history.engine, text, EARLY) == _exact(history, text, EARLY)


def test_corrected_answer_and_feed_items_are_indexed(history: History) -> None:
    found = matching_answers(history.engine, "zebras", EARLY)
    # The feed's "Zebra crossings", and the corrected answer and statement: new versions,
    # each its own item.
    assert sorted((item.kind, item.version) for item in found) == [
        (FeedItem.name, 1),
        (Statement.name, 2),
        (WrittenQuestion.name, 2),
    ]
    crossings = matching_answers(history.engine, 'heading:"zebra crossings"', EARLY)
    assert [item.title for item in crossings] == ["Zebra crossings"]
    with history.engine.connect() as connection:
        indexed = connection.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
    assert indexed == len(history.documents)


@pytest.mark.migrations
def test_migration_indexes_items_stored_before_it(database_url: str) -> None:
    engine = create_db_engine(DatabaseSettings(url=database_url))
    try:
        command.upgrade(alembic_config(engine), "0003")
        answers = [a for a in _answers() if a.day and not _holding(a)][:40]
        with engine.begin() as connection:
            # Core inserts, as an older alertd stored them: nothing indexes them on the way in.
            for number, answer in enumerate(answers, 1):
                row = {
                    "kind": WrittenQuestion.name,
                    "source": "parliament",
                    "source_id": answer.source_id,
                    "version": 1,
                    "version_key": answer.version_key,
                    "heading": answer.title,
                    "question_text": answer.secondary_text,
                    "answer_html": answer.body_html,
                    "answer_text": answer.body_text,
                    "url": answer.url,
                    "house": answer.house,
                    "answering_body_id": answer.answering_body_id,
                    "date_answered": answer.day,
                    "is_holding": _holding(answer),
                    "is_withdrawn": False,
                    # Naive UTC, as alertd stores times.
                    "ingested_at": NOW.replace(tzinfo=None),
                    "matched_at": NOW.replace(tzinfo=None),
                    "id": number,
                }
                # The item table as that schema had it (its later columns have defaults).
                old_item = sa.Table("item", sa.MetaData(), autoload_with=connection)
                connection.execute(sa.insert(old_item), row)
        upgrade(engine)
        with engine.connect() as connection:
            indexed = connection.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
        assert indexed == len(answers)
        word = tokenize(answers[0].title)[0]
        with Session(engine) as session:
            items = session.exec(select(Item).order_by(col(Item.id))).all()
        query = parse_query(word)
        expected = sorted(
            (
                i
                for i in items
                if not _holding(i) and query.matches(analyse(kind_of(i).document(i)))
            ),
            key=lambda i: (-i.day.toordinal(), i.id),  # type: ignore[union-attr]
        )
        found = matching_ids(engine, word, EARLY)
        assert found == [i.id for i in expected] and answers[0].source_id in {
            i.source_id for i in items if i.id in found
        }
        # Items stored before type: existed are indexed by their kind (migration 0008).
        assert matching_ids(engine, f"{word} type:question", EARLY) == found
        assert matching_ids(engine, f"{word} type:statement", EARLY) == []
    finally:
        engine.dispose()
