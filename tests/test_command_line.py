"""First contact with the command line: bad input writes nothing, addresses in any case are
one subscriber, `subscribe` says what it saved and mails the confirmation, `list` and
`status` name every state, `run --once` always polls, backfill loads any range of days."""

from __future__ import annotations

import mailbox
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from alertd.cli import main
from alertd.config import DatabaseSettings, FeedConfig, load_settings
from alertd.daemon import Daemon
from alertd.db import open_database
from alertd.digests.render import build_environment
from alertd.errors import ConfigError
from alertd.keys import subkeys
from alertd.mail.transports import mailer_factory
from alertd.models import Alert, BackfillDay, Outbox, SourceState, Subscriber
from alertd.pipeline import Runtime
from alertd.sources.feed_registry import add_feed
from alertd.tokens import check_age, parse_token, verify_token
from alertd.web import service
from alertd.web.service import link_secret_of

from configs import write_config
from standin_api import StandinApi
from waiting import wait_until

ALERTD = Path(sys.executable).with_name("alertd")


def _engine(tmp_path: Path) -> sa.Engine:
    return open_database(DatabaseSettings(url=f"sqlite:///{tmp_path}/alertd.db"))


def _code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(str(exit_.code))


def _plain_config(tmp_path: Path, extra: str = "") -> str:
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/alertd.db"\n{extra}')
    return str(config)


# -- bad input: one line, exit 2, nothing written ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["subscribe", "not-an-email", "nhs"], "invalid email address"),
        (["list", "not-an-email"], "invalid email address"),
        (["render-sample", "not-an-email"], "invalid email address"),
        (["subscribe", "a@example.org", '"nhs'], "quote"),
        (["subscribe", "a@example.org", "nhs", "--frequency", "hourly"], "unknown frequency"),
        (["preview", "nhs", "--days", "999999999"], "--days must be between 1 and"),
        (["render-sample", "a@example.org", "--days", "99999999"], "--days must be between"),
        (["render-sample", "a@example.org", "--out", "/nonexistent/x"], "does not exist"),
    ],
)
def test_bad_input_creates_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    config = _plain_config(tmp_path)
    assert _code([*args, "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alertd: error:") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "alertd.db").exists()


