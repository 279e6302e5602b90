"""The quick commands import only what they use: the installed `alertd`, run as people run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alertd.cli import main
from alertd.schedule import Frequency

ALERTD = Path(sys.executable).with_name("alertd")
# Never needed by --help, list, subscribe or preview: the web app, the scheduler, the
# daemon, the mail and digest stacks, the HTTP clients, and Alembic on an up-to-date database.
HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "alertd.web",
    "apscheduler",
    "alertd.daemon",
    "alertd.pipeline",
    "alertd.mail",
    "alertd.digests",
    "alertd.sources",
    "css_inline",
    "dkim",
    "aiosmtplib",
    "jinja2",
    "httpx",
    "feedparser",
    "prometheus_client",
    "rich",
    "alembic",
)


def _imported(args: list[str], env: dict[str, str]) -> set[str]:
    """The modules the installed command imported (from ``python -X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ALERTD), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    env["ALERTD_DATABASE__URL"] = f"sqlite:///{tmp_path}/alertd.db"
    # Brought up to date once, as any earlier command (or `alertd run`) would have.
    subprocess.run([str(ALERTD), "db", "upgrade"], env=env, check=True, capture_output=True)
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list"],
        ["subscribe", "parent@example.org", '"special educational needs"', "--confirmed"],
        ["preview", "school funding", "--days", "30"],
    ],
    ids=["help", "list", "subscribe", "preview"],
)
def test_quick_commands_never_import_the_web_app_or_the_scheduler(
    args: list[str], cli_env: dict[str, str]
) -> None:
    imported = _imported(args, cli_env)
    assert "alertd.cli" in imported  # the probe sees our imports at all
    loaded = sorted(m for m in imported for h in HEAVY if m == h or m.startswith(f"{h}."))
    assert loaded == []


@pytest.mark.slow
def test_an_unconfirmed_subscribe_queues_its_mail_without_the_web_app(
    cli_env: dict[str, str],
) -> None:
    # It builds and queues the confirmation email (the mail stack), as the web does, but
    # needs neither the web app nor the scheduler for it.
    imported = _imported(["subscribe", "parent@example.org", "school funding"], cli_env)
    assert "alertd.mail.transactional" in imported
    web_or_scheduler = ("fastapi", "starlette", "uvicorn", "alertd.web", "apscheduler")
    assert (
        sorted(m for m in imported for h in web_or_scheduler if m == h or m.startswith(f"{h}."))
        == []
    )


@pytest.mark.slow
def test_help_imports_no_database_or_settings_library(cli_env: dict[str, str]) -> None:
    imported = _imported(["--help"], cli_env)
    assert not {"sqlalchemy", "pydantic", "sqlmodel", "alertd.config"} & imported


@pytest.mark.slow
def test_list_on_an_up_to_date_sqlite_file_imports_no_sqlalchemy(cli_env: dict[str, str]) -> None:
    # Importing SQLAlchemy was most of what kept `alertd list` over 300 ms (bench/): on an
    # up-to-date SQLite file it reads with the standard library's sqlite3.
    for args in (
        ["school", "--confirmed"],
        ['"special educational needs"', "--on", "tabled,answered"],
    ):
        subprocess.run(
            [str(ALERTD), "subscribe", "a@example.org", *args],
            env=cli_env,
            check=True,
            capture_output=True,
        )
    imported = _imported(["list"], cli_env)
    assert "alertd.listing" in imported
    assert not {"sqlalchemy", "sqlmodel", "alertd.db", "alertd.models", "alertd.queries"} & imported
    listed = subprocess.run(
        [str(ALERTD), "list", "a@Example.ORG"], env=cli_env, capture_output=True, text=True
    )
    assert [line.split("\t") for line in listed.stdout.splitlines()] == [
        ["1", "a@example.org", "daily", "confirmed", "answered", "school"],
        [
            "2",
            "a@example.org",
            "daily",
            "pending",
            "tabled,answered",
            '"special educational needs"',
        ],
    ]


@pytest.mark.slow
def test_the_daemon_command_still_imports_what_it_runs(cli_env: dict[str, str]) -> None:
    # The probe would see these modules if a command imported them (it is not blind).
    imported = _imported(["status"], cli_env)
    assert "alertd.status" in imported and "alertd.kinds.written_question" in imported


def test_the_help_lists_the_frequencies_settings_accept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["subscribe", "--help"])
    assert "|".join(Frequency) in capsys.readouterr().out


@pytest.mark.slow
def test_bounce_imports_no_web_app_scheduler_or_digest_stack(cli_env: dict[str, str]) -> None:
    """`alertd bounce` runs once per bounce, from the MTA: it loads the mail code it needs."""
    from alertd.config import load_settings
    from alertd.mail.identity import envelope_sender

    cli_env.update(
        ALERTD_MAIL__VERP_ADDRESS="bounces@alertd.test", ALERTD_WEB__SECRET_KEY="test-secret"
    )
    settings = load_settings(None, cli_env)
    sample = Path(__file__).parent / "bounce_samples" / "postfix_dsn_delayed.eml"
    tag = envelope_sender(settings, 1).split("+", 1)[1].split("@", 1)[0]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ALERTD), "bounce"],
        env=cli_env,
        input=sample.read_text().replace("VERPTAG", tag),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "alertd.mail.bounces" in imported
    light = [h for h in HEAVY if not h.startswith(("alertd.mail", "dkim"))]
    assert sorted(m for m in imported for h in light if m == h or m.startswith(f"{h}.")) == []
