"""The pipeline end to end, in process: stand-in API → SQLite/PostgreSQL → Maildir or SMTP."""

from __future__ import annotations

import asyncio
import mailbox
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, col, select

from alertd.config import Settings
from alertd.db import open_database
from alertd.digests.render import build_environment
from alertd.listing import list_alerts
from alertd.mail.transports import mailer_factory
from alertd.models import Item, Ledger, Outbox, OutboxState, SourceState, Subscriber
from alertd.pipeline import Runtime, run_once
from alertd.subscriptions import lifecycle
from alertd.web import serve_web
from alertd.web.server import metrics_app

from smtp_server import SmtpSink
from standin_api import StandinApi

pytestmark = pytest.mark.slow
# The recorded answers were all answered on Monday 1 February 2021.
MONDAY_EVENING = datetime(2021, 2, 1, 19, 0, tzinfo=UTC)
SEN_QUESTION = 1279581
HYWEL_WILLIAMS = 1397  # asked 4 of the recorded questions; one has a holding answer
HOLDING_OF_HYWEL = 1280713


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], standin_api: StandinApi, database_url: str
) -> Settings:
    return make_settings(
        database={"url": database_url},
        parliament={"base_url": standin_api.base_url, "lookback_days": 1},
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    engine = open_database(settings.database)
    mailer = mailer_factory("maildir", settings.mail.maildir, settings.smtp)
    yield Runtime(settings, engine, mailer, build_environment())
    engine.dispose()


def smtp_runtime(settings: Settings, sink: SmtpSink) -> Runtime:
    """A runtime sending through the in-process SMTP server."""
    smtp = settings.smtp.model_copy(update={"host": sink.host, "port": sink.port})
    mail = settings.mail.model_copy(update={"delivery": "smtp"})
    settings = settings.model_copy(update={"smtp": smtp, "mail": mail})
    engine = open_database(settings.database)
    return Runtime(settings, engine, mailer_factory("smtp", Path("."), smtp), build_environment())


def _delivery_order(key: str) -> tuple[int, int, int]:
    # Maildir keys are "<seconds>.M<microseconds>P<pid>Q<count>.<host>", not zero-padded.
    seconds, _, rest = key.partition(".M")
    micros, _, rest = rest.partition("P")
    count = rest.partition("Q")[2].partition(".")[0]
    return int(seconds), int(micros), int(count or 0)


def _maildir(settings: Settings) -> list[EmailMessage]:
    box = mailbox.Maildir(settings.mail.maildir, create=True)
    messages = []
    for key in sorted(box.keys(), key=_delivery_order):
        parsed = message_from_bytes(box.get_bytes(key), policy=default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def _subscribe(runtime: Runtime, email: str, query: str, **kwargs: Any) -> int:
    kwargs.setdefault("frequency", "immediate")
    kwargs.setdefault("confirmed", True)
    kwargs.setdefault("now", MONDAY_EVENING - timedelta(hours=1))
    alert = lifecycle.subscribe(runtime.engine, email, query, **kwargs)
    assert alert.id is not None
    return alert.id


async def test_keyword_and_member_alerts_get_one_digest_each(runtime: Runtime) -> None:
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    _subscribe(runtime, "researcher@example.org", f"member:{HYWEL_WILLIAMS}")
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.errors == []
    assert report.new_items == 469
    messages = {str(m["To"]): m for m in _maildir(runtime.settings)}
    assert set(messages) == {"parent@example.org", "researcher@example.org"}
    parent = _text(messages["parent@example.org"])
    assert parent.count("Read it in full") == 1
    assert "Special Educational Needs: Coronavirus" in parent
    researcher = _text(messages["researcher@example.org"])
    assert researcher.count("Read it in full") == 3
    assert messages["researcher@example.org"]["Subject"].startswith("3 new answers:")


async def test_second_run_sends_nothing(runtime: Runtime) -> None:
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    await run_once(runtime, now=MONDAY_EVENING)
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(minutes=30))
    assert (report.new_items, report.hits, report.digests_queued, report.sent) == (0, 0, 0, 0)
    assert len(_maildir(runtime.settings)) == 1


async def test_holding_answer_then_substantive_answer_is_sent_once(
    runtime: Runtime, standin_api: StandinApi
) -> None:
    _subscribe(runtime, "researcher@example.org", f"member:{HYWEL_WILLIAMS}")
    await run_once(runtime, now=MONDAY_EVENING)
    [mailed] = _maildir(runtime.settings)
    first = _text(mailed)
    holding = standin_api.get(HOLDING_OF_HYWEL)
    assert holding is not None
    # His other three answers are on motor vehicles: nothing of the holding answer is mailed.
    assert first.count("Read it in full") == 3
    assert holding["heading"] not in first
    assert f"Commons {holding['uin']}" not in first

    standin_api.replace(
        {
            **holding,
            "answerIsHolding": False,
            "dateAnswered": "2021-02-02T00:00:00",
            "answerText": "<p>The substantive answer follows the holding one.</p>",
        }
    )
    tuesday = MONDAY_EVENING + timedelta(days=1)
    report = await run_once(runtime, now=tuesday)
    assert (report.new_items, report.sent) == (1, 1)
    second = _text(_maildir(runtime.settings)[1])
    assert "The substantive answer follows the holding one." in second
    await run_once(runtime, now=tuesday + timedelta(hours=1))
    assert len(_maildir(runtime.settings)) == 2


async def test_one_answer_matching_two_alerts_is_mailed_once(runtime: Runtime) -> None:
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    _subscribe(runtime, "parent@example.org", "special needs coronavirus")
    await run_once(runtime, now=MONDAY_EVENING)
    (message,) = _maildir(runtime.settings)
    text = _text(message)
    assert text.count("Special Educational Needs: Coronavirus") == 1
    assert "Also matches: special needs coronavirus" in text
    with Session(runtime.engine) as session:
        assert len(session.exec(select(Ledger)).all()) == 1


async def test_unconfirmed_and_unsubscribed_alerts_get_nothing(runtime: Runtime) -> None:
    _subscribe(runtime, "pending@example.org", '"special educational needs"', confirmed=False)
    stopped = _subscribe(runtime, "gone@example.org", '"special educational needs"')
    lifecycle.stop_alert(runtime.engine, stopped, MONDAY_EVENING - timedelta(minutes=5))
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.hits == 0 and _maildir(runtime.settings) == []


async def test_alert_confirmed_after_ingest_is_not_flooded(runtime: Runtime) -> None:
    await run_once(runtime, now=MONDAY_EVENING)
    _subscribe(runtime, "late@example.org", "education", now=MONDAY_EVENING + timedelta(hours=1))
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(hours=2))
    assert report.hits == 0 and _maildir(runtime.settings) == []


