"""`alertd bounce` as Postfix's pipe transport runs it: DSNs and ARF complaints on stdin."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from alertd.config import load_settings
from alertd.db import open_database
from alertd.errors import NotOurs, ReportUnreadable
from alertd.mail.bounces import Verdict, read_report, report_subscriber
from alertd.mail.identity import envelope_sender
from alertd.mail.outbox import enqueue
from alertd.models import Outbox, OutboxKind, Subscriber
from alertd.subscriptions import lifecycle

ALERTD = Path(sys.executable).with_name("alertd")
SAMPLES = Path(__file__).parent / "bounce_samples"
NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
# The Message-ID the sample DSN returns the headers of.
BOUNCED_ID = "<176448600012.4242.1836527461833020000.digest@alertd.test>"
FORGED_TAG = "1-0123456789abcdef"


def _config(tmp_path: Path, database_url: str | None = None, *, verp: bool = True) -> Path:
    tmp_path.mkdir(exist_ok=True)
    config = tmp_path / "alertd.toml"
    url = database_url or f"sqlite:///{tmp_path}/alertd.db"
    verp_line = 'verp_address = "bounces@alertd.test"\n' if verp else ""
    config.write_text(
        f'[database]\nurl = "{url}"\n'
        f'[mail]\nfrom = "alerts@alertd.test"\n{verp_line}'
        '[web]\nsecret_key = "test-secret"\n[delivery]\nmax_bounces = 2\n'
    )
    return config


def _subscriber(config: Path) -> tuple[int, str]:
    """A subscriber with one alert, and the VERP tag of their digests' envelope sender."""
    settings = load_settings(str(config))
    engine = open_database(settings.database)
    try:
        alert = lifecycle.subscribe(
            engine, "gone@example.net", "schools", "daily", confirmed=True, now=NOW
        )
    finally:
        engine.dispose()
    sender = envelope_sender(settings, alert.subscriber_id)
    return alert.subscriber_id, sender.split("+", 1)[1].split("@", 1)[0]


def _sample(name: str, tag: str) -> bytes:
    return (SAMPLES / name).read_bytes().replace(b"VERPTAG", tag.encode())


