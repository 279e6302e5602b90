"""Oral questions (Oral Questions and Motions API): parsing, polling, changes, who hears."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import Settings
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import build_environment
from alertd.errors import SourceInvalid, SourceUnavailable
from alertd.items import add_items
from alertd.kinds import KINDS, api_kinds
from alertd.kinds.oral_question import SOURCE, OralQuestion, OralStage, heading, parse
from alertd.kinds.oral_questions_api import ORAL_QUESTIONS_MOTIONS
from alertd.matching.hits import match_new_items
from alertd.models import Hit, Item, SourceState
from alertd.sources.source import PollResult
from alertd.subscriptions import lifecycle

from standin_api import FaultRule, Params, _Response
from standin_oral import OralStandin, load_oral_questions, swagger
from window_poll import poll_kind

CORBYN = 185
KIND = OralQuestion()
# Jeremy Corbyn's recorded questions were to be asked from 29 Apr 2020 to 3 Mar 2026.
ALL_NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
ALL_LOOKBACK = (date(2026, 3, 3) - date(2020, 4, 29)).days
# "What steps she is taking with Cabinet colleagues to conduct due diligence …", 3 Mar 2026.
LAST = 411372


def _record(question_id: int) -> dict[str, Any]:
    return next(r for r in load_oral_questions() if r["Id"] == question_id)


# -- parsing -----------------------------------------------------------------------------------


def test_every_recorded_question_parses_with_its_asker_and_day() -> None:
    parsed = [parse(r) for r in load_oral_questions()]
    assert len(parsed) == 12
    assert {new.kind for new in parsed} == {"oral_question"}
    assert all(new.members[0].id == CORBYN and new.members[0].role == "asker" for new in parsed)
    assert all(new.members[0].name == "Jeremy Corbyn" for new in parsed)
    assert all(new.house == "Commons" and new.stage == OralStage.TABLED for new in parsed)
    # Numbers where the Swagger says names: 1-based types and statuses.
    types = [new.details["question_type"] for new in parsed]
    assert types.count("Topical") == 1 and types.count("Substantive") == 11
    statuses = {new.details["status"] for new in parsed}
    assert statuses == {"ToBeAsked", "Unasked"}
    # A minister named by id only where the API gives one.
    ministers = {new.source_id: new.members[1].id for new in parsed if len(new.members) > 1}
    assert ministers == {"127241": 1423, "332039": 400, "374007": 4514}
    last = next(new for new in parsed if new.source_id == str(LAST))
    assert last.day == date(2026, 3, 3)
    assert last.details["tabled_on"] == "2026-02-25"
    assert last.answering_body_name == "Foreign, Commonwealth and Development Office"
    assert last.url == "https://hansard.parliament.uk/Commons/2026-03-03"
    assert last.body_text.startswith("What steps she is taking with Cabinet colleagues")


def test_names_parse_as_the_numbers_do() -> None:
    record = _record(LAST)
    named = parse({**record, "Status": "Unasked", "QuestionType": "Substantive"})
    assert named == parse(record)


def test_a_hansard_link_given_is_the_link() -> None:
    link = "https://hansard.parliament.uk/Commons/2026-03-03/debates/X/Oral"
    assert parse({**_record(LAST), "HansardLink": link}).url == link
    # Not a web address: the day's Hansard instead.
    assert parse({**_record(LAST), "HansardLink": "javascript:x"}).url.endswith("2026-03-03")


def test_an_unknown_field_is_ignored() -> None:
    assert parse({**_record(LAST), "NewField": [1, 2]}) == parse(_record(LAST))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("QuestionText", None),
        ("QuestionText", "  "),
        ("Status", 99),
        ("Status", "Lost"),
        ("QuestionType", 0),
        ("AnsweringWhen", None),
        ("AnsweringWhen", "soon"),
        ("AskingMember", None),
    ],
)
def test_a_bad_field_is_source_invalid(field: str, value: Any) -> None:
    record = {**_record(LAST), field: value}
    if field == "AskingMember":
        record["AskingMemberId"] = 0
    with pytest.raises(SourceInvalid, match="411372"):
        parse(record)


def test_a_question_waiting_for_the_shuffle_is_not_stored_yet() -> None:
    with pytest.raises(SourceInvalid, match="not on the order paper yet"):
        parse({**_record(LAST), "Status": 1})


def test_a_refused_or_shapeless_page_is_source_invalid() -> None:
    refused = {"PagingInfo": None, "Success": False, "Errors": ["Bad date"], "Response": None}
    with pytest.raises(SourceInvalid, match="Bad date"):
        ORAL_QUESTIONS_MOTIONS.page(refused, 0)
    with pytest.raises(SourceInvalid, match="PagingInfo.Total"):
        ORAL_QUESTIONS_MOTIONS.page({"Response": []}, 0)
    with pytest.raises(SourceInvalid, match="without an Id"):
        ORAL_QUESTIONS_MOTIONS.page({"PagingInfo": {"Total": 1}, "Response": [{"Id": "1"}]}, 0)


def test_every_parameter_sent_is_one_the_swagger_declares() -> None:
    paths = swagger()["paths"]
    declared = {name: {p["name"] for p in op["get"]["parameters"]} for name, op in paths.items()}
    for kind in api_kinds():
        if kind.api is not ORAL_QUESTIONS_MOTIONS:
            continue
        for listing in kind.listings(date(2026, 1, 1), date(2026, 1, 2), Settings()):
            sent = {*listing.params, *kind.api.page_params(0, 100)}
            assert sent <= declared[listing.path], kind.name
    assert {"oral_question", "early_day_motion"} <= set(KINDS)


# -- polling -----------------------------------------------------------------------------------


@pytest.fixture
def oral_api() -> Iterator[OralStandin]:
    with OralStandin(load_oral_questions(), hang_seconds=5.0) as api:
        yield api


async def _poll(
    engine: Engine, api: OralStandin, now: datetime, *, lookback_days: int = 0, **parliament: Any
) -> PollResult:
    """One poll of the oral questions alone, through its own HTTP client."""
    settings = Settings.model_validate(
        {
            "parliament": {"timeout_s": 2.0, **parliament},
            "oral_questions": {"base_url": api.base_url},
        }
    )
    return await poll_kind(engine, KIND, settings, now, lookback_days=lookback_days)


def _items(engine: Engine) -> list[Item]:
    with Session(engine) as session:
        return list(session.exec(select(Item).order_by(col(Item.id))).all())


def _lists(api: OralStandin) -> list[dict[str, str]]:
    found = []
    for _, path in api.requests:
        parts = urlsplit(path)
        assert parts.path == "/oralquestions/list"  # nothing else is asked
        found.append({k: v[-1] for k, v in parse_qs(parts.query).items()})
    return found


async def test_a_poll_pages_to_the_end_by_the_day_to_be_asked(
    db_engine: Engine, oral_api: OralStandin
) -> None:
    result = await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK, page_size=5)
    assert (result.fetched, result.new_items) == (12, 12)
    lists = _lists(oral_api)
    assert [int(q["parameters.skip"]) for q in lists] == [0, 5, 10]
    assert {q["parameters.take"] for q in lists} == {"5"}
    assert {q["parameters.answeringDateStart"] for q in lists} == {"2020-04-29"}
    # Tabled for days to come: five weeks ahead.
    assert {q["parameters.answeringDateEnd"] for q in lists} == {"2026-04-07"}
    items = _items(db_engine)
    assert {i.source for i in items} == {SOURCE} and len(items) == 12
    with Session(db_engine) as session:
        state = session.get(SourceState, SOURCE)
    assert state is not None and state.high_water == date(2026, 3, 3) and state.last_error is None

    oral_api.clear_requests()
    again = await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK, page_size=500)
    # The API gives 100 at most, whatever is asked: the client asks no more.
    assert (again.fetched, again.new_items) == (12, 0)
    assert [q["parameters.take"] for q in _lists(oral_api)] == ["100"]


async def test_a_failed_page_stores_nothing_and_the_next_poll_catches_up(
    db_engine: Engine, oral_api: OralStandin
) -> None:
    oral_api.add_fault(FaultRule(503, target="/oralquestions", skip=5))
    with pytest.raises(SourceUnavailable):
        await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK, page_size=5)
    assert _items(db_engine) == []
    with Session(db_engine) as session:
        state = session.get(SourceState, SOURCE)
    assert state is not None and state.high_water is None and "503" in (state.last_error or "")
    result = await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK, page_size=5)
    assert result.new_items == 12


class _TabledWhileRead(OralStandin):
    """Tables a question that sorts first just before it answers the second page."""

    def _oral_list(self, params: Params) -> _Response:
        if params.get("parameters.skip") == ["5"] and 100001 not in self._questions:
            self.put_question({**_record(LAST), "Id": 100001, "UIN": 900001})
        return super()._oral_list(params)


async def test_a_question_listed_while_the_pages_are_read_is_stored_by_the_next_poll(
    db_engine: Engine,
) -> None:
    # Every record moves one place on between pages one and two: the pages read overlap,
    # none of the twelve is lost, and the new one is the next poll's.
    with _TabledWhileRead(load_oral_questions()) as api:
        result = await _poll(db_engine, api, ALL_NOW, lookback_days=ALL_LOOKBACK, page_size=5)
        assert result.new_items == 12
        assert "100001" not in {i.source_id for i in _items(db_engine)}
        again = await _poll(db_engine, api, ALL_NOW, lookback_days=ALL_LOOKBACK, page_size=5)
    assert again.new_items == 1
    assert "100001" in {i.source_id for i in _items(db_engine)}


async def test_broken_json_is_a_source_error_and_nothing_is_stored(
    db_engine: Engine, oral_api: OralStandin
) -> None:
    oral_api.add_fault(FaultRule("broken_json", target="/oralquestions"))
    with pytest.raises(SourceInvalid):
        await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK)
    assert _items(db_engine) == []


async def test_a_question_with_a_bad_field_is_skipped_not_the_poll(
    db_engine: Engine, oral_api: OralStandin
) -> None:
    oral_api.update_question(LAST, QuestionText=None)
    result = await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK)
    assert (result.fetched, result.new_items) == (12, 11)


async def test_waiting_or_dropped_questions_never_seen_are_not_stored(
    db_engine: Engine, oral_api: OralStandin
) -> None:
    oral_api.update_question(LAST, Status=1)  # Submitted: the shuffle is still to come
    oral_api.update_question(404663, Status=6)  # ShuffleUnsuccessful
    oral_api.update_question(374007, Status=7)  # Withdrawn
    result = await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK)
    assert result.new_items == 9
    # Chosen in the shuffle: stored now.
    oral_api.update_question(LAST, Status=5)
    assert (await _poll(db_engine, oral_api, ALL_NOW, lookback_days=ALL_LOOKBACK)).new_items == 1


# -- who hears ---------------------------------------------------------------------------------


def _subscribe(engine: Engine, query: str, now: datetime, **kwargs: Any) -> int:
    alert = lifecycle.subscribe(
        engine, "r@example.org", query, confirmed=True, now=now, frequency="immediate", **kwargs
    )
    assert alert.id is not None
    return alert.id


def _hit_items(engine: Engine, alert_id: int) -> list[tuple[str, int, str]]:
    with Session(engine) as session:
        rows = session.exec(
            select(Item)
            .join(Hit, col(Hit.item_id) == col(Item.id))
            .where(Hit.alert_id == alert_id)
            .order_by(col(Item.id))
        ).all()
        return [(i.source_id, i.version, i.stage) for i in rows]


def _store(engine: Engine, records: list[dict[str, Any]], now: datetime) -> int:
    return add_items(engine, SOURCE, [parse(r) for r in records], now=now, today=now.date())


def test_member_follows_hear_of_it_as_tabled_keyword_alerts_when_they_ask(
    db_engine: Engine,
) -> None:
    before = ALL_NOW - timedelta(days=1)
    ids = {
        query: _subscribe(db_engine, query, before)
        for query in (
            f"member:{CORBYN}",
            f"asker:{CORBYN}",
            "answerer:4514",
            "type:oral diligence",
            "type:question diligence",
            "diligence",
        )
    }
    tabled_too = _subscribe(db_engine, "diligence", before, notify_on="tabled,answered")
    assert _store(db_engine, load_oral_questions(), ALL_NOW) == 12
    match_new_items(db_engine, now=ALL_NOW)
    counts = {query: len(_hit_items(db_engine, alert_id)) for query, alert_id in ids.items()}
    assert counts == {
        # A plain follow of a Member hears of questions as tabled.
        f"member:{CORBYN}": 12,
        f"asker:{CORBYN}": 12,
        # Any other alert hears of answers unless it asked for tabled questions too.
        "answerer:4514": 0,
        "type:oral diligence": 0,
        "type:question diligence": 0,
        "diligence": 0,
    }
    assert _hit_items(db_engine, tabled_too) == [(str(LAST), 1, "tabled")]


def test_a_question_moved_or_withdrawn_goes_only_to_those_told(
    db_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    before = ALL_NOW - timedelta(days=1)
    follower = _subscribe(db_engine, f"member:{CORBYN}", before)
    _store(db_engine, [_record(LAST)], ALL_NOW)
    match_new_items(db_engine, now=ALL_NOW)
    _mark_sent(db_engine, settings, ALL_NOW)
    later = _subscribe(db_engine, f"asker:{CORBYN}", ALL_NOW + timedelta(minutes=1))

    moved = ALL_NOW + timedelta(hours=2)
    assert _store(db_engine, [{**_record(LAST), "AnsweringWhen": "2026-03-10T00:00:00"}], moved)
    match_new_items(db_engine, now=moved)
    assert _hit_items(db_engine, follower) == [(str(LAST), 1, "tabled"), (str(LAST), 2, "tabled")]
    # Not news to an alert that never heard of it.
    assert _hit_items(db_engine, later) == []

    _mark_sent(db_engine, settings, moved)
    dropped = moved + timedelta(hours=2)
    withdrawn = {**_record(LAST), "AnsweringWhen": "2026-03-10T00:00:00", "Status": 7}
    assert _store(db_engine, [withdrawn], dropped) == 1
    match_new_items(db_engine, now=dropped)
    assert _hit_items(db_engine, follower)[-1] == (str(LAST), 3, "dropped")
    assert _hit_items(db_engine, later) == []


def _mark_sent(engine: Engine, settings: Settings, now: datetime) -> None:
    """Compose the immediate digests of every hit so far (a follow-up goes to those mailed
    the earlier version)."""
    assert compose_due_digests(engine, settings, build_environment(settings), now=now) >= 1


def test_a_summary_and_heading_name_the_department() -> None:
    item = parse(_record(271822)).row(
        source=SOURCE, source_id="271822", version=1, corrected_on=None, now=ALL_NOW
    )
    assert heading(item) == "Topical question to Foreign, Commonwealth and Development Office"
    summary = KIND.summary(item)
    assert summary.by == "Jeremy Corbyn" and summary.status == "to be asked"
    assert summary.day == date(2023, 1, 31) and summary.reference == "903396"