async def test_daily_digest_waits_for_daily_at(runtime: Runtime) -> None:
    _subscribe(runtime, "parent@example.org", '"special educational needs"', frequency="daily")
    # A run after 07:00 London time composes that day's daily digests (none yet here).
    await run_once(runtime, now=MONDAY_EVENING - timedelta(minutes=50), poll=False)
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.hits == 1 and report.sent == 0
    report = await run_once(runtime, now=datetime(2021, 2, 2, 7, 1, tzinfo=UTC))
    assert report.sent == 1
    report = await run_once(runtime, now=datetime(2021, 2, 2, 9, 0, tzinfo=UTC))
    assert report.sent == 0
    assert len(_maildir(runtime.settings)) == 1


async def test_the_first_run_on_a_new_database_sends_no_daily_or_weekly_digest(
    runtime: Runtime,
) -> None:
    _subscribe(runtime, "d@example.org", '"special educational needs"', frequency="daily")
    _subscribe(runtime, "w@example.org", '"special educational needs"', frequency="weekly")
    # A Monday evening: both periods began before alertd's first run; neither is late.
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.hits == 2 and report.digests_queued == 0 and report.sent == 0
    # Each goes at its own scheduled time: the daily on Tuesday at 07:00, the weekly later.
    report = await run_once(runtime, now=datetime(2021, 2, 2, 7, 1, tzinfo=UTC), poll=False)
    assert report.sent == 1
    assert [message["To"] for message in _maildir(runtime.settings)] == ["d@example.org"]


async def test_polls_allow_a_minute_of_jitter_and_on_demand_always_polls(
    runtime: Runtime,
) -> None:
    interval = timedelta(minutes=runtime.settings.parliament.poll_interval_minutes)
    assert (await run_once(runtime, now=MONDAY_EVENING)).polled
    # Cron at the poll interval, started 50 s early: not skipped.
    early = MONDAY_EVENING + interval - timedelta(seconds=50)
    assert (await run_once(runtime, now=early)).polled
    # A scheduled run half an interval later is (another worker's poll was enough) ...
    half = early + interval / 2
    assert not (await run_once(runtime, now=half)).polled
    # ... but one asked for (alertd run --once) polls.
    assert (await run_once(runtime, now=half, on_demand=True)).polled