def _bounce(config: Path, message: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, fed as Postfix's pipe(8) feeds it: the message on stdin."""
    return subprocess.run(
        [str(ALERTD), "bounce", "--config", str(config), *args],
        input=message.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _state(config: Path, subscriber_id: int) -> tuple[int, datetime | None]:
    engine = open_database(load_settings(str(config)).database)
    try:
        with Session(engine) as session:
            subscriber = session.get(Subscriber, subscriber_id)
            assert subscriber is not None
            return subscriber.consecutive_bounces, subscriber.suspended_at
    finally:
        engine.dispose()


def test_samples_are_read_as_what_they_are(tmp_path: Path) -> None:
    settings = load_settings(str(_config(tmp_path)))
    tag = envelope_sender(settings, 7).split("+", 1)[1].split("@", 1)[0]
    hard = read_report(_sample("postfix_dsn_550.eml", tag))
    assert hard.verdict == Verdict.HARD_BOUNCE
    assert hard.detail.startswith("5.1.1 (smtp; 550 5.1.1 <gone@example.net>: Recipient")
    assert hard.original_message_id == BOUNCED_ID
    assert report_subscriber(settings, hard) == 7
    delayed = read_report(_sample("postfix_dsn_delayed.eml", tag))
    assert (delayed.verdict, delayed.detail) == (Verdict.NO_FAILURE, "delayed")
    complaint = read_report(_sample("yahoo_arf_abuse.eml", tag))
    assert (complaint.verdict, complaint.detail) == (Verdict.COMPLAINT, "abuse")
    # Sent to the feedback-loop address: the tag comes from Original-Mail-From/Return-Path.
    assert complaint.addressed_to[0] == "fbl@alertd.test"
    assert report_subscriber(settings, complaint) == 7
    with pytest.raises(NotOurs):
        report_subscriber(settings, read_report(_sample("postfix_dsn_550.eml", FORGED_TAG)))
    with pytest.raises(ReportUnreadable):
        read_report(_sample("not_a_report.eml", tag))
    with pytest.raises(ReportUnreadable):
        read_report(b"\x00\xff not mail at all")


@pytest.mark.slow
def test_hard_bounces_count_and_suspend_a_delay_does_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    subscriber_id, tag = _subscriber(config)
    delayed = _bounce(config, _sample("postfix_dsn_delayed.eml", tag))
    assert delayed.returncode == 0, delayed.stderr
    assert _state(config, subscriber_id) == (0, None)
    first = _bounce(config, _sample("postfix_dsn_550.eml", tag))
    assert first.returncode == 0, first.stderr
    assert "hard bounce: bounce counted (1 of 2 in a row); 5.1.1" in first.stdout
    assert _state(config, subscriber_id) == (1, None)
    second = _bounce(config, _sample("postfix_dsn_550.eml", tag))
    assert second.returncode == 0, second.stderr
    count, suspended = _state(config, subscriber_id)
    assert count == 2 and suspended is not None


@pytest.mark.slow
def test_a_complaint_suspends_at_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    subscriber_id, tag = _subscriber(config)
    done = _bounce(config, _sample("yahoo_arf_abuse.eml", tag))
    assert done.returncode == 0, done.stderr
    assert f"subscriber {subscriber_id}: complaint: suspended" in done.stdout
    count, suspended = _state(config, subscriber_id)
    assert count == 0 and suspended is not None


@pytest.mark.slow
def test_exit_codes_an_mta_understands(tmp_path: Path) -> None:
    config = _config(tmp_path)
    subscriber_id, tag = _subscriber(config)
    # EX_DATAERR: not a report (an out-of-office reply to the bounce address).
    unreadable = _bounce(config, _sample("not_a_report.eml", tag))
    assert unreadable.returncode == 65
    assert unreadable.stderr.strip().count("\n") == 0 and "Traceback" not in unreadable.stderr
    # EX_NOUSER: a tag not signed with our key.
    forged = _bounce(config, _sample("postfix_dsn_550.eml", FORGED_TAG))
    assert forged.returncode == 67 and "no valid VERP tag" in forged.stderr
    assert _state(config, subscriber_id) == (0, None)
    # The tag given by the pipe transport (${recipient}) is enough on its own.
    given = _bounce(
        config,
        _sample("postfix_dsn_550.eml", FORGED_TAG),
        "--recipient",
        f"bounces+{tag}@alertd.test",
    )
    assert given.returncode == 0, given.stderr
    assert _state(config, subscriber_id)[0] == 1
    # EX_TEMPFAIL: the database is unreachable; the MTA keeps the report and tries again.
    down = _bounce(
        _config(tmp_path / "down", "postgresql+psycopg://alertd@127.0.0.1:9/alertd"),
        _sample("postfix_dsn_550.eml", tag),
    )
    assert down.returncode == 75 and "database error" in down.stderr
    # EX_CONFIG: without mail.verp_address no bounce can name a subscriber.
    unset = _bounce(_config(tmp_path / "noverp", verp=False), _sample("postfix_dsn_550.eml", tag))
    assert unset.returncode == 78 and "verp_address" in unset.stderr


@pytest.mark.slow
def test_a_bounced_transactional_mail_is_not_counted(tmp_path: Path) -> None:
    config = _config(tmp_path)
    subscriber_id, tag = _subscriber(config)
    engine = open_database(load_settings(str(config)).database)
    try:
        enqueue(
            engine,
            subscriber_id=subscriber_id,
            recipient="gone@example.net",
            message_id=BOUNCED_ID,
            subject="Confirm your alert",
            message=b"Subject: Confirm your alert\r\n\r\nhello\r\n",
            now=NOW,
        )
        with Session(engine) as session:
            kinds = session.exec(select(Outbox.kind)).all()
        assert kinds == [OutboxKind.TRANSACTIONAL]
    finally:
        engine.dispose()
    done = _bounce(config, _sample("postfix_dsn_550.eml", tag))
    assert done.returncode == 0, done.stderr
    assert "a transactional mail: not counted" in done.stdout
    assert _state(config, subscriber_id) == (0, None)
