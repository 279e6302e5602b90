"""The written-statements source: recorded statements, paging, details, faults, corrections."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import ParliamentSettings, Settings
from alertd.errors import SourceInvalid, SourceUnavailable
from alertd.items import add_items
from alertd.kinds.kind import MemberRef, NewItem, Role, member_in
from alertd.kinds.statement import STATEMENTS_PATH, Statement, details
from alertd.kinds.statement import parse as parse_statement
from alertd.matching.hits import match_new_items
from alertd.models import Hit, Item, Member, SourceState
from alertd.sources.parliament import ParliamentApi, make_http_client
from alertd.sources.source import PollResult
from alertd.sources.state import PollLease
from alertd.sources.window import WindowSource
from alertd.subscriptions import lifecycle

from standin_api import StandinApi, load_2021_statements

MADE = date(2021, 2, 1)
NOW = datetime(2021, 2, 1, 18, 0, tzinfo=UTC)
HONG_KONG_HC = 1282160  # HCWS751, Priti Patel, Home Office
LONG_TEXT = (
    "<p>I am pleased to confirm that the Government has launched the Hong Kong British "
    "National (Overseas) route on 31 January 2021.</p>"
    + "<p>Applicants will need to show that they can support themselves.</p>" * 8
    + "<p>The final paragraph names the zebra crossing scheme.</p>"
)


def _minister(item: NewItem) -> MemberRef | None:
    return next((m for m in item.members if m.role == Role.ANSWERER), None)


def test_every_recorded_statement_normalises() -> None:
    items = [parse_statement(value) for value in load_2021_statements()]
    assert len(items) == 10
    assert {item.house for item in items} == {"Commons", "Lords"}
    assert {item.details["uin"][:4] for item in items} == {"HCWS", "HLWS"}
    assert all(item.day == MADE for item in items)
    patel = next(item for item in items if int(item.source_id) == HONG_KONG_HC)
    assert patel.details["uin"] == "HCWS751" and patel.title.startswith("Launch of the Hong Kong")
    minister = _minister(patel)
    assert minister is not None and minister.name == "Priti Patel"
    assert patel.details["role"] == "The Secretary of State for the Home Department"
    assert patel.answering_body_name == "Home Office"
    assert patel.url == (
        "https://questions-statements.parliament.uk/written-statements/detail/2021-02-01/HCWS751"
    )
    assert patel.body_html.startswith("<p>") and patel.body_text.endswith("...")


@pytest.mark.parametrize("missing", ["id", "uin", "house", "dateMade"])
def test_bad_statement_is_source_invalid(missing: str) -> None:
    value = dict(load_2021_statements()[0])
    del value[missing]
    with pytest.raises(SourceInvalid):
        parse_statement(value)


@pytest.fixture
def statements_api() -> Iterator[StandinApi]:
    """The stand-in serving the 10 recorded statements of 1 Feb 2021 (and no questions)."""
    with StandinApi(statements=load_2021_statements(), hang_seconds=5.0) as api:
        yield api


async def _poll(engine: Engine, standin: StandinApi, now: datetime, **overrides: Any) -> PollResult:
    """One poll of the statements source, through its own HTTP client."""
    overrides.setdefault("timeout_s", 2.0)
    settings = ParliamentSettings(base_url=standin.base_url, **overrides)
    async with make_http_client(settings) as client:
        source = WindowSource(
            engine,
            ParliamentApi(settings, client),
            Statement(),
            Settings(parliament=settings),
            zone=ZoneInfo("Europe/London"),
            lookback_days=1,
            lease=PollLease("test", 60.0, timedelta(0)),
        )
        return await source.poll(now)


def _items(engine: Engine) -> list[Item]:
    with Session(engine) as session:
        return list(session.exec(select(Item).order_by(col(Item.id))).all())


async def test_poll_pages_fetches_details_and_stores_statements(
    db_engine: Engine, statements_api: StandinApi
) -> None:
    statements_api.update_statement(
        HONG_KONG_HC,
        text=LONG_TEXT,
        attachments=[
            {"url": "https://example.org/a.pdf", "title": "BN(O) guidance", "fileType": "pdf"}
        ],
        linkedStatements=[
            {"linkedStatementId": 1282164, "linkType": "JointStatement", "linkDate": None}
        ],
    )
    result = await _poll(db_engine, statements_api, NOW, page_size=3)
    assert (result.fetched, result.new_items) == (10, 10)
    paths = [path for _, path in statements_api.requests]
    assert len([p for p in paths if p.startswith(STATEMENTS_PATH + "?")]) == 4  # 3+3+3+1
    assert len([p for p in paths if p.startswith(STATEMENTS_PATH + "/")]) == 10
    items = _items(db_engine)
    assert {item.kind for item in items} == {Statement.name}
    patel = next(item for item in items if item.source_id == str(HONG_KONG_HC))
    assert patel.title.startswith("Launch of the Hong Kong")
    assert patel.body_text.endswith("zebra crossing scheme.")  # the detail's whole text
    minister = member_in(patel, Role.ANSWERER)
    assert minister is not None
    assert minister.name == "Priti Patel" and minister.id == 4066
    found = details(patel)
    assert found["role"] == "The Secretary of State for the Home Department"
    assert patel.secondary_text == "BN(O) guidance"  # attachments' titles are searchable
    assert found["attachments"] == [{"title": "BN(O) guidance", "url": "https://example.org/a.pdf"}]
    assert found["linked_statements"] == [
        {"id": 1282164, "link_type": "JointStatement", "date": None}
    ]
    assert patel.day == MADE and patel.corrected_on is None
    assert found["uin"] == "HCWS751" and patel.house == "Commons"
    with Session(db_engine) as session:
        member = session.get(Member, 4066)
        state = session.get(SourceState, "statements")
    assert member is not None and member.name == "Priti Patel"
    assert state is not None and state.high_water == MADE and state.last_error is None

    # Polled again: nothing new, and no detail is fetched for what is stored.
    statements_api.clear_requests()
    again = await _poll(db_engine, statements_api, NOW + timedelta(hours=1))
    assert (again.fetched, again.new_items) == (10, 0)
    assert all(p.startswith(STATEMENTS_PATH + "?") for _, p in statements_api.requests)


async def test_changed_statement_is_a_corrected_version(
    db_engine: Engine, statements_api: StandinApi
) -> None:
    await _poll(db_engine, statements_api, NOW)
    statements_api.update_statement(HONG_KONG_HC, text=LONG_TEXT)
    later = NOW + timedelta(days=1)
    result = await _poll(db_engine, statements_api, later)
    assert result.new_items == 1
    versions = [i for i in _items(db_engine) if i.source_id == str(HONG_KONG_HC)]
    assert [(i.version, i.corrected_on) for i in versions] == [
        (1, None),
        (2, later.date()),
    ]


async def test_correcting_statement_is_a_new_version_of_the_one_it_corrects(
    db_engine: Engine, statements_api: StandinApi
) -> None:
    await _poll(db_engine, statements_api, NOW)
    statements_api.put_statement(_correction_of(_hong_kong()))
    result = await _poll(db_engine, statements_api, NOW + timedelta(days=1))
    assert result.new_items == 1
    versions = [i for i in _items(db_engine) if i.source_id == str(HONG_KONG_HC)]
    assert [(i.version, details(i)["uin"], i.corrected_on) for i in versions] == [
        (1, "HCWS751", None),
        (2, "HCWS790", date(2021, 2, 2)),
    ]
    assert versions[1].url.endswith("/written-statements/detail/2021-02-02/HCWS790")


def _hong_kong() -> dict[str, Any]:
    return next(dict(s) for s in load_2021_statements() if s["id"] == HONG_KONG_HC)


def _correction_of(original: dict[str, Any]) -> dict[str, Any]:
    """A statement made the next day correcting ``original``, linked as the API links them."""
    return {
        **original,
        "id": 1290001,
        "uin": "HCWS790",
        "dateMade": "2021-02-02T00:00:00",
        "title": "Launch of the Hong Kong BN(O) route: correction",
        "text": "<p>The route opened on 31 January 2021, not 1 February.</p>",
        "linkedStatements": [
            {
                "linkedStatementId": original["id"],
                "linkType": "CorrectedStatement",
                "linkDate": "2021-02-02T00:00:00",
            }
        ],
    }


def test_a_statement_and_its_correction_first_seen_together_go_out_once_corrected(
    db_engine: Engine,
) -> None:
    # Both in one poll (alertd was down, or the correction came the same day): the reader
    # gets the corrected statement once, not the original without its correction.
    lifecycle.subscribe(
        db_engine,
        "home@example.org",
        '"bn(o)" type:statement',
        "immediate",
        confirmed=True,
        now=NOW - timedelta(days=1),
    )
    original = _hong_kong()
    both = [parse_statement(value) for value in (original, _correction_of(original))]
    assert add_items(db_engine, "statements", both, now=NOW, today=NOW.date()) == 2
    assert match_new_items(db_engine, now=NOW) == 1
    with Session(db_engine) as session:
        mailed = session.exec(select(Item).join(Hit, col(Hit.item_id) == col(Item.id))).all()
        rows = [(details(item)["uin"], item.version, item.corrected_on) for item in mailed]
    assert rows == [("HCWS790", 2, date(2021, 2, 2))]


async def test_statement_whose_detail_is_gone_keeps_its_listed_text(
    db_engine: Engine, statements_api: StandinApi
) -> None:
    statements_api.fail_next("statement", 404, count=None)
    result = await _poll(db_engine, statements_api, NOW)
    assert result.new_items == 10
    assert all(item.body_text.endswith("...") for item in _items(db_engine))


@pytest.mark.parametrize(
    ("target", "fault", "error"),
    [
        ("statements", 503, SourceUnavailable),
        ("statements", "broken_json", SourceInvalid),
        ("statements", "drop", SourceUnavailable),
        ("statement", 500, SourceUnavailable),
        ("statement", "hang", SourceUnavailable),
    ],
)
async def test_failed_poll_is_recorded_and_stores_nothing(
    db_engine: Engine,
    statements_api: StandinApi,
    target: str,
    fault: int | str,
    error: type[Exception],
) -> None:
    statements_api.fail_next(target, fault, seconds=1.5 if fault == "hang" else None)
    with pytest.raises(error):
        await _poll(db_engine, statements_api, NOW, timeout_s=0.5)
    assert _items(db_engine) == []
    with Session(db_engine) as session:
        state = session.get(SourceState, "statements")
    assert state is not None and state.last_error and state.high_water is None
    # The next poll repeats the window and stores everything.
    result = await _poll(db_engine, statements_api, NOW + timedelta(minutes=30))
    assert result.new_items == 10


async def test_a_later_page_failing_fails_the_poll(
    db_engine: Engine, statements_api: StandinApi
) -> None:
    statements_api.fail_next("statements", 500, skip=6)
    with pytest.raises(SourceUnavailable, match="skip=6"):
        await _poll(db_engine, statements_api, NOW, page_size=3)
    assert _items(db_engine) == []