def test_a_config_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('[mail]\nfrom_name = "Caf\u00e9"\n'.encode("latin-1"))
    assert main(["list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not UTF-8 text" in err


# -- one subscriber per address, whatever its case -----------------------------------------------


def test_an_address_in_another_case_is_the_same_subscriber(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _plain_config(tmp_path)
    confirmed = ["--confirmed", "--config", config]
    assert main(["subscribe", "Parent@Example.ORG", "schools", *confirmed]) == 0
    assert main(["subscribe", "parent@example.org", "nhs", *confirmed]) == 0
    capsys.readouterr()
    with Session(engine := _engine(tmp_path)) as session:
        [subscriber] = session.exec(select(Subscriber)).all()
    engine.dispose()
    # What was typed first is kept for display and mail.
    assert subscriber.email == "Parent@example.org"
    assert main(["list", "PARENT@example.org", "--config", config]) == 0
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == [
        "Parent@example.org",
        "Parent@example.org",
    ]
    # The same alert again is refused in one line, and nothing is saved.
    assert main(["subscribe", "parent@EXAMPLE.org", "Schools", "--config", config]) == 2
    err = capsys.readouterr().err
    assert err == "alertd: error: Parent@example.org already has this alert (id 1)\n"
    with Session(engine := _engine(tmp_path)) as session:
        assert len(session.exec(select(Alert)).all()) == 2
    engine.dispose()


# -- what subscribe, list and status say ---------------------------------------------------------


def test_subscribe_says_what_it_saved_and_when_it_first_mails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _plain_config(tmp_path, '[digest]\ndaily_at = "07:00:00"\ntimezone = "UTC"\n')
    args = ["--frequency", "weekly", "--confirmed", "--config", config]
    assert main(["subscribe", "a@example.org", "school  funding", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "alert 1 saved: a@example.org, school funding, weekly"
    assert re.fullmatch(
        r"first mail: in the weekly digest of Mon \d\d \w{3} \d{4} at 07:00 \(UTC\), "
        r"if anything matches",
        lines[1],
    ), lines[1]
    args = ["--frequency", "immediate", "--confirmed", "--config", config]
    assert main(["subscribe", "a@example.org", "nhs", *args]) == 0
    assert "within minutes" in capsys.readouterr().out


def test_list_shows_paused_alerts_as_paused_and_status_counts_the_unsubscribed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _plain_config(tmp_path)
    for address in ("a@example.org", "b@example.org"):
        assert main(["subscribe", address, "schools", "--confirmed", "--config", config]) == 0
    engine = _engine(tmp_path)
    service.update_alert(engine, 1, 1, now=datetime.now(UTC), paused=True)
    engine.dispose()
    assert main(["unsubscribe", "2", "--config", config]) == 0
    capsys.readouterr()
    assert main(["list", "--config", config]) == 0
    assert capsys.readouterr().out.split("\t")[3] == "paused"
    main(["status", "--config", config])
    assert "1 confirmed, 0 pending, 1 unsubscribed, 0 suspended" in capsys.readouterr().out


def test_subscribe_without_confirmed_mails_the_confirmation(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, standin_api, parliament={"enabled": False}))
    assert main(["subscribe", "Parent@Example.ORG", "schools", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "confirmation mail to Parent@example.org is queued" in out
    with Session(engine := _engine(tmp_path)) as session:
        [queued] = session.exec(select(Outbox)).all()
    engine.dispose()
    assert queued.subject == "Confirm your alert" and queued.recipient == "Parent@example.org"
    # The next run sends it; its link confirms alert 1.
    assert main(["run", "--once", "--config", config]) == 0
    [key] = mailbox.Maildir(tmp_path / "mail", create=False).keys()
    raw = mailbox.Maildir(tmp_path / "mail", create=False).get_bytes(key)
    message = message_from_bytes(raw, policy=default)
    text = str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    token = re.search(r"/confirm/(\S+)", text)
    assert token is not None
    parsed = parse_token("confirm", token.group(1), expiring=True)
    keys = subkeys(load_settings(config), "links")
    assert verify_token(parsed, keys, link_secret_of(_engine(tmp_path), "confirm", 1)) == 1
    check_age(parsed, timedelta(days=7), datetime.now(UTC))


def test_a_member_named_on_a_fresh_install_is_found_through_the_members_api(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, standin_api, members={"base_url": standin_api.base_url}))
    query = 'member:"Sir Keir Starmer"'
    assert main(["subscribe", "a@example.org", query, "--confirmed", "--config", config]) == 0
    assert capsys.readouterr().out.startswith(f"alert 1 saved: a@example.org, {query}, daily")
    with Session(engine := _engine(tmp_path)) as session:
        [alert] = session.exec(select(Alert)).all()
    engine.dispose()
    assert re.fullmatch(r"member:\d+", alert.canonical)
    # A name the API does not know either is still one line.
    query = 'member:"Nobody Atall"'
    assert main(["subscribe", "a@example.org", query, "--config", config]) == 2
    assert "unknown Member 'Nobody Atall'" in capsys.readouterr().err


# -- feeds: names as people write them -----------------------------------------------------------


def test_the_example_feed_name_is_accepted_and_refusals_are_in_words(tmp_path: Path) -> None:
    example = (Path(__file__).parents[1] / "config.example.toml").read_text()
    block = example[example.index("# [[feeds]]") :].splitlines()[:3]
    config = tmp_path / "feeds.toml"
    config.write_text("\n".join(line.removeprefix("# ") for line in block) + "\n")
    [feed] = load_settings(str(config)).feeds
    assert feed.name == "TheyWorkForYou: special educational needs"
    for name, words in [
        (" padded", "start with a letter or a digit"),
        ("bell\\u0007", "control characters"),  # a TOML escape
        ("x" * 96, "at most 95 characters"),
    ]:
        config.write_text(f'[[feeds]]\nname = "{name}"\nurl = "https://example.org/feed"\n')
        with pytest.raises(ConfigError, match=words) as refused:
            load_settings(str(config))
        assert "[" not in str(refused.value).partition("name: ")[2]  # no regex
    assert FeedConfig(name="GOV.UK: DfE (news)", url="https://example.org/f").name


# -- backfill: any range, resumable, Ctrl-C ------------------------------------------------------


@pytest.mark.slow
def test_backfill_loads_an_earlier_range_after_a_later_one(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, standin_api))
    assert main(["backfill", "--from", "2021-02-01", "--to", "2021-02-02", "--config", config]) == 0
    assert "469 answer versions and 0 written statements stored" in capsys.readouterr().err
    standin_api.clear_requests()
    assert main(["backfill", "--from", "2021-01-25", "--to", "2021-01-26", "--config", config]) == 0
    err = capsys.readouterr().err
    assert "backfill 2021-01-25: day 1/2" in err and "backfill 2021-01-26: day 2/2" in err
    asked = " ".join(path for _, path in standin_api.requests)
    assert "2021-01-25" in asked and "2021-02-01" not in asked
    # A range overlapping both loads only the days between them.
    standin_api.clear_requests()
    args = ["backfill", "--from", "2021-01-26", "--to", "2021-02-01", "--config", config]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "day 2/7" in err and "day 6/7" in err and "day 1/7" not in err and "day 7/7" not in err


@pytest.mark.slow
def test_ctrl_c_in_backfill_is_one_line_and_keeps_the_days_done(
    tmp_path: Path, standin_api: StandinApi
) -> None:
    config = str(write_config(tmp_path, standin_api))
    # The first day has no answers; the second hangs fetching its answers' details.
    hanging = standin_api.fail_next("detail", "hang", count=None)
    with subprocess.Popen(
        [str(ALERTD), "backfill", "--from", "2021-01-31", "--to", "2021-02-03", "--config", config],
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        for line in process.stderr:
            if "day 1/4" in line:
                break
        wait_until(lambda: hanging.hits, 60, "the second day's details to hang")
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=30) == 130
    assert "Traceback" not in rest and len(rest.splitlines()) == 1, rest
    assert rest == "alertd: backfill interrupted: what was done is kept; run it again to go on\n"
    with Session(engine := _engine(tmp_path)) as session:
        done = session.exec(select(BackfillDay.source, BackfillDay.day)).all()
    engine.dispose()
    # The first day's answers and statements; the second day's answers were still loading.
    assert sorted(done) == [("parliament", date(2021, 1, 31)), ("statements", date(2021, 1, 31))]


# -- alertd run ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_once_always_polls(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, standin_api))
    assert main(["run", "--once", "--config", config]) == 0
    standin_api.clear_requests()
    capsys.readouterr()
    assert main(["run", "--once", "--config", config, "-v"]) == 0
    err = capsys.readouterr().err
    assert any("/writtenquestions/questions?" in path for _, path in standin_api.requests)
    assert "skipped" not in err and "polled parliament: 469 listed, 0 new items" in err


@pytest.mark.slow
def test_a_busy_port_is_one_line_and_holds_no_lease(
    tmp_path: Path, standin_api: StandinApi
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, standin_api, web={"port": port})
        done = subprocess.run(
            [str(ALERTD), "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr == (
        f"alertd: error: web: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
    with Session(engine := _engine(tmp_path)) as session:
        held = session.exec(select(SourceState).where(SourceState.lease_owner != None)).all()  # noqa: E711
    engine.dispose()
    assert held == []


@pytest.mark.slow
def test_run_says_where_the_web_app_listens_and_stops_last(
    tmp_path: Path, standin_api: StandinApi
) -> None:
    config = write_config(tmp_path, standin_api)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    with subprocess.Popen(
        [str(ALERTD), "run", "--config", str(config)], stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stderr is not None
        # Whatever happens, the daemon is gone within 90 s: a missing line fails, never hangs.
        guard = threading.Timer(90, process.kill)
        guard.start()
        lines = []
        try:
            for line in process.stderr:
                lines.append(line)
                if "poll finished" in line:
                    break
            process.send_signal(signal.SIGTERM)
            lines.extend(process.stderr)
            assert process.wait(timeout=60) == 0, "".join(lines)
        finally:
            guard.cancel()
    listening = next(line for line in lines if "web app listening on 127.0.0.1:" in line)
    assert "http://localhost:8000" in listening
    # The daemon's last word, after the web app's sender finished.
    assert re.search(r"alertd stopped after \d+ cycles", lines[-1]), "".join(lines)


async def test_the_daemon_polls_as_often_as_its_most_frequent_feed(
    tmp_path: Path, standin_api: StandinApi
) -> None:
    config = write_config(tmp_path, standin_api, parliament={"poll_interval_minutes": 60})
    settings = load_settings(str(config))
    engine = _engine(tmp_path)
    mailer = mailer_factory("maildir", tmp_path, settings.smtp)
    daemon = Daemon(Runtime(settings, engine, mailer, build_environment()))
    add_feed(engine, "Slow news", "https://example.org/slow", 120)
    assert daemon.poll_every_minutes() == 60
    add_feed(engine, "Quick news", "https://example.org/quick", 5)
    assert daemon.poll_every_minutes() == 5
    trigger = daemon.build_scheduler(5).get_job("poll").trigger
    assert trigger.interval == timedelta(minutes=5)
    engine.dispose()