async def test_failed_poll_keeps_high_water_and_recovers(
    runtime: Runtime, standin_api: StandinApi
) -> None:
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    standin_api.fail_next("list", 500)
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.new_items == 0 and len(report.errors) == 1
    assert standin_api.base_url in report.errors[0]
    with Session(runtime.engine) as session:
        state = session.get(SourceState, "parliament")
        assert state is not None and state.high_water is None and state.last_error
        assert session.exec(select(Item)).all() == []
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(minutes=30))
    assert report.errors == [] and report.new_items == 469 and report.sent == 1


async def test_failed_detail_fetch_stores_nothing_partial(
    runtime: Runtime, standin_api: StandinApi
) -> None:
    standin_api.fail_next(f"/api/writtenquestions/questions/{SEN_QUESTION}", "broken_json")
    standin_api.fail_next(f"/api/writtenquestions/questions/{HOLDING_OF_HYWEL}", 503)
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert len(report.errors) == 1
    with Session(runtime.engine) as session:
        state = session.get(SourceState, "parliament")
        assert state is not None and state.high_water is None
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(minutes=30))
    assert report.errors == [] and report.new_items == 469


async def test_smtp_delivery_and_retry_after_451(settings: Settings, smtp_sink: SmtpSink) -> None:
    smtp = settings.smtp.model_copy(update={"host": smtp_sink.host, "port": smtp_sink.port})
    engine = open_database(settings.database)
    runtime = Runtime(
        settings, engine, mailer_factory("smtp", Path("."), smtp), build_environment()
    )
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    _subscribe(runtime, "other@example.org", "coronavirus vaccine")
    smtp_sink.fail_rcpt("parent@example.org", 451)
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert (report.sent, report.deferred) == (1, 1)
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["other@example.org"]]
    with Session(engine) as session:
        retry = session.exec(select(Outbox).where(Outbox.status == OutboxState.RETRY)).one()
        assert retry.recipient == "parent@example.org" and retry.attempts == 1
    # Not due yet: nothing is sent again a minute later.
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(minutes=1))
    assert report.sent == 0
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(hours=1))
    assert report.sent == 1
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == [
        "other@example.org",
        "parent@example.org",
    ]
    engine.dispose()


async def test_permanent_rejections_suspend_after_max_bounces(
    settings: Settings, smtp_sink: SmtpSink, standin_api: StandinApi
) -> None:
    smtp = settings.smtp.model_copy(update={"host": smtp_sink.host, "port": smtp_sink.port})
    settings = settings.model_copy(
        update={"delivery": settings.delivery.model_copy(update={"max_bounces": 1})}
    )
    engine = open_database(settings.database)
    runtime = Runtime(
        settings, engine, mailer_factory("smtp", Path("."), smtp), build_environment()
    )
    _subscribe(runtime, "nobody@example.org", '"special educational needs"')
    smtp_sink.fail_rcpt("nobody@example.org", 550)
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.rejected == 1
    with Session(engine) as session:
        subscriber = session.exec(select(Subscriber)).one()
        assert subscriber.suspended_at is not None
        assert session.exec(select(Outbox)).one().status == OutboxState.DEAD
        assert session.exec(select(Item).where(col(Item.matched_at).is_(None))).all() == []
    rows = list_alerts(engine)
    assert rows[0].suspended
    engine.dispose()


