"""Tabled questions end to end: the installed CLI, the stand-in API and a real SMTP server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from alertd.cli import main
from alertd.models import Ledger, Subscriber
from alertd.pipeline import Runtime, poll_once, run_once
from alertd.subscriptions import lifecycle

from configs import write_config
from smtp_server import SmtpSink
from standin_api import StandinApi, load_2021_tabled, member_search_item

ALERTD = str(Path(sys.executable).with_name("alertd"))
# Julian Sturdy asked one question on 1 Feb 2021, unanswered when recorded.
STURDY, STURDY_UIN, STURDY_QUESTION = 4079, "146871", 1282437
# Sharon Hodgson: five answered, one (146805) unanswered.
HODGSON, HODGSON_UNANSWERED = 1521, "146805"
# Jon Trickett: fifteen answered, three unanswered (146780, 146776, 146775).
TRICKETT = 410
# Gareth Thomas: 146757 and 146758 were answered together (groupedQuestions), and 146759.
THOMAS = 177


@pytest.fixture
def tabled_api() -> Iterator[StandinApi]:
    """The stand-in serving the 520 questions tabled on 1 Feb 2021."""
    with StandinApi.from_fixtures("tabled_2021", hang_seconds=10.0) as api:
        yield api


def _record(api: StandinApi, uin: str) -> dict[str, object]:
    found = [r for r in api.records() if r["uin"] == uin]
    assert len(found) == 1
    return found[0]


class Cli:
    """The installed `alertd` command, run in a subprocess against one config."""

    def __init__(self, config: Path) -> None:
        self.config = str(config)
        self.database = f"sqlite:///{config.parent}/alertd.db"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [ALERTD, *args, "--config", self.config],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def run_later(self) -> None:
        """`alertd run --once` as the next scheduled poll would: the last poll an hour ago
        (a poll within half an interval of the last is skipped)."""
        engine = sa.create_engine(self.database)
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE sourcestate SET last_ok_at = :earlier"),
                {"earlier": datetime(2000, 1, 1)},
            )
        engine.dispose()
        self("run", "--once")

    def follow(self, email: str, query: str, *extra: str) -> None:
        self("subscribe", email, query, "--frequency", "immediate", "--confirmed", *extra)


def _texts(sink: SmtpSink, recipient: str) -> list[str]:
    """The plain-text part of each message the recipient got, oldest first."""
    texts = []
    for received in sink.messages:
        if recipient in received.rcpt_tos:
            message = received.message
            assert isinstance(message, EmailMessage)
            part = message.get_body(("plain",))
            assert part is not None
            texts.append(part.get_content())
    return texts


@pytest.mark.slow
def test_member_alert_hears_when_tabled_then_when_answered_once_each(
    tmp_path: Path, tabled_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    cli = Cli(write_config(tmp_path, tabled_api, smtp_sink))
    cli.follow("reader@example.org", f"member:{STURDY}")
    cli.follow("topic@example.org", "car washes")  # a topic alert: answers only, by default
    cli("run", "--once")
    (first,) = _texts(smtp_sink, "reader@example.org")
    assert STURDY_UIN in first
    assert "(Asked, awaiting answer (due 3 February 2021))" in first
    assert "Answered by" not in first

    tabled_api.update(
        STURDY_QUESTION,
        dateAnswered="2021-02-08T00:00:00",
        answerText="<p>Jet car washes are to stay open.</p>",
    )
    cli.run_later()
    cli.run_later()
    texts = _texts(smtp_sink, "reader@example.org")
    assert len(texts) == 2
    second = texts[1]
    assert STURDY_UIN in second and "(Now answered)" in second
    assert "when it was tabled, in our email of" in second
    assert "Jet car washes are to stay open." in second
    # The topic alert heard of the answer only, and as a plain answer.
    topic = [t for t in _texts(smtp_sink, "topic@example.org") if STURDY_UIN in t]
    assert len(topic) == 1 and "Now answered" not in topic[0] and "Asked, awaiting" not in topic[0]


@pytest.mark.slow
def test_answered_only_member_alert_is_not_told_of_tabled_questions(
    tmp_path: Path, tabled_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    cli = Cli(write_config(tmp_path, tabled_api, smtp_sink))
    cli.follow("reader@example.org", f"member:{STURDY}", "--on", "answered")
    cli("run", "--once")
    assert _texts(smtp_sink, "reader@example.org") == []
    tabled_api.update(STURDY_QUESTION, dateAnswered="2021-02-08T00:00:00", answerText="Yes.")
    cli.run_later()
    (text,) = _texts(smtp_sink, "reader@example.org")
    assert STURDY_UIN in text and "Now answered" not in text


@pytest.mark.slow
def test_withdrawn_question_is_reported_once_to_those_told_and_never_alerted(
    tmp_path: Path, tabled_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    cli = Cli(write_config(tmp_path, tabled_api, smtp_sink))
    # Withdrawn before alertd ever saw it: nobody hears of it.
    withdrawn_early = _record(tabled_api, "146780")
    tabled_api.update(int(str(withdrawn_early["id"])), isWithdrawn=True)
    cli.follow("trickett@example.org", f"member:{TRICKETT}")
    cli.follow("hodgson@example.org", f"member:{HODGSON}")
    cli("run", "--once")
    (trickett,) = _texts(smtp_sink, "trickett@example.org")
    assert "146776" in trickett and "146775" in trickett and "146780" not in trickett
    (first,) = _texts(smtp_sink, "hodgson@example.org")
    assert HODGSON_UNANSWERED in first and "Asked, awaiting answer" in first

    question = _record(tabled_api, HODGSON_UNANSWERED)
    tabled_api.update(int(str(question["id"])), isWithdrawn=True)
    cli.run_later()
    cli.run_later()
    texts = _texts(smtp_sink, "hodgson@example.org")
    assert len(texts) == 2
    assert HODGSON_UNANSWERED in texts[1] and "(Withdrawn)" in texts[1]
    assert len(_texts(smtp_sink, "trickett@example.org")) == 1


@pytest.mark.slow
def test_grouped_questions_answered_together_appear_once(
    tmp_path: Path, tabled_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    cli = Cli(write_config(tmp_path, tabled_api, smtp_sink))
    cli.follow("reader@example.org", f"member:{THOMAS}")
    cli("run", "--once")
    (text,) = _texts(smtp_sink, "reader@example.org")
    answer = "The Centre for Improving Data Collaboration"
    assert text.count(answer) == 1
    assert "Answered together:" in text
    assert "- 146758: To ask" in text and "- 146757: To ask" in text
    assert "146759" in text
    assert text.count("NHS: Medical Records") == 1


@pytest.mark.slow
def test_members_given_only_by_id_are_named_through_the_members_api(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    records = load_2021_tabled()
    record = next(r for r in records if r["uin"] == STURDY_UIN)
    asker = record["askingMember"]
    members = [member_search_item(asker, record["house"])]
    # The listing and the detail carry ids only: no member objects at all.
    record["askingMember"] = None
    with StandinApi(records=[record], members=members) as api:
        cli = Cli(write_config(tmp_path, api, smtp_sink))
        cli.follow("reader@example.org", "car washes", "--on", "tabled,answered")
        cli("run", "--once")
        lookups = [path for _, path in api.requests if path.startswith("/api/Members/")]
    (text,) = _texts(smtp_sink, "reader@example.org")
    assert "Asked by Julian Sturdy (Conservative, York Outer)" in text
    assert f"Member {STURDY}" not in text
    assert lookups == [f"/api/Members/{STURDY}"]


@pytest.mark.slow
def test_status_shows_each_source_and_its_last_poll(
    tmp_path: Path, tabled_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, tabled_api))
    assert main(["status", "--config", config]) == 0
    assert "source parliament: last poll never, not polled yet" in capsys.readouterr().out
    tabled_api.fail_next("list", 503)
    assert main(["run", "--once", "--config", config]) == 1
    main(["status", "--config", config])
    failed = capsys.readouterr().out
    assert "source parliament: last poll 20" in failed and "(last good poll never)" in failed
    assert main(["run", "--once", "--config", config]) == 0
    assert main(["status", "--config", config]) == 0
    # The 520 questions tabled on 1 Feb 2021, 7 of them stored as tabled (not answered yet).
    healthy = capsys.readouterr().out
    assert "source parliament: last poll 20" in healthy and ", 520 new\n" in healthy


MONDAY_EVENING = datetime(2021, 2, 1, 19, 0, tzinfo=UTC)


@pytest.fixture
def runtime(standin_runtime: Callable[[StandinApi], Runtime], tabled_api: StandinApi) -> Runtime:
    """The pipeline in process over the stand-in, on SQLite and PostgreSQL, into a Maildir."""
    return standin_runtime(tabled_api)


def _follow(runtime: Runtime, email: str, query: str, frequency: str = "immediate") -> None:
    earlier = MONDAY_EVENING - timedelta(hours=1)
    lifecycle.subscribe(runtime.engine, email, query, frequency, confirmed=True, now=earlier)


def _ledger(runtime: Runtime, question_id: int) -> list[tuple[str, int]]:
    with Session(runtime.engine) as session:
        rows = session.exec(
            select(Subscriber.email, Ledger.version)
            .join(Subscriber, col(Subscriber.id) == col(Ledger.subscriber_id))
            .where(Ledger.source_id == str(question_id))
            .order_by(col(Subscriber.email), col(Ledger.version))
        ).all()
    return list(rows)


@pytest.mark.slow
async def test_tabled_then_answered_on_each_database(
    runtime: Runtime, tabled_api: StandinApi
) -> None:
    """The ledger keeps one row per version mailed: tabled (1) and answered (2)."""
    _follow(runtime, "m@example.org", f"member:{STURDY}")
    _follow(runtime, "t@example.org", '"jet car washes"')
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.sent == 1  # the Member alert; the topic alert waits for answers
    tabled_api.update(STURDY_QUESTION, dateAnswered="2021-02-02T00:00:00", answerText="No.")
    tuesday = MONDAY_EVENING + timedelta(days=1)
    assert (await run_once(runtime, now=tuesday)).sent == 2
    assert (await run_once(runtime, now=tuesday + timedelta(hours=1))).sent == 0
    assert _ledger(runtime, STURDY_QUESTION) == [
        ("m@example.org", 1),
        ("m@example.org", 2),
        ("t@example.org", 2),
    ]


@pytest.mark.slow
async def test_tabled_and_answered_before_any_match_is_mailed_once_as_answered(
    runtime: Runtime, tabled_api: StandinApi
) -> None:
    """Both versions stored before matching ran (a crash between two polls and the match):
    the tabled version is superseded, never mailed; the answer goes out once."""
    _follow(runtime, "m@example.org", f"member:{STURDY}")
    await poll_once(runtime, now=MONDAY_EVENING)
    tabled_api.update(STURDY_QUESTION, dateAnswered="2021-02-02T00:00:00", answerText="No.")
    tuesday = MONDAY_EVENING + timedelta(days=1)
    await poll_once(runtime, now=tuesday)
    assert (await run_once(runtime, now=tuesday, poll=False)).sent == 1
    assert _ledger(runtime, STURDY_QUESTION) == [("m@example.org", 2)]


@pytest.mark.slow
async def test_withdrawn_before_its_daily_digest_is_never_mailed(
    runtime: Runtime, tabled_api: StandinApi
) -> None:
    _follow(runtime, "daily@example.org", f"member:{STURDY}", frequency="daily")
    # Monday's daily period is done before the poll: the match waits for Tuesday 07:00.
    await run_once(runtime, now=MONDAY_EVENING - timedelta(minutes=50), poll=False)
    assert (await run_once(runtime, now=MONDAY_EVENING)).hits == 1
    tabled_api.update(STURDY_QUESTION, isWithdrawn=True)
    tuesday = datetime(2021, 2, 2, 6, 0, tzinfo=UTC)
    await run_once(runtime, now=tuesday)
    report = await run_once(runtime, now=tuesday + timedelta(hours=1, minutes=1))
    assert report.sent == 0 and _ledger(runtime, STURDY_QUESTION) == []
