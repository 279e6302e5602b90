"""Checks that the stand-in Parliament API and SMTP sink behave like the real services."""

from __future__ import annotations

import asyncio
import json
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import pytest

from smtp_server import SmtpFault, SmtpSink
from standin_api import (
    RESULTS_2024,
    StandinApi,
    list_view,
    load_2024_records,
    load_member_sample,
)

QUESTIONS = "/api/writtenquestions/questions"
HOLDING_ID = 1281317  # a holding answer of 1 Feb 2021 in the recorded list


@pytest.fixture
def api() -> Iterator[StandinApi]:
    with StandinApi.from_fixtures() as server:
        yield server


@pytest.fixture
def client(api: StandinApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=5.0) as http:
        yield http


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def _all_pages(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = []
    skip = 0
    while True:
        response = client.get(QUESTIONS, params={**params, "take": 100, "skip": skip})
        response.raise_for_status()
        body = response.json()
        values.extend(item["value"] for item in body["results"])
        skip += 100
        if skip >= body["totalResults"]:
            return values


def _total(client: httpx.Client, **params: Any) -> int:
    total: int = client.get(QUESTIONS, params=params).json()["totalResults"]
    return total


# -- Parliament API stand-in: data ------------------------------------------------------------


def test_paging_returns_every_record_exactly_once(api: StandinApi, client: httpx.Client) -> None:
    ids = [v["id"] for v in _all_pages(client, answeredWhenFrom="2021-02-01")]
    assert len(ids) == len(set(ids)) == 469
    assert set(ids) == api.ids()
    assert ids != sorted(ids) and ids != sorted(ids, reverse=True)
    assert [path for _, path in api.requests][2] == (
        f"{QUESTIONS}?answeredWhenFrom=2021-02-01&take=100&skip=200"
    )


def test_default_take_links_and_expand_member(client: httpx.Client) -> None:
    plain = client.get(QUESTIONS).json()
    assert len(plain["results"]) == 20
    item = plain["results"][0]
    assert item["links"] == [
        {"rel": "self", "href": f"/Questions/{item['value']['id']}", "method": "GET"}
    ]
    assert item["value"]["askingMember"] is None
    expanded = client.get(QUESTIONS, params={"expandMember": "true", "take": 1}).json()
    value = expanded["results"][0]["value"]
    assert value["askingMember"]["id"] == value["askingMemberId"]


def test_filters_on_dates_house_and_status() -> None:
    with (
        StandinApi.from_fixtures("tabled_2021") as api,
        httpx.Client(base_url=api.base_url) as client,
    ):
        on_4th = sum(1 for r in api.records() if (r["dateAnswered"] or "").startswith("2021-02-04"))
        assert on_4th > 100
        assert _total(client, answeredWhenFrom="2021-02-04", answeredWhenTo="2021-02-04") == on_4th
        assert _total(client, tabledWhenFrom="2021-02-01", tabledWhenTo="2021-02-01") == 520
        assert _total(client, tabledWhenFrom="2021-02-02") == 0
        assert _total(client, correctedWhenFrom="2021-02-01", correctedWhenTo="2021-02-28") == 4
        assert _total(client, answered="Unanswered") == 7
        assert _total(client, house="Lords") == 131
        assert _total(client, house="Bicameral") == 520
        assert client.get(QUESTIONS, params={"tabledWhenFrom": "01/02/2021"}).status_code == 400


def test_list_view_reproduces_the_recorded_list_texts() -> None:
    recorded = {
        item["value"]["id"]: item["value"] for item in json.loads(RESULTS_2024.read_bytes())
    }
    full = load_2024_records(full_text_only=True)
    assert len(full) == 223
    for record in full:
        shown = list_view(record)
        assert shown["questionText"] == recorded[record["id"]]["questionText"]
        assert shown["answerText"] == recorded[record["id"]]["answerText"]


def test_list_texts_are_cut_and_detail_has_full_html() -> None:
    records = load_2024_records(full_text_only=True)
    long = max(records, key=lambda r: len(r["questionText"]) + len(r["answerText"]))
    assert len(long["questionText"]) > 255 and len(long["answerText"]) > 1000
    with StandinApi(records) as api, httpx.Client(base_url=api.base_url) as client:
        listed = {v["id"]: v for v in _all_pages(client)}[long["id"]]
        assert listed["questionText"] == long["questionText"][:255]
        assert len(listed["answerText"]) == 258 and listed["answerText"].endswith("...")
        assert "<" not in listed["answerText"]
        detail = client.get(f"{QUESTIONS}/{long['id']}", params={"expandMember": "true"}).json()
        assert detail["value"]["questionText"] == long["questionText"]
        assert detail["value"]["answerText"] == long["answerText"]
        assert detail["value"]["answerText"].startswith("<p>")


def test_detail_of_2021_record_unknown_id_and_uin_route(client: httpx.Client) -> None:
    value = client.get(f"{QUESTIONS}/{HOLDING_ID}").json()["value"]
    assert (
        value["answerText"].startswith("<p>The Department of Health") and value["answerIsHolding"]
    )
    assert client.get(f"{QUESTIONS}/99").status_code == 404
    by_uin = client.get(f"{QUESTIONS}/2021-01-27/144866").json()["value"]
    assert by_uin["id"] == HOLDING_ID


def test_records_can_change_between_polls(api: StandinApi, client: httpx.Client) -> None:
    api.update(
        HOLDING_ID,
        answerIsHolding=False,
        dateAnswered="2021-02-08T00:00:00",
        answerText="<p>Test and Trace emails are checked before sending.</p>",
    )
    moved = _all_pages(client, answeredWhenFrom="2021-02-08", answeredWhenTo="2021-02-08")
    assert [v["id"] for v in moved] == [HOLDING_ID]
    assert _total(client, answeredWhenFrom="2021-02-01", answeredWhenTo="2021-02-01") == 468
    with pytest.raises(ValueError):
        api.add({"id": HOLDING_ID})
    with pytest.raises(KeyError):
        api.replace({"id": 1})


def test_members_search_mimics_the_real_shape(client: httpx.Client) -> None:
    body = client.get("/api/Members/Search", params={"Name": "whately"}).json()
    assert body["totalResults"] == 1
    derived = body["items"][0]
    assert derived["value"]["nameDisplayAs"] == "Helen Whately"
    assert derived["value"]["latestHouseMembership"]["house"] == 1
    sample = load_member_sample()[0]
    assert derived.keys() == sample.keys()
    for key in ("value",):
        assert derived[key].keys() == sample[key].keys()
    for key in ("latestParty", "latestHouseMembership"):
        assert derived["value"][key].keys() == sample["value"][key].keys()
    starmer = client.get("/api/Members/Search", params={"Name": "Starmer"}).json()
    assert starmer["items"] == [sample]


async def test_async_client_fetches_pages_concurrently(api: StandinApi) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=5.0) as client:
        pages = await asyncio.gather(
            *(client.get(QUESTIONS, params={"take": 100, "skip": s}) for s in range(0, 469, 100))
        )
    ids = [item["value"]["id"] for page in pages for item in page.json()["results"]]
    assert sorted(ids) == sorted(api.ids())


