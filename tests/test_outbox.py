"""Sending the outbox through a real SMTP server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import DatabaseSettings, DeliverySettings, Settings, SmtpSettings
from alertd.db import open_database, transaction
from alertd.mail.outbox import claim_due, renew_lease, wall_clock
from alertd.mail.sender import DeliveryReport, DrainOptions, Sender, drain_outbox
from alertd.mail.transports import mailer_factory
from alertd.models import Alert, Outbox, OutboxState, Subscriber
from alertd.subscriptions import lifecycle
from alertd.web import serve_web

from queued_digests import digest_state, pending_hits, queue_digest
from smtp_server import SmtpSink
from waiting import wait_until_async

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_database(DatabaseSettings(url=database_url))
    yield engine
    engine.dispose()


def _queue(engine: Engine, *recipients: str) -> list[int]:
    ids = []
    with transaction(engine) as session:
        for n, recipient in enumerate(recipients):
            subscriber = session.exec(
                select(Subscriber).where(Subscriber.email == recipient)
            ).first() or Subscriber(email=recipient, created_at=NOW)
            session.add(subscriber)
            session.flush()
            assert subscriber.id is not None
            message = EmailMessage()
            message["To"], message["Subject"] = recipient, f"digest {n}"
            message["Message-ID"] = f"<digest-{n}@alertd.test>"
            message.set_content("hello")
            row = Outbox(
                subscriber_id=subscriber.id,
                recipient=recipient,
                message_id=str(message["Message-ID"]),
                message=message.as_bytes(),
                created_at=NOW,
                next_attempt_at=NOW,
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            ids.append(row.id)
    return ids


async def _drain(
    engine: Engine,
    sink: SmtpSink | None,
    *,
    connections: int = 1,
    timeout_s: float = 5.0,
    now: datetime = NOW,
    stopping: asyncio.Event | None = None,
    port: int | None = None,
    messages_per_connection: int = 100,
) -> DeliveryReport:
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=port or (sink.port if sink else 1),
        timeout_s=timeout_s,
        messages_per_connection=messages_per_connection,
    )
    options = DrainOptions(
        sender_for=lambda _id, _kind: "alerts@alertd.test",
        delivery=DeliverySettings(),
        connections=connections,
        worker_id="test-worker",
    )
    return await drain_outbox(
        engine, mailer_factory("smtp", Path("."), smtp), options, now=now, stopping=stopping
    )


def _statuses(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        return {row.recipient: row.status for row in session.exec(select(Outbox)).all()}


async def test_pool_sends_each_digest_exactly_once(engine: Engine, smtp_sink: SmtpSink) -> None:
    recipients = [f"reader{n}@example.org" for n in range(40)]
    _queue(engine, *recipients)
    report = await _drain(engine, smtp_sink, connections=4)
    assert report.sent == 40 and report.halted is None
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(recipients)
    assert set(_statuses(engine).values()) == {OutboxState.SENT}
    assert (await _drain(engine, smtp_sink, connections=4)).sent == 0


@pytest.mark.parametrize(
    ("fault", "status", "outcome"),
    [
        (("rcpt", "451 4.7.1 Try later"), OutboxState.RETRY, "deferred"),
        (("rcpt", "552 5.2.2 Mailbox full"), OutboxState.RETRY, "deferred"),
        (("rcpt", "421 4.3.2 Shutting down"), OutboxState.RETRY, "deferred"),
        (("rcpt", "550 5.1.1 No such user"), OutboxState.DEAD, "rejected"),
        (("data", "451 4.3.0 Try later"), OutboxState.RETRY, "deferred"),
        (("data", "554 5.6.0 Message rejected"), OutboxState.DEAD, "rejected"),
    ],
)
async def test_recipient_failures_are_classified(
    engine: Engine, smtp_sink: SmtpSink, fault: tuple[str, str], status: str, outcome: str
) -> None:
    _queue(engine, "unlucky@example.org", "fine@example.org")
    stage, reply = fault
    smtp_sink.fail_next(stage, reply, address="unlucky@example.org")  # type: ignore[arg-type]
    report = await _drain(engine, smtp_sink)
    assert report.sent == 1 and getattr(report, outcome) == 1 and report.halted is None
    assert _statuses(engine) == {
        "unlucky@example.org": status,
        "fine@example.org": OutboxState.SENT,
    }
    with Session(engine) as session:
        subscriber = session.exec(
            select(Subscriber).where(Subscriber.email == "unlucky@example.org")
        ).one()
        assert subscriber.consecutive_bounces == (1 if status == OutboxState.DEAD else 0)


async def test_dropped_connection_mid_data_is_retried(engine: Engine, smtp_sink: SmtpSink) -> None:
    _queue(engine, "a@example.org", "b@example.org")
    smtp_sink.drop_next("data")
    report = await _drain(engine, smtp_sink)
    assert (report.deferred, report.sent) == (1, 1)
    retry = await _drain(engine, smtp_sink, now=NOW + timedelta(hours=1))
    assert retry.sent == 1
    # The retried message is the stored one: same Message-ID as queued.
    received = {m.rcpt_tos[0]: str(m.message["Message-ID"]) for m in smtp_sink.messages}
    assert received == {
        "a@example.org": "<digest-0@alertd.test>",
        "b@example.org": "<digest-1@alertd.test>",
    }


@pytest.mark.slow
async def test_stalled_server_times_out_and_is_retried(engine: Engine, smtp_sink: SmtpSink) -> None:
    _queue(engine, "a@example.org")
    smtp_sink.stall_next("data", 3.0)
    report = await _drain(engine, smtp_sink, timeout_s=0.5)
    assert report.deferred == 1 and _statuses(engine) == {"a@example.org": OutboxState.RETRY}


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("mail", "530 5.7.0 Authentication required"),
        ("mail", "553 5.7.1 Sender refused"),
        ("rcpt", "550 5.7.1 Relaying denied"),
    ],
)
async def test_operator_errors_stop_the_batch(
    engine: Engine, smtp_sink: SmtpSink, stage: str, reply: str
) -> None:
    _queue(engine, "a@example.org", "b@example.org", "c@example.org")
    smtp_sink.fail_next(stage, reply, count=None)  # type: ignore[arg-type]
    report = await _drain(engine, smtp_sink)
    assert report.halted and reply.split()[0] in report.halted
    assert report.sent == report.rejected == report.deferred == 0
    # Nobody's digest was burned: all are due again at once, no bounce counted.
    assert set(_statuses(engine).values()) == {OutboxState.PENDING}
    with Session(engine) as session:
        bounces = session.exec(select(Subscriber.consecutive_bounces)).all()
        assert set(bounces) == {0}


async def test_unreachable_server_keeps_everything_pending(engine: Engine) -> None:
    _queue(engine, "a@example.org", "b@example.org")
    report = await _drain(engine, None, port=1)
    assert report.halted and "cannot connect" in report.halted
    assert set(_statuses(engine).values()) == {OutboxState.PENDING}


async def test_retries_give_up_after_retry_for_hours(engine: Engine, smtp_sink: SmtpSink) -> None:
    _queue(engine, "a@example.org")
    smtp_sink.fail_rcpt("a@example.org", 451, count=None)
    await _drain(engine, smtp_sink)
    assert _statuses(engine) == {"a@example.org": OutboxState.RETRY}
    await _drain(engine, smtp_sink, now=NOW + timedelta(hours=73))
    assert _statuses(engine) == {"a@example.org": OutboxState.DEAD}


async def test_stop_request_takes_no_new_digest(engine: Engine, smtp_sink: SmtpSink) -> None:
    _queue(engine, "a@example.org", "b@example.org")
    stopping = asyncio.Event()
    stopping.set()
    report = await _drain(engine, smtp_sink, stopping=stopping)
    assert report.sent == 0 and set(_statuses(engine).values()) == {OutboxState.PENDING}


def _claimed_ids(engine: Engine, owner: str) -> list[int]:
    return [row.id for row in claim_due(engine, now=NOW, limit=10, lease_s=60, owner=owner)]


def test_claims_take_lost_leases_then_retries_then_the_oldest_pending(engine: Engine) -> None:
    ids = _queue(engine, *(f"r{n}@example.org" for n in range(6)))
    early, late = NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    states = [
        (OutboxState.PENDING, NOW, None),  # due
        (OutboxState.PENDING, early, None),  # due, and waiting longer
        (OutboxState.PENDING, late, None),  # not due yet
        (OutboxState.RETRY, early, None),  # due
        (OutboxState.SENDING, NOW, wall_clock() - timedelta(seconds=1)),  # its worker died
        (OutboxState.SENDING, NOW, wall_clock() + timedelta(hours=1)),  # being sent
    ]
    with transaction(engine) as session:
        for row_id, (status, due_at, lease_until) in zip(ids, states, strict=True):
            row = session.get(Outbox, row_id)
            assert row is not None
            row.status, row.next_attempt_at, row.lease_until = status, due_at, lease_until
            row.lease_owner = "someone" if lease_until else None
            session.add(row)
    first = claim_due(engine, now=NOW, limit=3, lease_s=60, owner="me")
    assert [row.id for row in first] == [ids[4], ids[3], ids[1]]
    assert [row.id for row in claim_due(engine, now=NOW, limit=3, lease_s=60, owner="me")] == [
        ids[0]
    ]


def test_expired_lease_is_claimed_again(engine: Engine) -> None:
    (row_id,) = _queue(engine, "a@example.org")
    assert _claimed_ids(engine, "dead-worker") == [row_id]
    assert _claimed_ids(engine, "other") == []
    with transaction(engine) as session:
        row = session.get(Outbox, row_id)
        assert row is not None and row.lease_until is not None
        row.lease_until = row.lease_until - timedelta(minutes=2)
    assert _claimed_ids(engine, "other") == [row_id]
    with Session(engine) as session:
        owners = session.exec(select(Outbox.lease_owner).where(col(Outbox.id) == row_id)).all()
        assert owners == ["other"]


def _options(connections: int = 1) -> DrainOptions:
    return DrainOptions(
        sender_for=lambda _id, _kind: "alerts@alertd.test",
        delivery=DeliverySettings(),
        connections=connections,
        worker_id="test-worker",
    )


@pytest.fixture
def smtp_connects(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the SMTP connections opened (one entry each)."""
    opened: list[int] = []
    connect = aiosmtplib.SMTP.connect

    async def counting(self: aiosmtplib.SMTP, *args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return await connect(self, *args, **kwargs)

    monkeypatch.setattr(aiosmtplib.SMTP, "connect", counting)
    return opened


async def test_mailers_stay_open_across_claimed_chunks(
    engine: Engine, smtp_sink: SmtpSink, smtp_connects: list[int]
) -> None:
    # 2 connections claim 32 rows at a time: 40 rows are two chunks.
    _queue(engine, *(f"reader{n}@example.org" for n in range(40)))
    report = await _drain(engine, smtp_sink, connections=2)
    assert report.sent == 40 and len(smtp_sink.messages) == 40
    assert len(smtp_connects) == 2


async def test_connection_is_reopened_after_messages_per_connection(
    engine: Engine, smtp_sink: SmtpSink, smtp_connects: list[int]
) -> None:
    _queue(engine, *(f"reader{n}@example.org" for n in range(7)))
    report = await _drain(engine, smtp_sink, messages_per_connection=3)
    assert report.sent == 7 and len(smtp_sink.messages) == 7
    # 3 + 3 + 1: the relay never sees a fourth message in one session.
    assert len(smtp_connects) == 3


@pytest.mark.parametrize(
    "fault", ["drop", "421 4.3.2 Shutting down"], ids=["dropped", "closed-after-421"]
)
async def test_kept_connection_reconnects_after_the_server_closes_it(
    engine: Engine, smtp_sink: SmtpSink, smtp_connects: list[int], fault: str
) -> None:
    recipients = [f"reader{n}@example.org" for n in range(20)]
    _queue(engine, *recipients)
    if fault == "drop":
        smtp_sink.drop_next("data")
    else:
        smtp_sink.fail_next("data", fault)
    report = await _drain(engine, smtp_sink)
    assert (report.deferred, report.sent, report.halted) == (1, 19, None)
    statuses = _statuses(engine)
    assert statuses.pop("reader0@example.org") == OutboxState.RETRY
    assert set(statuses.values()) == {OutboxState.SENT}
    assert len(smtp_connects) == 2


async def test_mailer_that_cannot_open_stops_the_batch(engine: Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    make_mailer = mailer_factory("maildir", blocker / "mail", SmtpSettings())
    assert (await drain_outbox(engine, make_mailer, _options(), now=NOW)).halted is None
    _queue(engine, "a@example.org", "b@example.org")
    report = await drain_outbox(engine, make_mailer, _options(connections=2), now=NOW)
    assert report.halted and "Maildir" in report.halted and report.sent == 0
    assert set(_statuses(engine).values()) == {OutboxState.PENDING}


async def test_sent_digest_clears_only_its_subscribers_bounces(
    engine: Engine, smtp_sink: SmtpSink
) -> None:
    _queue(engine, "a@example.org")
    with transaction(engine) as session:
        session.add(Subscriber(email="other@example.org", created_at=NOW, consecutive_bounces=2))
        for subscriber in session.exec(select(Subscriber)).all():
            subscriber.consecutive_bounces = 2
    assert (await _drain(engine, smtp_sink)).sent == 1
    with Session(engine) as session:
        bounces = dict(session.exec(select(Subscriber.email, Subscriber.consecutive_bounces)).all())
        row = session.exec(select(Outbox)).one()
    assert bounces == {"a@example.org": 0, "other@example.org": 2}
    assert (row.status, row.attempts, row.sent_at, row.last_error) == (
        OutboxState.SENT,
        1,
        NOW,
        None,
    )
    assert (row.lease_owner, row.lease_until) == (None, None)


def test_lease_is_renewed_only_by_its_owner(engine: Engine) -> None:
    (row_id,) = _queue(engine, "a@example.org")
    assert renew_lease(engine, row_id, "test-worker", 60) is None  # not claimed yet
    (claimed,) = claim_due(engine, now=NOW, limit=10, lease_s=1, owner="test-worker")
    assert (claimed.id, claimed.recipient) == (row_id, "a@example.org")
    assert b"digest 0" in claimed.message
    assert renew_lease(engine, row_id, "other", 600) is None
    until = renew_lease(engine, row_id, "test-worker", 600)
    assert until is not None and until > wall_clock() + timedelta(seconds=500)
    with Session(engine) as session:
        row = session.get(Outbox, row_id)
        assert row is not None and row.subscriber_id == claimed.subscriber_id
        assert row.lease_until == until


_HOLD_WRITE_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


def _hold_write_lock(path: Path, hold_s: float) -> subprocess.Popen[str]:
    """Another process that holds SQLite's write lock for ``hold_s`` seconds, once it says so."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(path), str(hold_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "locked\n"
    return process


def _slowest_page_s(url: str, for_s: float) -> float:
    """From another thread: the slowest of the pages asked for every 50 ms for ``for_s``."""
    slowest_s = 0.0
    with httpx.Client(base_url=url, timeout=10) as client:
        until = time.monotonic() + for_s
        while time.monotonic() < until:
            started = time.monotonic()
            assert client.get("/").status_code == 200
            slowest_s = max(slowest_s, time.monotonic() - started)
            time.sleep(0.05)
    return slowest_s


async def test_web_app_answers_while_a_send_waits_for_the_database(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # The web app and the drain share this event loop and the sender, as under `alertd run`.
    # Another process holds the lock for 3 s during the send: recording it waits in a thread.
    settings = make_settings(database={"url": f"sqlite:///{tmp_path}/alertd.db"})
    engine = open_database(settings.database)
    smtp = SmtpSettings(host="127.0.0.1", port=smtp_sink.port)
    sender = Sender(engine, mailer_factory("smtp", Path("."), smtp), _options())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_web(settings, engine, stop, sock=sock, sender=sender))
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(100):
            try:
                assert (await client.get("/")).status_code == 200
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
    await sender.settled()  # its first drain, at start, found nothing
    _queue(engine, "a@example.org")
    stalled = smtp_sink.stall_next("data", 0.5)
    drain = asyncio.create_task(sender.drain(now=NOW))
    await wait_until_async(lambda: stalled.hits, 10, "the message's DATA")  # being sent now
    locker = await asyncio.to_thread(_hold_write_lock, tmp_path / "alertd.db", 3.0)
    locked_at = time.monotonic()
    slowest_s = await asyncio.to_thread(_slowest_page_s, url, 3.0)
    report = await drain
    await asyncio.to_thread(locker.communicate, timeout=10)
    assert locker.returncode == 0
    stop.set()
    await serving
    sock.close()
    # The send was recorded only once the lock was given back ...
    assert report.sent == 1 and time.monotonic() - locked_at > 2.5
    assert _statuses(engine) == {"a@example.org": OutboxState.SENT}
    engine.dispose()
    # ... and meanwhile no page waited for the lock: one that did would take at least the
    # 2.5 s left of it. (1.5 s, not less: a loaded 2-core CI machine, running the suite in
    # parallel, once took 0.79 s to answer a page.)
    assert slowest_s < 1.5


def _reader_with_a_digest(engine: Engine, address: str, number: int) -> tuple[Alert, int]:
    alert = lifecycle.subscribe(engine, address, "school meals", "daily", confirmed=True, now=NOW)
    return alert, queue_digest(engine, alert, number, NOW, recipient=address)


async def test_a_digest_unsubscribed_from_mid_send_is_not_retried(
    engine: Engine, smtp_sink: SmtpSink
) -> None:
    alert, digest = _reader_with_a_digest(engine, "leaving@example.org", 1)
    assert alert.id is not None
    # The server holds the digest's DATA, then defers it: the reader unsubscribes meanwhile.
    stalled = smtp_sink.stall_next("data", 1.5, reply="451 4.3.0 Try later")
    drain = asyncio.create_task(_drain(engine, smtp_sink))
    await wait_until_async(lambda: stalled.hits, 10, "the digest's DATA")
    await asyncio.to_thread(lifecycle.stop_alert, engine, alert.id, NOW)
    report = await drain
    assert report.deferred == 1
    assert digest_state(engine, digest) == (OutboxState.CANCELLED, 0)
    later = await _drain(engine, smtp_sink, now=NOW + timedelta(hours=6))
    assert later.sent == 0 and smtp_sink.messages == []


async def test_a_digest_given_back_after_its_alert_stopped_is_cancelled(
    engine: Engine, smtp_sink: SmtpSink
) -> None:
    _, first = _reader_with_a_digest(engine, "staying@example.org", 1)
    leaving, second = _reader_with_a_digest(engine, "leaving@example.org", 2)
    assert leaving.id is not None
    # Both are claimed by one connection; the second waits while the first is sent, its
    # reader unsubscribes, and a stop request gives it back untried.
    stalled = smtp_sink.stall_next("data", 1.0)
    stopping = asyncio.Event()
    drain = asyncio.create_task(_drain(engine, smtp_sink, stopping=stopping))
    await wait_until_async(lambda: stalled.hits, 10, "the first digest's DATA")
    await asyncio.to_thread(lifecycle.stop_alert, engine, leaving.id, NOW)
    stopping.set()
    report = await drain
    assert report.sent == 1
    assert digest_state(engine, first) == (OutboxState.SENT, 1)
    assert digest_state(engine, second) == (OutboxState.CANCELLED, 0)
    assert (await _drain(engine, smtp_sink)).sent == 0
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["staying@example.org"]]


async def test_a_digest_whose_sender_died_is_not_sent_after_a_pause(
    engine: Engine, smtp_sink: SmtpSink
) -> None:
    alert, digest = _reader_with_a_digest(engine, "pausing@example.org", 1)
    assert alert.id is not None
    # A worker claims it and dies; the reader pauses the alert while it is held.
    (claimed,) = claim_due(engine, now=NOW, limit=10, lease_s=0.2, owner="dead-worker")
    lifecycle.change_alert(engine, alert.id, NOW, subscriber_id=alert.subscriber_id, paused=True)
    assert digest_state(engine, digest) == (OutboxState.SENDING, 1)
    await asyncio.sleep(0.3)  # its lease runs out
    report = await _drain(engine, smtp_sink)
    assert report.sent == 0 and smtp_sink.messages == []
    assert digest_state(engine, claimed.id) == (OutboxState.CANCELLED, 0)
    # Its answer waits for the alert's first digest after it is resumed.
    assert pending_hits(engine, alert.id) == 1


async def test_pausing_cancels_a_digest_queued_for_retry(
    engine: Engine, smtp_sink: SmtpSink
) -> None:
    alert, digest = _reader_with_a_digest(engine, "pausing@example.org", 1)
    assert alert.id is not None
    smtp_sink.fail_rcpt("pausing@example.org", 451)
    assert (await _drain(engine, smtp_sink)).deferred == 1
    assert digest_state(engine, digest) == (OutboxState.RETRY, 1)
    lifecycle.change_alert(engine, alert.id, NOW, subscriber_id=alert.subscriber_id, paused=True)
    assert (await _drain(engine, smtp_sink, now=NOW + timedelta(hours=6))).sent == 0
    assert digest_state(engine, digest) == (OutboxState.CANCELLED, 0)
    assert smtp_sink.messages == []
