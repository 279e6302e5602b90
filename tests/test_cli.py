"""The command line: one clear line and exit 2 on bad input; the whole job end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from alertd.cli import main
from alertd.config import DatabaseSettings
from alertd.db import alembic_config, create_db_engine
from alertd.revisions import head_revision

from configs import RECORDED_DAY
from configs import write_config as _config
from smtp_server import SmtpSink
from standin_api import StandinApi


def _rows(tmp_path: Path, table: str) -> int:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/alertd.db")
    with engine.connect() as connection:
        count = connection.execute(sa.text(f"select count(*) from {table}")).scalar_one()
    engine.dispose()
    return int(count)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["subscribe", "not-an-address", "schools"], "invalid email address"),
        (["subscribe", "a@example.org\r\nBcc: b@example.org", "schools"], "invalid email address"),
        (["subscribe", "a@example.org", "   "], "empty"),
        (["subscribe", "a@example.org", '"special needs'], "quote"),
        (["subscribe", "a@example.org", "--", "-schools"], "exclu"),
        (["subscribe", "a@example.org", "colour:red"], "unknown field"),
        (["subscribe", "a@example.org", "member:99999999"], "member: no such id (ids have at most"),
        (["subscribe", "a@example.org", "schools", "--frequency", "hourly"], "unknown frequency"),
        (["subscribe", "a@example.org", "schools", "--on", "tabled"], "use answered, or tabled"),
        (["subscribe", "a@example.org", "schools", "--on", "asked"], "use answered, or tabled"),
        (["unsubscribe", "999"], "no active alert with id 999"),
        (["preview", "schools", "--days", "0"], "--days"),
        (["unsubscribe", "x"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path,
    standin_api: StandinApi,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    config = _config(tmp_path, standin_api)
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    capsys.readouterr()
    assert _exit_code([args[0], "--config", str(config), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("alertd: error:")
    assert _rows(tmp_path, "subscriber") == 0 and _rows(tmp_path, "alert") == 0


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own errors
        assert isinstance(exit_.code, int)
        return exit_.code


@pytest.mark.parametrize(
    "config_text", ["[smtp]\nport = 'twenty-five'\n", "[smtpp]\nhost = 'x'\n", "not toml ["]
)
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(config_text + f'\n[database]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    assert main(["run", "--once", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alertd: error:") and err.count("\n") == 1
    assert not (tmp_path / "x.db").exists()


def test_unreadable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


@pytest.mark.slow
def test_subscribe_list_preview_unsubscribe(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, standin_api))
    assert (
        main(["subscribe", "Parent@Example.ORG", '"special educational needs"', "--config", config])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith('alert 1 saved: Parent@example.org, "special educational needs", daily')
    alert_id = "1"
    assert main(["list", "--config", config]) == 0
    listed = capsys.readouterr().out
    assert (
        listed == '1\tParent@example.org\tdaily\tpending\tanswered\t"special educational needs"\n'
    )
    assert main(["run", "--once", "--config", config]) == 0
    days = (date.today() - RECORDED_DAY).days + 1
    assert (
        main(["preview", "special educational needs", "--days", str(days), "--config", config]) == 0
    )
    captured = capsys.readouterr()
    assert "Special Educational Needs: Coronavirus" in captured.out
    assert "1 match in the last" in captured.err and "week of 2021-02-01: 1" in captured.err
    assert main(["unsubscribe", alert_id, "--config", config]) == 0
    assert main(["list", "--config", config]) == 0
    assert capsys.readouterr().out == "alert 1 stopped\n"
    # The pending alert got nothing but its confirmation email: it was never confirmed.
    [mail] = [path.read_text() for path in (tmp_path / "mail" / "new").iterdir()]
    assert "Subject: Confirm your alert" in mail


@pytest.mark.migrations
def test_list_brings_a_new_or_an_older_database_up_to_date_first(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, standin_api))
    assert main(["list", "--config", config]) == 0  # no file yet: made, at the newest migration
    assert capsys.readouterr().err == "no alerts\n"
    assert main(["subscribe", "a@example.org", "school", "--confirmed", "--config", config]) == 0
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/alertd.db"))
    command.downgrade(alembic_config(engine), "0009")  # as left by an older alertd
    capsys.readouterr()
    assert main(["list", "--config", config]) == 0
    assert capsys.readouterr().out == "1\ta@example.org\tdaily\tconfirmed\tanswered\tschool\n"
    with engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        assert version.scalar_one() == head_revision()
    engine.dispose()


def test_list_of_a_file_that_is_no_database_is_one_line(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, standin_api))
    (tmp_path / "alertd.db").write_bytes(b"not a database, but a text file " * 100)
    assert main(["list", "--config", config]) != 0
    err = capsys.readouterr().err
    assert err.startswith("alertd: error:") and err.count("\n") == 1, err
    assert "file is not a database" in err


@pytest.mark.slow
def test_end_to_end_two_subscribers_over_smtp(
    tmp_path: Path, standin_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    config = str(_config(tmp_path, standin_api, smtp_sink))
    common = ["--frequency", "immediate", "--confirmed", "--config", config]
    assert main(["subscribe", "parent@example.org", '"special educational needs"', *common]) == 0
    assert main(["subscribe", "researcher@example.org", "member:1397", *common]) == 0
    assert main(["run", "--once", "--config", config]) == 0
    by_recipient = {m.rcpt_tos[0]: m for m in smtp_sink.messages}
    assert sorted(by_recipient) == ["parent@example.org", "researcher@example.org"]
    assert len(smtp_sink.messages) == 2
    parent = by_recipient["parent@example.org"].message
    assert parent["Subject"] == "1 new answer: special educational needs"
    # Hywel Williams asked four recorded questions; one has only a holding answer.
    researcher = by_recipient["researcher@example.org"].message
    assert researcher["Subject"] == "3 new answers: Hywel Williams"
    holding = standin_api.get(1280713)
    assert holding is not None
    assert holding["uin"] not in researcher.as_string()
    assert main(["run", "--once", "--config", config]) == 0
    assert len(smtp_sink.messages) == 2


def test_run_once_exits_1_when_the_api_fails(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    standin_api.fail_next("list", 503)
    assert main(["run", "--once", "--config", str(_config(tmp_path, standin_api))]) == 1
    assert standin_api.base_url in capsys.readouterr().err


@pytest.mark.slow
def test_daemon_stops_cleanly_on_sigterm(tmp_path: Path, standin_api: StandinApi) -> None:
    config = _config(tmp_path, standin_api)
    env = {**os.environ, "ALERTD_CONFIG": str(config)}
    assert (
        main(
            [
                "subscribe",
                "parent@example.org",
                '"special educational needs"',
                "--frequency",
                "immediate",
                "--confirmed",
                "--config",
                str(config),
            ]
        )
        == 0
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "alertd", "run"], env=env, stderr=subprocess.PIPE, text=True
    )
    maildir = tmp_path / "mail" / "new"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (maildir.exists() and any(maildir.iterdir())):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert len(list(maildir.iterdir())) == 1
    # One cycle at start (sending what is due, beside the poll), then one after each source
    # polled (Parliament, statements): the daemon stops cleanly after them.
    assert re.search(r"alertd stopped after \d+ cycles", err), err


@pytest.mark.slow
def test_broad_alert_is_refused_unless_forced(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, standin_api))
    assert main(["run", "--once", "--config", config]) == 0  # stores the 469 answers of a day
    capsys.readouterr()
    assert main(["subscribe", "a@example.org", "department", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "answers a day over the stored history" in err and "--force" in err
    assert main(["list", "--config", config]) == 0
    assert capsys.readouterr().out == ""
    assert main(["subscribe", "a@example.org", "department", "--force", "--config", config]) == 0
    assert "warning: this alert would have matched" in capsys.readouterr().err
    assert (
        main(["subscribe", "a@example.org", '"special educational needs"', "--config", config]) == 0
    )


@pytest.mark.slow
def test_unknown_member_name_suggests_close_matches(
    tmp_path: Path, standin_api: StandinApi, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, standin_api))
    assert main(["run", "--once", "--config", config]) == 0
    capsys.readouterr()
    assert main(["subscribe", "a@example.org", 'member:"Hywel Wiliams"', "--config", config]) == 2
    err = capsys.readouterr().err
    assert "unknown Member 'Hywel Wiliams'" in err and "Hywel Williams" in err
    assert main(["subscribe", "a@example.org", 'member:"hywel williams"', "--config", config]) == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path}/alertd.db")
    with engine.connect() as connection:
        stored = connection.execute(sa.text("select canonical from alert")).scalar_one()
    engine.dispose()
    assert stored == "member:1397"  # the id is what is stored, not the name


def test_global_options_go_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/a.db"\n')
    assert main(["--config", str(config), "subscribe", "a@example.org", "schools"]) == 0
    capsys.readouterr()
    assert main(["-v", "list", "--config", str(config)]) == 0
    assert main(["--config", str(config), "-v", "list"]) == 0
    assert capsys.readouterr().out.count("a@example.org") == 2
    # Given after the command too, the later one wins.
    assert main(["--config", str(tmp_path / "none.toml"), "list", "--config", str(config)]) == 0
    assert "a@example.org" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("alertd ")


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path: Path) -> None:
    # As `alertd list | head -1` meets it: the reader is gone before alertd writes.
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/a.db"\n')
    for n in range(3):
        assert main(["subscribe", f"p{n}@example.org", "schools", "--config", str(config)]) == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "alertd", "list", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert err == ""
