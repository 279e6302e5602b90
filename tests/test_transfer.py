"""`alertd export` / `alertd import`: a backup restores the same alerts in their states, a
move between SQLite and PostgreSQL keeps ids (so old links work), bad input writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from alertd.cli import main
from alertd.matching import Document, LiveMatcher, analyse
from alertd.transfer import import_lines


def _alertd() -> str:
    # The console script pip installed next to this interpreter, as an operator runs it.
    found = shutil.which("alertd", path=str(Path(sys.executable).parent))
    assert found is not None
    return found


def _config(tmp_path: Path, url: str, name: str) -> Path:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n[mail]\nmaildir = "{tmp_path / name}-mail"\n'
        f'from = "alerts@alertd.test"\n'
    )
    return config


def _cli(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_alertd(), "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ok(config: Path, *args: str, stdin: str | None = None) -> str:
    done = _cli(config, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(sa.text(f"select count(*) from {table}")).scalar_one()
    engine.dispose()
    return int(count)


def _without_header(export: str) -> list[dict[str, object]]:
    lines = export.splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "alertd-export" and header["version"] == 1
    return [json.loads(line) for line in lines[1:]]


def _fill(config: Path) -> None:
    _ok(config, "subscribe", "parent@example.org", '"special educational needs"', "--confirmed")
    _ok(config, "subscribe", "parent@example.org", "school funding", "--frequency", "weekly")
    _ok(config, "subscribe", "parent@example.org", "school transport", "--on", "tabled,answered")
    _ok(config, "subscribe", "researcher@example.org", "member:4138", "--confirmed")
    _ok(config, "subscribe", "researcher@example.org", "nhs dentists", "--confirmed")
    _ok(config, "unsubscribe", "5")


@pytest.mark.slow
def test_sqlite_to_postgresql_and_back_keeps_every_alert_its_state_and_id(
    tmp_path: Path, pg_database_url: str
) -> None:
    sqlite_url = f"sqlite:///{tmp_path}/alertd.db"
    old, new = _config(tmp_path, sqlite_url, "old"), _config(tmp_path, pg_database_url, "new")
    _fill(old)
    backup = tmp_path / "backup.jsonl"
    _ok(old, "export", "--out", str(backup))
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # every subscriber's address

    done = _ok(new, "import", str(backup))
    assert "2 new subscribers and 5 alerts (0 already present); ids kept" in done

    exported = _without_header(backup.read_text())
    assert _without_header(_ok(new, "export")) == exported
    alerts = [alert for subscriber in exported for alert in subscriber["alerts"]]  # type: ignore[attr-defined]
    assert [a["id"] for a in alerts] == [1, 2, 3, 4, 5]
    assert [a["confirmed"] for a in alerts] == [True, False, False, True, True]
    assert [a["unsubscribed_at"] is not None for a in alerts] == [False, False, False, False, True]
    # What each hears about moves too: a Member follow hears of questions as tabled.
    assert [a["on"] for a in alerts] == [
        ["answered"],
        ["answered"],
        ["tabled", "answered"],
        ["tabled", "answered"],
        ["answered"],
    ]

    # The sequences moved past the imported ids: a new sign-up gets a new id, and the
    # listing of the moved database is the old one's.
    _ok(new, "subscribe", "third@example.org", "rail fares", "--confirmed")
    assert _ok(new, "list").splitlines()[:4] == _ok(old, "list").splitlines()
    assert _ok(new, "list").splitlines()[4].startswith("6\tthird@example.org")

    # Run again, the import adds nothing: every alert is already there, the stopped one too.
    done = _ok(new, "import", str(backup))
    assert "0 new subscribers and 0 alerts (5 already present)" in done
    assert _count(pg_database_url, "alert") == 6


def test_alerts_from_another_system_on_stdin_join_existing_subscribers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/alertd.db"
    config = _config(tmp_path, url, "db")
    assert main(["--config", str(config), "subscribe", "parent@example.org", "school meals"]) == 0
    lines = [
        {"email": "parent@example.org", "alerts": [{"query": "school   meals"}]},
        {
            "email": "Carer@Example.ORG",
            "alerts": [
                {"query": "young carers", "frequency": "weekly"},
                {"query": '"special needs"', "confirmed_at": "2026-01-02T09:00:00+00:00"},
            ],
        },
    ]
    stdin = "\n".join(json.dumps(line) for line in lines) + "\n"
    assert "1 new subscribers and 2 alerts (1 already present)" in _ok(
        config, "import", "-", stdin=stdin
    )
    listed = [line.split("\t") for line in _ok(config, "list").splitlines()]
    assert [row[1:4] for row in listed] == [
        ["parent@example.org", "daily", "pending"],
        ["Carer@example.org", "weekly", "pending"],
        ["Carer@example.org", "daily", "confirmed"],
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 3: not JSON"),
        ('{"email": "x@example.org", "alerts": [{"query": "a", "status": 1}]}', "'status'"),
        ('{"email": "x@example.org", "colour": "red"}', "unknown subscriber field 'colour'"),
        ('{"email": "not an address"}', "line 3: invalid email address"),
        ('{"email": "x@example.org", "alerts": [{"query": "\\"open"}]}', "line 3: query"),
        ('{"email": "x@example.org", "alerts": [{"query": "a", "frequency": "hourly"}]}', "hourly"),
        (
            '{"email": "x@example.org", "alerts": [{"query": "a", "created_at": "2026-01-01"}]}',
            "created_at: no time zone",
        ),
        ('{"email": "x@example.org", "alerts": [{"query": "a", "confirmed": true}]}', "confirmed"),
        ('{"email": "x@example.org", "alerts": [{"query": "a", "on": ["tabled"]}]}', "on 'tabled'"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    url = f"sqlite:///{tmp_path}/alertd.db"
    config = _config(tmp_path, url, "db")
    good = json.dumps({"email": "good@example.org", "alerts": [{"query": "rail fares"}]})
    source = tmp_path / "in.jsonl"
    source.write_text(f"{good}\n{good.replace('good@', 'also@')}\n{line}\n")
    assert main(["--config", str(config), "import", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alertd: error:") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "alertd.db").exists()  # bad input creates no database


def test_unreadable_input_and_missing_folder_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path}/alertd.db", "db")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"email": "caf\xe9@example.org"}\n'.encode("latin-1"))
    for argv, message in [
        (["import", str(tmp_path / "missing.jsonl")], "cannot read"),
        (["import", str(latin1)], "not UTF-8 text"),
        (["export", "--out", str(tmp_path / "no" / "such" / "x.jsonl")], "no such folder"),
        (["export", "--out", str(tmp_path)], "is a folder"),
    ]:
        assert main(["--config", str(config), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("alertd: error:") and err.count("\n") == 1 and message in err
    assert not list(tmp_path.glob("**/.*.partial"))


def test_export_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path}/alertd.db", "db")
    # More than a pipe's buffer of export: the reader closes it while alertd still writes.
    many = tmp_path / "many.jsonl"
    many.write_text(
        "".join(
            json.dumps({"email": f"p{n}@example.org", "alerts": [{"query": "nhs dentists"}]}) + "\n"
            for n in range(2000)
        )
    )
    assert main(["--config", str(config), "import", str(many)]) == 0
    env = {**os.environ, "ALERTD_CONFIG": str(config)}
    done = subprocess.run(
        f"'{_alertd()}' export | head -1",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["format"] == "alertd-export"


def test_a_running_matcher_sees_imported_alerts(db_engine: Engine, tmp_path: Path) -> None:
    # The daemon's matcher reloads only alerts changed since the version it saw: an import
    # (Core inserts, not ORM objects) must still move that version.
    matcher = LiveMatcher()
    with Session(db_engine) as session:
        matcher.refresh(session)
    source = tmp_path / "in.jsonl"
    alert = {"query": "covid", "confirmed_at": "2021-01-01T00:00:00+00:00"}
    source.write_text(json.dumps({"email": "a@example.org", "alerts": [alert]}) + "\n")
    with source.open(encoding="utf-8") as lines:
        import_lines(lines, db_engine, datetime(2021, 1, 1, tzinfo=UTC))
    document = analyse(Document("Covid-19: Vaccination", "", "", "Commons"))
    with Session(db_engine) as session:
        matcher.refresh(session)
    assert [(a.id, indexes) for a, indexes in matcher.match([document])] == [(1, [0])]