# -- Parliament API stand-in: faults ----------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429, 404])
def test_status_fault_then_recovery(api: StandinApi, client: httpx.Client, status: int) -> None:
    rule = api.fail_next("list", status, retry_after=1)
    failed = client.get(QUESTIONS)
    assert failed.status_code == status and failed.headers["Retry-After"] == "1"
    assert client.get(QUESTIONS).status_code == 200
    assert rule.hits == 1 and rule.spent


def test_hang_times_out_the_client_and_stop_is_prompt(api: StandinApi) -> None:
    api.fail_next("detail", "hang")
    with httpx.Client(base_url=api.base_url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{QUESTIONS}/{HOLDING_ID}")
        assert client.get(QUESTIONS).status_code == 200
    started = time.monotonic()
    api.stop()
    assert time.monotonic() - started < 2


def test_broken_json(api: StandinApi, client: httpx.Client) -> None:
    api.fail_next("list", "broken_json")
    response = client.get(QUESTIONS)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize("kind", ["truncated", "drop"])
def test_connection_faults(api: StandinApi, client: httpx.Client, kind: str) -> None:
    api.fail_next("detail", kind)  # type: ignore[arg-type]
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{QUESTIONS}/{HOLDING_ID}")
    assert client.get(f"{QUESTIONS}/{HOLDING_ID}").status_code == 200


def test_delay_fault_answers_late(api: StandinApi, client: httpx.Client) -> None:
    api.fail_next("list", "delay", seconds=0.2)
    started = time.monotonic()
    assert client.get(QUESTIONS).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_faults_target_one_page_or_a_path(api: StandinApi, client: httpx.Client) -> None:
    api.fail_next("list", 503, skip=200)
    api.fail_next("/api/members", 500, count=None)
    statuses = [
        client.get(QUESTIONS, params={"take": 100, "skip": skip}).status_code
        for skip in range(0, 500, 100)
    ]
    assert statuses == [200, 200, 503, 200, 200]
    assert client.get(f"{QUESTIONS}/{HOLDING_ID}").status_code == 200
    assert client.get("/api/Members/Search").status_code == 500
    assert client.get("/api/Members/Search").status_code == 500


# -- SMTP sink -------------------------------------------------------------------------------


def _message(*recipients: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "alerts@alertd.test"
    message["To"] = ", ".join(recipients or ("reader@example.test",))
    message["Subject"] = "Written answers: 3 new — £1bn"
    message.set_content("Plain body\n")
    return message


async def _send(sink: SmtpSink, *recipients: str, **kwargs: Any) -> Any:
    kwargs.setdefault("timeout", 5.0)
    return await aiosmtplib.send(
        _message(*recipients), hostname=sink.host, port=sink.port, **kwargs
    )


def test_smtplib_delivery_is_recorded(sink: SmtpSink) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.send_message(_message())
    [received] = sink.messages
    assert received.mail_from == "alerts@alertd.test"
    assert received.rcpt_tos == ["reader@example.test"]
    assert received.subject == "Written answers: 3 new — £1bn"
    assert received.message.get_content() == "Plain body\n"
    assert b"Subject:" in received.raw
    sink.reset()
    assert sink.messages == [] and sink.events == []


async def test_aiosmtplib_delivery_and_per_recipient_rejection(sink: SmtpSink) -> None:
    sink.reject_recipient("gone@example.test")
    errors, _ = await _send(sink, "gone@example.test", "reader@example.test")
    assert errors["gone@example.test"].code == 550
    assert sink.wait_for_messages(1)[0].rcpt_tos == ["reader@example.test"]
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await _send(sink, "gone@example.test")
    assert [r.code for r in refused.value.recipients] == [550]


@pytest.mark.parametrize("code", [451, 552, 421])
async def test_rcpt_reply_codes(sink: SmtpSink, code: int) -> None:
    sink.fail_rcpt(code=code)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await _send(sink)
    assert refused.value.recipients[0].code == code
    await _send(sink)
    assert len(sink.messages) == 1


@pytest.mark.parametrize("code", [451, 550, 554])
async def test_data_reply_codes(sink: SmtpSink, code: int) -> None:
    sink.fail_data(code, "5.6.0 Bad content" if code == 554 else None)
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await _send(sink)
    assert failed.value.code == code
    assert sink.messages == []
    assert sink.events[-1].outcome.startswith(str(code))


async def test_421_closes_the_connection(sink: SmtpSink) -> None:
    sink.fail_next("data", "421 4.3.2 Service shutting down")
    client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=5.0)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await client.send_message(_message())
    assert failed.value.code == 421
    assert not client.is_connected
    assert sink.events[-1].outcome.startswith("421")


async def test_dropped_connection_mid_data(sink: SmtpSink) -> None:
    sink.drop_next("data")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await _send(sink)
    assert sink.messages == []


async def test_stall_times_out_the_client(sink: SmtpSink) -> None:
    sink.stall_next("rcpt", 5.0)
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await _send(sink, timeout=0.3)
    sink.add_fault(SmtpFault("data", stall=0.1))
    await _send(sink)
    assert len(sink.messages) == 1


def test_smtplib_sees_fault_codes(sink: SmtpSink) -> None:
    sink.fail_next("rcpt", "550 5.1.1 No such user")
    sink.fail_next("data", "451 4.7.1 Try later")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(_message())
        with pytest.raises(smtplib.SMTPDataError) as failed:
            client.send_message(_message())
        assert failed.value.smtp_code == 451
        client.send_message(_message())
    assert len(sink.messages) == 1


async def test_auth_when_configured() -> None:
    with SmtpSink(auth=("alertd", "s3cret")) as sink:
        await _send(sink, username="alertd", password="s3cret")
        assert sink.messages[0].login == "alertd"
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await _send(sink)
        assert refused.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await _send(sink, username="alertd", password="wrong")


def test_standins_serve_another_process(api: StandinApi, sink: SmtpSink) -> None:
    script = f"""
import json, smtplib, urllib.request
url = "{api.base_url}{QUESTIONS}?take=1"
with urllib.request.urlopen(url, timeout=5) as response:
    total = json.load(response)["totalResults"]
with smtplib.SMTP("{sink.host}", {sink.port}, timeout=5) as client:
    client.sendmail("a@alertd.test", ["b@example.test"], f"Subject: {{total}}\\r\\n\\r\\nhi\\r\\n")
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert sink.wait_for_messages(1)[0].subject == "469"
