"""`alertd bounce` as Postfix's pipe transport runs it: DSNs and ARF complaints on stdin."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from alertd.config import Settings, load_settings
from alertd.db import open_database
from alertd.errors import NotOurs, ReportUnreadable
from alertd.mail.bounces import Verdict, read_report, report_subscriber
from alertd.mail.identity import envelope_sender
from alertd.mail.outbox import enqueue
from alertd.models import Outbox, OutboxKind, OutboxState, Subscriber
from alertd.subscriptions import lifecycle
from alertd.web import serve_web

from queued_digests import digest_state, queue_digest
from smtp_server import ReceivedMessage, SmtpSink

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
    done = subprocess.run(
        [str(ALERTD), "bounce", "--config", str(config), *args],
        input=message,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode("utf-8", "replace")
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


def _arf(mail_from: str, original: bytes) -> bytes:
    """A feedback-loop complaint (ARF, RFC 5965) about a mail as its recipient got it."""
    boundary = "----=_Part_arf"
    return (
        (
            "From: Feedback <feedback@arf.mail.example>\r\nTo: fbl@alertd.test\r\n"
            "Subject: FW: complaint\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report;"
            f' boundary="{boundary}"\r\n'
            f"\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
            f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: abuse\r\nVersion: 1\r\nOriginal-Mail-From: <{mail_from}>\r\n"
            f"\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
            f"Return-Path: <{mail_from}>\r\n"
        ).encode()
        + original
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def _manage_link_asked_by_a_stranger(
    make_settings: Callable[..., Settings], database_url: str, smtp_sink: SmtpSink, victim: str
) -> ReceivedMessage:
    """The running web app, asked for the victim's manage link: the mail the victim gets."""
    settings = make_settings(
        database={"url": database_url},
        mail={"delivery": "smtp", "verp_address": "bounces@alertd.test"},
        smtp={"host": smtp_sink.host, "port": smtp_sink.port},
        delivery={"send_interval_s": 0.2},
    )
    engine = open_database(settings.database)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_web(settings, engine, stop, sock=sock))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{sock.getsockname()[1]}"
        ) as client:
            for _ in range(100):
                try:
                    await client.get("/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            response = await client.post("/manage", data={"email": victim})
            assert response.status_code == 200
        [mail] = await asyncio.to_thread(smtp_sink.wait_for_messages, 1, 10.0)
    finally:
        stop.set()
        await serving
        sock.close()
        engine.dispose()
    return mail


@pytest.mark.slow
async def test_a_complaint_about_an_unrequested_mail_suspends_nobody(
    tmp_path: Path,
    database_url: str,
    make_settings: Callable[..., Settings],
    smtp_sink: SmtpSink,
) -> None:
    config = _config(tmp_path, database_url)
    settings = load_settings(str(config))
    engine = open_database(settings.database)
    try:
        alert = lifecycle.subscribe(
            engine, "victim@example.net", "schools", "daily", confirmed=True, now=NOW
        )
        victim_id = alert.subscriber_id
        # A stranger has alertd mail the victim a manage link; the victim marks it as spam.
        mail = await _manage_link_asked_by_a_stranger(
            make_settings, database_url, smtp_sink, "victim@example.net"
        )
        assert mail.mail_from == envelope_sender(settings, victim_id, OutboxKind.TRANSACTIONAL)
        digest = queue_digest(engine, alert, 1, NOW, recipient="victim@example.net")
        complaint = await asyncio.to_thread(_bounce, config, _arf(mail.mail_from, mail.raw))
        assert complaint.returncode == 0, complaint.stderr
        assert "complaint: a transactional mail: nothing suspended" in complaint.stdout
        assert _state(config, victim_id) == (0, None)
        assert digest_state(engine, digest) == (OutboxState.PENDING, 1)
        # A manage link mailed before its tag said what it was: known by its Message-ID.
        digest_tag = envelope_sender(settings, victim_id)
        older = await asyncio.to_thread(_bounce, config, _arf(digest_tag, mail.raw))
        assert older.returncode == 0, older.stderr
        assert "a transactional mail: nothing suspended" in older.stdout
        assert _state(config, victim_id) == (0, None)
        # A transactional tag cannot be made a digest's by dropping its mark.
        forged = mail.mail_from.replace("-t-", "-")
        refused = await asyncio.to_thread(_bounce, config, _arf(forged, b"Subject: x\r\n\r\nx\r\n"))
        assert refused.returncode == 67, refused.stderr
        # A complaint about a digest still suspends at once and cancels what is queued.
        about_digest = _arf(digest_tag, b"Subject: 1 new answer\r\n\r\nSchool meals\r\n")
        suspended = await asyncio.to_thread(_bounce, config, about_digest)
        assert suspended.returncode == 0, suspended.stderr
        assert f"subscriber {victim_id}: complaint: suspended" in suspended.stdout
        assert _state(config, victim_id)[1] is not None
        assert digest_state(engine, digest) == (OutboxState.CANCELLED, 0)
    finally:
        engine.dispose()


def _peak_rss_kib(config: Path, message: bytes) -> tuple[int, str, int]:
    """The installed command fed ``message``, run under a parent of its own so that the peak
    memory measured is the command's alone: its exit code, stderr and peak RSS in KiB."""
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], stdin=sys.stdin, capture_output=True)\n"
        "sys.stderr.buffer.write(done.stderr)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, str(ALERTD), "bounce", "--config", str(config)],
        input=message,
        capture_output=True,
        timeout=60,
        check=True,
    )
    code, peak_kib = done.stdout.split()
    return int(code), done.stderr.decode(), int(peak_kib)