async def test_corrected_answer_goes_once_to_those_sent_the_original(
    runtime: Runtime, standin_api: StandinApi
) -> None:
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    await run_once(runtime, now=MONDAY_EVENING)
    # Subscribed after the original went out: the correction is not news to send them.
    _subscribe(
        runtime,
        "late@example.org",
        '"special educational needs"',
        now=MONDAY_EVENING + timedelta(hours=1),
    )
    original = standin_api.get(SEN_QUESTION)
    assert original is not None
    standin_api.replace(
        {
            **original,
            "answerIsCorrection": True,
            "dateAnswerCorrected": "2021-02-03T00:00:00",
            "answerText": "<p>The corrected figure is 12,000, not 1,200.</p>",
        }
    )
    wednesday = MONDAY_EVENING + timedelta(days=2)
    report = await run_once(runtime, now=wednesday)
    assert (report.new_items, report.sent) == (1, 1)
    messages = _maildir(runtime.settings)
    assert [str(m["To"]) for m in messages] == ["parent@example.org", "parent@example.org"]
    corrected = _text(messages[1])
    assert "Corrected answer" in corrected
    assert "The corrected figure is 12,000" in corrected
    await run_once(runtime, now=wednesday + timedelta(hours=1))
    assert len(_maildir(runtime.settings)) == 2
    with Session(runtime.engine) as session:
        versions = session.exec(
            select(Ledger.version).where(Ledger.source_id == str(SEN_QUESTION))
        ).all()
        assert sorted(versions) == [1, 2]


@pytest.mark.parametrize("fault", [500, 429, "hang", "broken_json", "truncated", "drop"])
async def test_a_failing_page_stores_nothing_and_sending_carries_on(
    runtime: Runtime, standin_api: StandinApi, caplog: pytest.LogCaptureFixture, fault: int | str
) -> None:
    parliament = runtime.settings.parliament.model_copy(update={"timeout_s": 1.0})
    runtime.settings = runtime.settings.model_copy(update={"parliament": parliament})
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    await run_once(runtime, now=MONDAY_EVENING - timedelta(hours=1, minutes=30), poll=False)
    # A digest queued earlier and not yet sent (the server said "later").
    with Session(runtime.engine) as session:
        subscriber = session.exec(select(Subscriber)).one()
        assert subscriber.id is not None
        session.add(
            Outbox(
                subscriber_id=subscriber.id,
                recipient=subscriber.email,
                message_id="<queued@alertd.test>",
                message=b"Subject: x\r\n\r\nx\r\n",
                created_at=MONDAY_EVENING,
                next_attempt_at=MONDAY_EVENING,
            )
        )
        session.commit()
    # Page 3 of 5 of the listing fails: pages 1 and 2 must not count as seen.
    standin_api.fail_next("list", fault, skip=200, seconds=5.0)
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert len(report.errors) == 1 and standin_api.base_url in report.errors[0]
    assert report.sent == 1
    failures = [
        r for r in caplog.records if r.name == "alertd.pipeline" and "poll failed" in r.message
    ]
    assert len(failures) == 1 and standin_api.base_url in failures[0].getMessage()
    with Session(runtime.engine) as session:
        assert session.exec(select(Item)).all() == []
        state = session.get(SourceState, "parliament")
        assert state is not None and state.high_water is None
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(minutes=30))
    assert report.errors == [] and report.new_items == 469 and report.sent == 1


async def test_metrics_move_after_a_run(runtime: Runtime) -> None:
    _subscribe(runtime, "parent@example.org", '"special educational needs"')
    await run_once(runtime, now=MONDAY_EVENING)
    # The loopback listener's app (web.metrics_port), as serve_web runs it.
    app = metrics_app(runtime.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as web:
        response = await web.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("alertd_items_ingested_total", (("source", "parliament"),))] == 469
    assert samples[("alertd_matches_total", ())] == 1
    assert samples[("alertd_digests_total", (("outcome", "sent"),))] == 1
    assert samples[("alertd_polls_total", (("outcome", "ok"), ("source", "parliament")))] == 1
    assert samples[("alertd_run_seconds_count", ())] == 1


async def test_under_alertd_run_a_sign_up_wakes_the_runtimes_sender(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    # As `alertd run` serves it: the web app shares the runtime's sender, which is woken by
    # the queued confirmation at once, not at the next send job.
    runtime = smtp_runtime(settings, smtp_sink)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    serving = asyncio.create_task(
        serve_web(
            runtime.settings, runtime.engine, runtime.stopping, sock=sock, sender=runtime.sender
        )
    )
    form = {"email": "new@example.org", "follow": "topic", "query": "visas", "step": "subscribe"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as web:
        for _ in range(100):
            try:
                await web.get("/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        assert (await web.post("/signup", data=form)).status_code == 200
    [mail] = await asyncio.to_thread(smtp_sink.wait_for_messages, 1, 5.0)
    runtime.stopping.set()
    await serving
    sock.close()
    runtime.engine.dispose()
    assert mail.subject == "Confirm your alert" and mail.rcpt_tos == ["new@example.org"]
