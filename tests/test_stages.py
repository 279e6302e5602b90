"""Isolated stages: a failing stage is reported and the later ones run; a digest that cannot
be composed is skipped for its subscriber alone, and shown in `alertd status`."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, col, select

from alertd.cli import main
from alertd.config import DatabaseSettings, Settings
from alertd.db import open_database
from alertd.digests.render import build_environment, templates_dir
from alertd.listing import list_alerts
from alertd.mail.transports import mailer_factory
from alertd.models import ComposeFailure, Hit, Outbox, Subscriber
from alertd.pipeline import Runtime, run_once
from alertd.subscriptions import lifecycle

from configs import write_config
from smtp_server import SmtpSink
from standin_api import StandinApi

# End-to-end: real processes, an SMTP server and timeouts.
pytestmark = pytest.mark.slow

MONDAY_EVENING = datetime(2021, 2, 1, 19, 0, tzinfo=UTC)
BROKEN = "broken@example.org"
READERS = ["one@example.org", "two@example.org", BROKEN, "three@example.org"]


def _templates_failing_for(folder: Path, recipient: str) -> Path:
    """The shipped digest.txt, made to fail (an undefined name) for one recipient only."""
    folder.mkdir()
    shipped = (templates_dir() / "digest.txt").read_text()
    trap = (
        f'{{% if digest.recipient == "{recipient}" %}}{{{{ digest.no_such_field }}}}{{% endif %}}'
    )
    (folder / "digest.txt").write_text(trap + "\n" + shipped)
    return folder


def _status(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = main(["status", "--json", "--config", str(config)])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("render_processes", [0, 1])
def test_one_digest_that_cannot_render_is_skipped_and_everyone_else_gets_theirs(
    tmp_path: Path,
    standin_api: StandinApi,
    smtp_sink: SmtpSink,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    render_processes: int,
    database_url: str,
) -> None:
    overrides = _templates_failing_for(tmp_path / "templates", BROKEN)
    config = write_config(
        tmp_path,
        standin_api,
        smtp_sink,
        database={"url": database_url},
        digest={"templates_dir": str(overrides), "render_processes": render_processes},
    )
    for reader in READERS:
        args = ["subscribe", reader, "schools", "--frequency", "immediate", "--confirmed"]
        assert main([*args, "--config", str(config)]) == 0
    with caplog.at_level(logging.ERROR):
        assert main(["run", "--once", "--config", str(config)]) == 0
    # Everyone else's digest went out over SMTP; none to the broken one.
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(set(READERS) - {BROKEN})
    engine = open_database(DatabaseSettings(url=database_url))
    with Session(engine) as session:
        broken = session.exec(select(Subscriber).where(Subscriber.email == BROKEN)).one()
        hits = session.exec(select(Hit).where(Hit.subscriber_id == broken.id)).all()
        assert hits and all(hit.outbox_id is None for hit in hits)  # still pending
        assert session.exec(select(Outbox).where(Outbox.recipient == BROKEN)).all() == []
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and f"subscriber {broken.id} " in skipped[0]
    assert "no_such_field" in skipped[0]
    code, status = _status(config, capsys)
    assert code == 1 and status["healthy"] is False
    problems = status["problems"]
    assert isinstance(problems, list) and len(problems) == 1
    problem = problems[0]
    assert f"subscriber {broken.id} ({BROKEN})" in problem and "no_such_field" in problem
    assert main(["status", "--config", str(config)]) == 1
    assert "ATTENTION: the digest of subscriber" in capsys.readouterr().out

    # The template is fixed: the waiting hits go out, once, and status is healthy again.
    shutil.rmtree(overrides)
    overrides.mkdir()
    assert main(["run", "--once", "--config", str(config)]) == 0
    assert len(smtp_sink.messages_to(BROKEN)) == 1
    assert len(smtp_sink.messages) == len(READERS)
    code, status = _status(config, capsys)
    assert code == 0 and status["problems"] == []
    with Session(engine) as session:
        assert session.exec(select(ComposeFailure)).all() == []
    engine.dispose()


def test_a_digest_that_keeps_failing_is_counted_and_only_shown_while_it_waits(
    tmp_path: Path,
    standin_api: StandinApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    overrides = _templates_failing_for(tmp_path / "templates", BROKEN)
    config = write_config(tmp_path, standin_api, digest={"templates_dir": str(overrides)})
    args = ["subscribe", BROKEN, "schools", "--frequency", "immediate", "--confirmed"]
    assert main([*args, "--config", str(config)]) == 0
    for _ in range(3):
        assert main(["run", "--once", "--config", str(config)]) == 0
    engine = open_database(DatabaseSettings(url=f"sqlite:///{tmp_path}/alertd.db"))
    with Session(engine) as session:
        assert session.exec(select(ComposeFailure.attempts)).one() == 3
    code, status = _status(config, capsys)
    assert code == 1 and "skipped 3 times" in str(status["problems"])
    # Unsubscribed: nothing waits any more, so nothing needs attention.
    alert_id = list_alerts(engine)[0].id
    assert alert_id is not None
    lifecycle.stop_alert(engine, alert_id, datetime.now(UTC))
    code, status = _status(config, capsys)
    assert code == 0, status
    engine.dispose()


# A trigger that names a table that does not exist: the statement it guards fails with a
# database error (not a constraint violation), as a real outage or a broken schema would.
def _break_inserts_into(engine: sa.Engine, table: str) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TRIGGER broken_{table} BEFORE INSERT ON {table} "
            "BEGIN INSERT INTO no_such_table VALUES (1); END"
        )


@pytest.fixture
def runtime(make_settings: Callable[..., Settings], standin_api: StandinApi) -> Runtime:
    settings = make_settings(
        parliament={"base_url": standin_api.base_url, "lookback_days": 1},
    )
    engine = open_database(settings.database)
    make_mailer = mailer_factory("maildir", settings.mail.maildir, settings.smtp)
    return Runtime(settings, engine, make_mailer, build_environment())


def _queue_one_digest(runtime: Runtime, email: str) -> None:
    with Session(runtime.engine) as session:
        subscriber = Subscriber(email=email, created_at=MONDAY_EVENING)
        session.add(subscriber)
        session.flush()
        assert subscriber.id is not None
        session.add(
            Outbox(
                subscriber_id=subscriber.id,
                recipient=email,
                message_id=f"<queued-{subscriber.id}@alertd.test>",
                message=b"Subject: queued earlier\r\n\r\nx\r\n",
                created_at=MONDAY_EVENING,
                next_attempt_at=MONDAY_EVENING,
            )
        )
        session.commit()


def _stage_failures(runtime: Runtime) -> dict[str, float]:
    text = runtime.metrics.exposition().decode()
    return {
        sample.labels["stage"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "alertd_stage_failures"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


@pytest.mark.parametrize(("table", "stage"), [("hit", "match"), ("ledger", "compose")])
async def test_a_failing_stage_is_reported_and_the_later_stages_still_run(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, table: str, stage: str
) -> None:
    lifecycle.subscribe(
        runtime.engine,
        "parent@example.org",
        '"special educational needs"',
        "immediate",
        confirmed=True,
        now=MONDAY_EVENING - timedelta(hours=3),
    )
    _break_inserts_into(runtime.engine, table)
    _queue_one_digest(runtime, "earlier@example.org")
    # The poll job and the send-only job alike: the stage fails, the digest queued earlier
    # still goes out.
    report = await run_once(runtime, now=MONDAY_EVENING)
    assert report.failed_stages == [stage]
    assert [error for error in report.errors if error.startswith(f"{stage}: ")], report.errors
    assert "no such table: main.no_such_table" in report.errors[-1]
    assert report.sent == 1
    _queue_one_digest(runtime, "later@example.org")
    report = await run_once(runtime, now=MONDAY_EVENING + timedelta(minutes=1), poll=False)
    assert report.failed_stages == [stage]  # still broken
    assert report.sent == 1
    logged = [r for r in caplog.records if r.getMessage().startswith(f"{stage} failed: ")]
    assert logged and logged[0].levelno == logging.ERROR
    assert _stage_failures(runtime) == {stage: 2.0}
    with Session(runtime.engine) as session:
        sent = session.exec(select(Outbox.recipient).where(col(Outbox.status) == "sent")).all()
        assert sorted(sent) == ["earlier@example.org", "later@example.org"]
    runtime.engine.dispose()
