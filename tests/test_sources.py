"""The Parliament API source: normalising real recorded items, paging, faults."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from alertd.config import ParliamentSettings, Settings
from alertd.errors import (
    RetryLater,
    SourceError,
    SourceGone,
    SourceInvalid,
    SourceThrottled,
    SourceUnavailable,
)
from alertd.kinds.kind import Listing, MemberRef, NewItem, Role
from alertd.kinds.written_question import LIST_PATH, QuestionStage, WrittenQuestion
from alertd.kinds.written_question import parse as parse_item
from alertd.sources import http
from alertd.sources.parliament import ParliamentApi, make_http_client
from alertd.sources.state import PollLease, take_poll_lease

from standin_api import FaultRule, StandinApi
from window_poll import poll_kind

FIXTURES = Path(__file__).parent / "fixtures"
ANSWERED = FIXTURES / "list_answered_2021-02-01_bicameral_expandMember.json"


def _recorded_values() -> list[dict[str, Any]]:
    return [result["value"] for result in json.loads(ANSWERED.read_bytes())["results"]]


def _asker(item: NewItem) -> MemberRef | None:
    return next((m for m in item.members if m.role == Role.ASKER), None)


def test_every_recorded_item_normalises() -> None:
    items = [parse_item(value) for value in _recorded_values()]
    assert len(items) == 469
    assert {item.house for item in items} == {"Commons", "Lords"}
    assert sum(item.stage == QuestionStage.HOLDING for item in items) == 4
    assert all(item.day == date(2021, 2, 1) for item in items)
    lords = next(item for item in items if item.details["uin"].startswith("HL"))
    assert lords.house == "Lords"


def test_item_fields_from_a_real_question() -> None:
    value = next(v for v in _recorded_values() if v["id"] == 1279581)
    item = parse_item(value)
    assert item.title == "Special Educational Needs: Coronavirus"
    assert item.answering_body_name == "Department for Education"
    asker = _asker(item)
    assert asker is not None and asker.party
    assert item.url == (
        "https://questions-statements.parliament.uk/written-questions/detail/"
        f"{value['dateTabled'][:10]}/{value['uin']}"
    )
    assert item.body_html.startswith("<p>")
    assert item.version_key == "answer:2021-02-01:-"


def test_version_key_changes_for_substantive_and_corrected_answers() -> None:
    holding = next(v for v in _recorded_values() if v["answerIsHolding"])
    substantive = {**holding, "answerIsHolding": False, "dateAnswered": "2021-02-08T00:00:00"}
    corrected = {**substantive, "dateAnswerCorrected": "2021-02-15T00:00:00"}
    keys = {parse_item(v).version_key for v in (holding, substantive, corrected)}
    assert len(keys) == 3


@pytest.mark.parametrize("missing", ["id", "uin", "house", "dateTabled"])
def test_bad_item_is_source_invalid(missing: str) -> None:
    value = dict(_recorded_values()[0])
    del value[missing]
    with pytest.raises(SourceInvalid):
        parse_item(value)


def _api(standin: StandinApi, **overrides: Any) -> tuple[ParliamentApi, httpx.AsyncClient]:
    overrides.setdefault("timeout_s", 2.0)
    settings = ParliamentSettings(base_url=standin.base_url, **overrides)
    client = make_http_client(settings)
    return ParliamentApi(settings, client), client


async def test_listing_pages_until_total(standin_api: StandinApi) -> None:
    api, client = _api(standin_api, page_size=100)
    async with client:
        values = await api.list_all(
            Listing(LIST_PATH, {"answeredWhenFrom": "2021-02-01", "answeredWhenTo": "2021-02-01"})
        )
    assert len(values) == 469
    pages = [path for method, path in standin_api.requests if "skip=" in path]
    assert len(pages) == 5


async def test_detail_gives_full_text(standin_api: StandinApi) -> None:
    api, client = _api(standin_api)
    async with client:
        detail = await api.detail(WrittenQuestion(), {"id": 1279581})
    assert detail["id"] == 1279581


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (500, SourceUnavailable),
        (429, SourceUnavailable),
        ("hang", SourceUnavailable),
        ("broken_json", SourceInvalid),
        ("drop", SourceUnavailable),
    ],
)
async def test_listing_faults_are_typed_errors(
    standin_api: StandinApi, fault: int | str, error: type[Exception]
) -> None:
    api, client = _api(standin_api, timeout_s=0.5)
    standin_api.fail_next("list", fault)
    async with client:
        with pytest.raises(error) as caught:
            await api.list_all(Listing(LIST_PATH, {"answeredWhenFrom": "2021-02-01"}))
    assert standin_api.base_url in str(caught.value)


async def test_a_source_error_names_its_url_and_status(standin_api: StandinApi) -> None:
    api, client = _api(standin_api, timeout_s=0.5)
    # Each fault, and the status its error carries: None when no answer came.
    expected: dict[Any, int | None] = {
        500: 500,
        404: 404,
        "broken_json": 200,
        "hang": None,
        "drop": None,
    }
    statuses: dict[Any, int | None] = {}
    async with client:
        for fault in expected:
            standin_api.fail_next("list", fault)
            with pytest.raises(SourceError) as caught:
                await api.list_all(Listing(LIST_PATH, {"answeredWhenFrom": "2021-02-01"}))
            error = caught.value
            statuses[fault] = error.status
            assert error.url is not None and error.url.startswith(standin_api.base_url)
            assert error.url in str(error)
    assert statuses == expected


async def test_a_429_with_retry_after_says_when_to_come_back(standin_api: StandinApi) -> None:
    api, client = _api(standin_api)
    standin_api.fail_next("list", 429, retry_after=120)
    standin_api.fail_next("list", 429)
    async with client:
        with pytest.raises(RetryLater) as throttled:
            await api.list_all(Listing(LIST_PATH, {"answeredWhenFrom": "2021-02-01"}))
        with pytest.raises(SourceUnavailable) as unavailable:
            await api.list_all(Listing(LIST_PATH, {"answeredWhenFrom": "2021-02-01"}))
    assert isinstance(throttled.value, SourceUnavailable)
    assert (throttled.value.retry_after_s, throttled.value.status) == (120, 429)
    # The message is the one every 429 gets: the wait is carried, not written into it.
    assert str(throttled.value) == str(unavailable.value)
    assert not isinstance(unavailable.value, RetryLater) and unavailable.value.status == 429


def _answer(status: int, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "https://reader:secret@api.example.org/feed?x=1")
    return httpx.Response(status, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after_s"),
    [
        (503, {"Retry-After": "30"}, SourceThrottled, 30),
        # An HTTP date counts from the answer's own Date: no matter how our clock is set.
        (
            429,
            {
                "Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT",
                "Date": "Wed, 21 Oct 2015 07:26:30 GMT",
            },
            SourceThrottled,
            90,
        ),
        (429, {"Retry-After": "soon"}, SourceUnavailable, None),
        (429, {"Retry-After": "-5"}, SourceUnavailable, None),
        (502, {}, SourceUnavailable, None),
        (410, {"Retry-After": "30"}, SourceGone, None),
        (403, {}, SourceInvalid, None),
    ],
)
def test_check_status_maps_each_answer_to_an_error_that_carries_it(
    status: int,
    headers: dict[str, str],
    error: type[SourceError],
    retry_after_s: int | None,
) -> None:
    with pytest.raises(SourceError) as caught:
        http.check_status(_answer(status, **headers))
    assert type(caught.value) is error
    assert caught.value.url == "https://api.example.org/feed?x=1"  # no user:password
    assert caught.value.status == status
    assert getattr(caught.value, "retry_after_s", None) == retry_after_s


async def test_a_poll_longer_than_its_lease_keeps_the_source(
    db_engine: Engine, standin_api: StandinApi
) -> None:
    # Each listing waits 1.5 s: the poll outlasts its 0.6 s lease, which it renews, so no
    # other worker takes the source meanwhile (and polls it a second time).
    standin_api.add_fault(FaultRule("delay", target="list", seconds=1.5, count=None))
    settings = Settings.model_validate(
        {"parliament": {"base_url": standin_api.base_url, "timeout_s": 5.0}}
    )
    now = datetime(2021, 2, 1, 20, 0, tzinfo=UTC)
    lease = PollLease("first", 0.6, timedelta(0))
    polling = asyncio.create_task(
        poll_kind(db_engine, WrittenQuestion(), settings, now, lease=lease)
    )
    await asyncio.sleep(1.2)
    other = PollLease("second", 0.6, timedelta(0))
    assert (
        await asyncio.to_thread(take_poll_lease, db_engine, "parliament", other, now=now) is False
    )
    result = await polling
    assert result.polled and result.new_items == 469
    # Recorded and freed: the next worker may poll at once.
    assert (
        await asyncio.to_thread(take_poll_lease, db_engine, "parliament", other, now=now)
        is not False
    )
