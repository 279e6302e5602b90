"""Crash safety and several workers: real `alertd run` processes, killed and raced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import DatabaseSettings
from alertd.db import open_database
from alertd.models import Hit, Ledger, Outbox, OutboxState
from alertd.subscriptions import lifecycle

from configs import write_config
from smtp_server import SmtpSink
from standin_api import StandinApi
from waiting import wait_until

pytestmark = pytest.mark.slow
TOPICS = ["coronavirus", "schools", "vaccine", "housing", "police", "nhs"]


def _config(tmp_path: Path, database_url: str, standin: StandinApi, sink: SmtpSink) -> Path:
    return write_config(
        tmp_path,
        standin,
        sink,
        database={"url": database_url},
        smtp={"connections": 2},
        delivery={"send_interval_s": 0.5, "lease_s": 2.0, "shutdown_timeout_s": 5.0},
    )


def _subscribe_many(database_url: str, count: int) -> set[str]:
    engine = open_database(DatabaseSettings(url=database_url))
    addresses = set()
    for n in range(count):
        address = f"reader{n}@example.org"
        lifecycle.subscribe(
            engine,
            address,
            TOPICS[n % len(TOPICS)],
            "immediate",
            confirmed=True,
            now=datetime.now(UTC),
        )
        addresses.add(address)
    engine.dispose()
    return addresses


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ALERTD_CONFIG": str(config)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "alertd", "run"], env=env, stderr=out)


def _wait_for(sink: SmtpSink, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(sink.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _settled(engine: Engine) -> bool:
    """Nothing left to send: every hit is in a digest, and every digest was sent (a message
    still in flight, even one sent again after its lease ran out, arrives before its worker
    stops)."""
    with Session(engine) as session:
        waiting = session.exec(select(Hit.id).where(col(Hit.outbox_id).is_(None))).first()
        unsent = session.exec(select(Outbox.id).where(Outbox.status != OutboxState.SENT))
        return waiting is None and unsent.first() is None


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_sigkill_at_any_moment_loses_no_digest(
    tmp_path: Path, standin_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    database_url = f"sqlite:///{tmp_path}/alertd.db"
    config = _config(tmp_path, database_url, standin_api, smtp_sink)
    expected = _subscribe_many(database_url, 24)
    # Each message takes a while to accept, so kills land in the middle of the batch.
    smtp_sink.stall_next("data", 0.15, count=None)
    kills = 0
    for target in (3, 8, 14):
        process = _start(config, tmp_path / "alertd.log")
        _wait_for(smtp_sink, target, timeout_s=60)
        process.kill()
        process.wait(timeout=10)
        kills += 1
    process = _start(config, tmp_path / "alertd.log")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if {m.rcpt_tos[0] for m in smtp_sink.messages} >= expected:
            break
        time.sleep(0.1)
    _stop(process)
    received = Counter(m.rcpt_tos[0] for m in smtp_sink.messages)
    assert set(received) == expected, (tmp_path / "alertd.log").read_text()[-3000:]
    duplicates = sum(count - 1 for count in received.values())
    print(f"received={len(smtp_sink.messages)} duplicates={duplicates} kills={kills}")
    # Only the messages in flight at a kill may go twice: at most one per connection.
    assert duplicates <= kills * 2
    by_recipient: dict[str, set[str]] = {}
    for message in smtp_sink.messages:
        by_recipient.setdefault(message.rcpt_tos[0], set()).add(str(message.message["Message-ID"]))
    assert all(len(ids) == 1 for ids in by_recipient.values())


def test_three_workers_on_postgresql_send_each_digest_once(
    tmp_path: Path, pg_database_url: str, standin_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    config = _config(tmp_path, pg_database_url, standin_api, smtp_sink)
    expected = _subscribe_many(pg_database_url, 60)
    smtp_sink.stall_next("data", 0.02, count=None)
    workers = [_start(config, tmp_path / f"worker{n}.log") for n in range(3)]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and {m.rcpt_tos[0] for m in smtp_sink.messages} < expected:
        time.sleep(0.1)
    engine = open_database(DatabaseSettings(url=pg_database_url))
    wait_until(lambda: _settled(engine), 60, "every digest to be sent")
    for worker in workers:
        _stop(worker)
    assert {m.rcpt_tos[0] for m in smtp_sink.messages} == expected
    # Workers may match different answers at once, so a subscriber can get two digests
    # with different answers; but every digest is sent exactly once.
    received = Counter(str(m.message["Message-ID"]) for m in smtp_sink.messages)
    assert set(received.values()) == {1}
    with Session(engine) as session:
        rows = session.exec(select(Outbox)).all()
        assert {row.message_id for row in rows} == set(received)
        assert {row.status for row in rows} == {OutboxState.SENT}
        ledger = session.exec(select(Ledger.subscriber_id, Ledger.source_id)).all()
        assert len(ledger) == len(set(ledger))  # no answer went twice to anyone
    engine.dispose()
    polls = [path for method, path in standin_api.requests if "answeredWhenFrom" in path]
    # One worker polled; the others saw its lease (or its fresh poll) and skipped.
    assert len([p for p in polls if "skip=0" in p]) == 1
