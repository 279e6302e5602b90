"""Operating alertd: status and its exit codes, backfill with progress, no flood for new alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from alertd.cli import main
from alertd.config import DatabaseSettings, Settings
from alertd.db import open_database, transaction
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import build_environment
from alertd.kinds.statement import Statement
from alertd.models import Item, Outbox, OutboxState, SourceState, Subscriber
from alertd.status import collect_status, format_status

from configs import write_config as _config
from standin_api import StandinApi, load_2021_statements


def _engine(tmp_path: Path) -> sa.Engine:
    return open_database(DatabaseSettings(url=f"sqlite:///{tmp_path}/alertd.db"))


def _status(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["status", "--json", "--config", str(config)])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_status_healthy_after_a_run(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, standin_api)
    assert (
        main(["subscribe", "a@example.org", "schools", "--confirmed", "--config", str(config)]) == 0
    )
    assert main(["run", "--once", "--config", str(config)]) == 0
    capsys.readouterr()
    code, status = _status(config, capsys)
    assert code == 0 and status["healthy"] is True
    assert status["items_stored"] == 469
    assert status["subscribers"] == {
        "confirmed": 1,
        "pending": 0,
        "unsubscribed": 0,
        "suspended": 0,
    }
    assert status["alerts_by_frequency"] == {"daily": 1}
    assert main(["status", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "source parliament: last poll" in text and "469 new" in text and "healthy" in text


def test_status_counts_no_digest_run_on_a_new_database(db_engine: sa.Engine) -> None:
    engine = db_engine
    settings = Settings()
    env = build_environment(settings)
    first = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    # The first run of a new database only marks the periods under way as done.
    assert compose_due_digests(engine, settings, env, now=first) == 0
    status = collect_status(engine, settings, now=first + timedelta(hours=1))
    assert status.last_digest_run is None
    assert "last daily/weekly digest run: none yet" in format_status(status)
    # The next morning's run (07:00 London) is a real one.
    morning = datetime(2026, 3, 5, 7, 5, tzinfo=UTC)
    assert compose_due_digests(engine, settings, env, now=morning) == 0
    status = collect_status(engine, settings, now=morning + timedelta(hours=1))
    assert status.last_digest_run == morning
    assert "last daily/weekly digest run: 2026-03-05 07:05Z" in format_status(status)


def test_status_flags_a_failing_source(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, standin_api)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with transaction(_engine(tmp_path)) as session:
        session.add(
            SourceState(
                name="parliament",
                last_poll_at=datetime.now(UTC),
                last_ok_at=long_ago,
                last_error="GET … answered HTTP 503",
            )
        )
    code, status = _status(config, capsys)
    assert code == 1 and status["healthy"] is False
    assert "source parliament failing since" in str(status["problems"])


def test_status_flags_a_source_that_never_polled_well_and_forgets_removed_feeds(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, standin_api)
    now = datetime.now(UTC)
    with transaction(_engine(tmp_path)) as session:
        # Polled a minute ago and never once successfully (a fresh install that cannot
        # reach the API), and a feed that failed long ago but has since been removed.
        session.add(SourceState(name="parliament", last_poll_at=now, last_error="no route"))
        session.add(
            SourceState(
                name="feed:gone",
                last_poll_at=now - timedelta(hours=1),
                last_ok_at=now - timedelta(hours=5),
                last_error="HTTP 404",
            )
        )
    code, status = _status(config, capsys)
    assert code == 1
    assert status["problems"] == ["source parliament has never polled successfully: no route"]
    # The statements source is listed too (not polled yet), and the removed feed is not.
    assert [source["name"] for source in status["sources"]] == ["parliament", "statements"]


@pytest.mark.parametrize(
    ("state", "age_h", "problem"),
    [
        (OutboxState.DEAD, 0, "dead letters"),
        (OutboxState.PENDING, 2, "oldest unsent digest has waited"),
        (OutboxState.RETRY, 3, "oldest unsent digest has waited"),
    ],
)
def test_status_flags_outbox_trouble(
    tmp_path: Path,
    standin_api: StandinApi,
    capsys: pytest.CaptureFixture[str],
    state: OutboxState,
    age_h: int,
    problem: str,
) -> None:
    config = _config(tmp_path, standin_api)
    created = datetime.now(UTC) - timedelta(hours=age_h)
    with transaction(_engine(tmp_path)) as session:
        subscriber = Subscriber(email="a@example.org", created_at=created)
        session.add(subscriber)
        session.flush()
        assert subscriber.id is not None
        session.add(
            Outbox(
                subscriber_id=subscriber.id,
                recipient="a@example.org",
                message_id="<m@alertd.test>",
                message=b"x",
                status=state,
                created_at=created,
                next_attempt_at=created,
            )
        )
    code, status = _status(config, capsys)
    assert code == 1 and problem in str(status["problems"])
    assert status["outbox"] == {state: 1}


@pytest.mark.slow
def test_backfill_stores_history_and_alerts_nobody(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, standin_api))
    assert (
        main(
            [
                "subscribe",
                "a@example.org",
                '"special educational needs"',
                "--frequency",
                "immediate",
                "--confirmed",
                "--config",
                config,
            ]
        )
        == 0
    )
    args = ["backfill", "--from", "2021-01-31", "--to", "2021-02-02", "--config", config]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "backfill 2021-01-31: day 1/3, 0 listed, 0 new" in err
    assert "backfill 2021-02-01: day 2/3, 469 listed, 469 new" in err
    assert "backfill done: 469 answer versions and 0 written statements stored, none alerted" in err
    with Session(_engine(tmp_path)) as session:
        assert len(session.exec(select(Item)).all()) == 469
    # The history is there for preview, and never mailed.
    standin_api.fail_next("list", 503, count=None)  # the live poll fails; only matching runs
    main(["run", "--once", "--config", config])
    assert not (tmp_path / "mail").exists()
    assert main(["preview", "special educational needs", "--days", "3000", "--config", config]) == 0
    assert "Special Educational Needs: Coronavirus" in capsys.readouterr().out


@pytest.mark.slow
def test_backfill_resumes_where_it_stopped(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, standin_api, parliament={"retry_base_s": 0.01})
    args = ["backfill", "--from", "2021-01-31", "--to", "2021-02-02", "--config", str(config)]
    standin_api.fail_next("detail", 503, count=None)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "day 1/3" in err and "day 2/3" not in err
    assert err.strip().splitlines()[-1].startswith("alertd: error: GET")
    standin_api.clear_faults()
    standin_api.clear_requests()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "day 1/3" not in err and "day 3/3" in err
    assert not any("2021-01-31" in path for _, path in standin_api.requests)


@pytest.mark.slow
def test_backfill_loads_written_statements_and_resumes_between_the_kinds(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    for statement in load_2021_statements():
        standin_api.put_statement(statement)
    config = str(_config(tmp_path, standin_api, parliament={"retry_base_s": 0.01}))
    query = '"hong kong" type:statement'
    subscribe = ["subscribe", "a@example.org", query, "--frequency", "immediate", "--confirmed"]
    assert main([*subscribe, "--config", config]) == 0
    args = ["backfill", "--from", "2021-02-01", "--to", "2021-02-01", "--config", config]
    # The day's answers load; its statements fail (as if an older alertd had loaded the day).
    standin_api.fail_next("statements", 503, count=None)
    assert main(args) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("alertd: error: GET")
    standin_api.clear_faults()
    standin_api.clear_requests()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "day 1/1, 10 listed, 10 new, 10 of them statements" in err
    assert "backfill done: 0 answer versions and 10 written statements stored" in err
    assert not any("writtenquestions" in path for _, path in standin_api.requests)
    with Session(_engine(tmp_path)) as session:
        statements = session.exec(select(Item).where(Item.kind == Statement.name)).all()
    assert len(statements) == 10 and all(s.matched_at is not None for s in statements)
    # History for preview, mailed to nobody.
    standin_api.fail_next("any", 503, count=None)  # the live polls fail; only matching runs
    main(["run", "--once", "--config", config])
    assert not (tmp_path / "mail").exists()
    assert main(["preview", query, "--days", "3000", "--config", config]) == 0
    assert "Hong Kong British National (Overseas)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from", "yesterday"], "not a date"),
        (["--from", "2021-02-03", "--to", "2021-02-01"], "after"),
    ],
)
def test_backfill_bad_dates(
    tmp_path: Path,
    standin_api: StandinApi,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    config = str(_config(tmp_path, standin_api))
    try:
        code = main(["backfill", *extra, "--config", config])
    except SystemExit as exit_:
        code = int(str(exit_.code))
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_json_logs_and_one_summary_line(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, standin_api, log={"format": "json"})
    assert main(["run", "--once", "--config", str(config)]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[-1])
    summaries = [e["message"] for e in entries if "run finished" in e["message"]]
    assert len(summaries) == 1 and "new_items=469" in summaries[0]
