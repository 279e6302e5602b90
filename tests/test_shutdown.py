"""SIGTERM as an operator sends it: the installed `alertd run` stops claiming, lets the send in
flight finish, and exits 0 without a traceback; a hanging poll is abandoned at once."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alertd.cli import main

from configs import write_config
from smtp_server import SmtpSink
from standin_api import StandinApi
from waiting import wait_until

# End-to-end: real processes, an SMTP server and timeouts.
pytestmark = pytest.mark.slow

SLOW_DATA_S = 5.0


def _alertd() -> str:
    # The console script pip installed next to this interpreter, as an operator runs it.
    found = shutil.which("alertd", path=str(Path(sys.executable).parent))
    assert found is not None
    return found


def _start(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ALERTD_CONFIG": str(config)}
    return subprocess.Popen([_alertd(), "run", *args], env=env, stderr=subprocess.PIPE, text=True)


def _outbox_column(database: Path, column: str) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [value for (value,) in connection.execute(f"SELECT {column} FROM outbox")]


def _outbox_statuses(database: Path) -> list[str]:
    return _outbox_column(database, "status")


def _lease_end(database: Path) -> datetime:
    """The end of the one outbox row's lease (stored as naive UTC)."""
    [until] = _outbox_column(database, "lease_until")
    return datetime.fromisoformat(until).replace(tzinfo=UTC)


def _wait_past(moment: datetime, what: str) -> None:
    wait_until(lambda: datetime.now(UTC) > moment, 30, what)


def test_sigterm_during_a_send_lets_it_finish_and_it_arrives_once(
    tmp_path: Path, standin_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    config = write_config(
        tmp_path,
        standin_api,
        smtp_sink,
        # A short lease: a row left "sending" would be taken over (and sent again) soon.
        delivery={"lease_s": 1.0, "send_interval_s": 0.5, "shutdown_timeout_s": 20.0},
    )
    args = ["subscribe", "parent@example.org", '"special educational needs"', "--confirmed"]
    assert main([*args, "--frequency", "immediate", "--config", str(config)]) == 0
    stalled = smtp_sink.stall_next("data", SLOW_DATA_S)
    process = _start(config)
    database = tmp_path / "alertd.db"
    wait_until(lambda: _outbox_statuses(database) == ["sending"], 60, "the send to start")
    # The message is on its way: the server sits on the end of DATA.
    wait_until(lambda: stalled.hits, 60, "the message's DATA")
    lease_end = _lease_end(database)  # no renewal once the message is on its way
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    waited_s = time.monotonic() - signalled
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    assert waited_s < SLOW_DATA_S + 5, err
    assert len(smtp_sink.messages) == 1
    assert _outbox_statuses(database) == ["sent"]
    # What arrived is the message of the row marked sent: the send in flight finished.
    assert [str(m.message["Message-ID"]) for m in smtp_sink.messages] == _outbox_column(
        database, "message_id"
    )
    # The next run, after the lease would have run out, has nothing to send again.
    _wait_past(lease_end, "the lease to run out")
    process = _start(config, "--once")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert len(smtp_sink.messages) == 1


@pytest.mark.parametrize(
    ("once", "signum"),
    [(False, signal.SIGTERM), (True, signal.SIGTERM), (True, signal.SIGINT)],
    ids=["daemon", "once", "once-ctrl-c"],
)
def test_sigterm_during_a_hanging_poll_exits_at_once_with_one_line(
    tmp_path: Path, standin_api: StandinApi, once: bool, signum: signal.Signals
) -> None:
    # The source never answers (within the test), and the client would wait a minute.
    config = write_config(
        tmp_path, standin_api, parliament={"timeout_s": 60.0}, delivery={"shutdown_timeout_s": 30.0}
    )
    hanging = standin_api.fail_next("list", "hang", count=None, seconds=120)
    process = _start(config, *(["--once"] if once else []))
    wait_until(lambda: standin_api.requests, 60, "the poll to start")
    wait_until(lambda: hanging.hits, 60, "the poll to hang")
    signalled = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=40)
    assert process.returncode == 0, err
    assert time.monotonic() - signalled < 5, err
    assert "Traceback" not in err, err
    about_the_poll = [line for line in err.splitlines() if "poll" in line and "running" not in line]
    assert len(about_the_poll) == 1, err
    assert "abandoned" in about_the_poll[0]
    # The abandoned poll freed its lease: a worker started now polls at once.
    with sqlite3.connect(tmp_path / "alertd.db") as connection:
        leases = connection.execute(
            "SELECT lease_owner, lease_until FROM sourcestate WHERE name = 'parliament'"
        ).fetchall()
    assert leases == [(None, None)]


def test_a_send_longer_than_the_shutdown_timeout_is_cut_off_cleanly(
    tmp_path: Path, standin_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    config = write_config(
        tmp_path, standin_api, smtp_sink, delivery={"shutdown_timeout_s": 1.0, "lease_s": 1.0}
    )
    args = ["subscribe", "parent@example.org", '"special educational needs"', "--confirmed"]
    assert main([*args, "--frequency", "immediate", "--config", str(config)]) == 0
    stalled = smtp_sink.stall_next("data", SLOW_DATA_S)
    process = _start(config)
    database = tmp_path / "alertd.db"
    wait_until(lambda: _outbox_statuses(database) == ["sending"], 60, "the send to start")
    # Claimed is not yet sending: the signal must find the message on its way.
    wait_until(lambda: stalled.hits, 60, "the message's DATA")
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    # Not at once: closing the cut-off SMTP connection still waits for the server's reply.
    assert time.monotonic() - signalled < SLOW_DATA_S + 5, err
    assert "Traceback" not in err, err
    assert "did not finish within 1s: cancelled" in err
    # Cut off mid-send: the row is still leased, and is sent by a later run (at least once).
    assert _outbox_statuses(database) == ["sending"]
    _wait_past(_lease_end(database), "the lease to run out")
    process = _start(config, "--once")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert _outbox_statuses(database) == ["sent"]
    assert len(smtp_sink.messages) >= 1