@pytest.mark.slow
def test_a_huge_message_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _, tag = _subscriber(config)
    small = _sample("postfix_dsn_550.eml", tag)
    code, _, small_peak_kib = _peak_rss_kib(config, _sample("postfix_dsn_delayed.eml", tag))
    assert code == 0
    # 40 MB in: once 392 MB of memory. Now refused after reading 1 MB and a byte.
    huge = small + b"x" * (40 * 1024 * 1024)
    code, stderr, huge_peak_kib = _peak_rss_kib(config, huge)
    assert code == 65, stderr
    assert "no report of ours" in stderr and stderr.count("\n") == 1
    assert huge_peak_kib < small_peak_kib + 16 * 1024
    assert _state(config, _subscriber_id(config)) == (0, None)


def _subscriber_id(config: Path) -> int:
    engine = open_database(load_settings(str(config)).database)
    try:
        with Session(engine) as session:
            return session.exec(select(Subscriber.id)).one() or 0
    finally:
        engine.dispose()


@pytest.mark.slow
def test_hostile_reports_get_an_exit_code_an_mta_understands(tmp_path: Path) -> None:
    config = _config(tmp_path)
    subscriber_id, tag = _subscriber(config)
    # A tag of 5,000 digits (once an uncaught ValueError, exit 1), in the report or given.
    long_tag = "9" * 5000 + "-0123456789abcdef"
    in_report = _bounce(config, _sample("postfix_dsn_550.eml", long_tag))
    assert in_report.returncode == 67 and "no valid VERP tag" in in_report.stderr
    assert "Traceback" not in in_report.stderr and len(in_report.stderr) < 1000
    given = _bounce(
        config,
        _sample("postfix_dsn_550.eml", long_tag),
        "--recipient",
        f"bounces+{long_tag}@alertd.test",
    )
    assert given.returncode == 67, given.stderr
    # Malformed reports: data errors (65), one line each.
    dsn = _sample("postfix_dsn_550.eml", tag)
    for broken in (
        b"",
        b"\xff\xfe" * 1000,
        dsn.replace(b"message/delivery-status", b"message/delivery-statu"),
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno parts\r\n",
        b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\n\r\n--b--\r\n",
    ):
        done = _bounce(config, broken)
        assert done.returncode == 65, (broken[:80], done.returncode, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert _state(config, subscriber_id) == (0, None)
