"""Unsafe settings refused at start by the installed `alertd`, and no password ever echoed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from alertd.config import DatabaseSettings, load_settings
from alertd.db import describe_error, open_database
from alertd.errors import ConfigError
from alertd.logs import setup_logging
from alertd.mail.transports import MaildirMailer

ALERTD = Path(sys.executable).with_name("alertd")
PASSWORD = "S3cretPW"
LONG_KEY = "3f9c1a7e5b2d8064c1e9a3f7b5d20c48"


def _alertd(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    env.setdefault("ALERTD_DATABASE__URL", f"sqlite:///{tmp_path}/alertd.db")
    env.update(environ)
    return subprocess.run(
        [str(ALERTD), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        # A blank line in secrets.env, a toy key, the shipped default: with a public base_url...
        ({"ALERTD_WEB__BASE_URL": "https://alerts.example.org", "ALERTD_WEB__SECRET_KEY": ""},
         "web.secret_key is shorter than 32 bytes"),
        ({"ALERTD_WEB__BASE_URL": "https://alerts.example.org", "ALERTD_WEB__SECRET_KEY": "x"},
         "web.secret_key is shorter than 32 bytes"),
        ({"ALERTD_WEB__BASE_URL": "https://alerts.example.org"}, "web.secret_key is the default"),
        # ...or a localhost base_url but listening on every interface.
        ({"ALERTD_WEB__HOST": "0.0.0.0", "ALERTD_WEB__SECRET_KEY": "k" * 31},
         "web.secret_key is shorter than 32 bytes"),
        ({"ALERTD_WEB__HOST": "192.0.2.10"}, "web.secret_key is the default"),
    ],
)  # fmt: skip
def test_a_weak_secret_key_is_refused_when_the_app_is_public(
    tmp_path: Path, environ: dict[str, str], setting: str
) -> None:
    done = _alertd(tmp_path, "list", **environ)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and setting in done.stderr, done.stderr
    assert not (tmp_path / "alertd.db").exists()  # refused before anything was written


def test_an_unknown_variable_is_named_at_start(tmp_path: Path) -> None:
    done = _alertd(tmp_path, "status", ALERTD_SMTP__PASWORD=PASSWORD)
    assert done.returncode == 2
    assert done.stderr == (
        "alertd: error: config error: unknown setting ALERTD_SMTP__PASWORD (environment)\n"
    )
    assert PASSWORD not in done.stdout


def test_a_strong_key_or_a_loopback_app_is_accepted() -> None:
    public = {"ALERTD_WEB__BASE_URL": "https://alerts.example.org"}
    assert load_settings(None, {**public, "ALERTD_WEB__SECRET_KEY": LONG_KEY})
    # A multi-byte key counts in bytes, as HMAC sees it: 12 characters, 34 bytes.
    assert load_settings(None, {**public, "ALERTD_WEB__SECRET_KEY": "€£¥₹₩₽₿฿₺₴₦₫"})
    assert load_settings(None, {"ALERTD_WEB__HOST": "::1", "ALERTD_WEB__SECRET_KEY": "x"})
    assert load_settings(None, {})  # localhost defaults: the default key is fine for trying out


def test_a_database_password_is_never_echoed(tmp_path: Path) -> None:
    # The wrong scheme ("postgres", not "postgresql"): the config error shows the URL.
    done = _alertd(tmp_path, "list", ALERTD_DATABASE__URL=f"postgres://alertd:{PASSWORD}@db/alertd")
    assert done.returncode == 2 and "database.url" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    assert "postgres://alertd:***@db/alertd" in done.stderr


@pytest.mark.slow
def test_a_database_password_is_not_in_connection_errors(tmp_path: Path) -> None:
    # A real connection to a closed port: whatever psycopg says, the password is not in it.
    url = f"postgresql+psycopg://alertd:{PASSWORD}@127.0.0.1:9/alertd?connect_timeout=2"
    done = _alertd(tmp_path, "list", ALERTD_DATABASE__URL=url)
    assert done.returncode != 0 and done.stderr.startswith("alertd: error:")
    assert PASSWORD not in done.stderr + done.stdout
    # A driver message that quotes the URL (as some do) is cut down to one line without it.
    quoting = sa.exc.OperationalError("SELECT 1", None, Exception(f"cannot use {url}\nmore"))
    assert (
        describe_error(quoting)
        == "cannot use postgresql+psycopg://alertd:***@127.0.0.1:9/alertd?connect_timeout=2"
    )


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_logs_hide_url_passwords(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(False, "INFO", fmt)
    log = logging.getLogger("alertd.test")
    log.warning("feed %s failed", f"https://reader:{PASSWORD}@feeds.example.org/rss")
    try:
        raise OSError(f"cannot reach postgresql://a:{PASSWORD}@db/x")
    except OSError:
        log.exception("database")
    err = capsys.readouterr().err
    assert "https://reader:***@feeds.example.org/rss" in err
    assert PASSWORD not in err


@pytest.mark.slow
def test_feeds_list_hides_a_feed_url_password(tmp_path: Path) -> None:
    url = f"https://reader:{PASSWORD}@feeds.example.org/rss"
    added = _alertd(tmp_path, "feeds", "add", "private", url)
    listed = _alertd(tmp_path, "feeds", "list")
    assert added.returncode == 0 and listed.returncode == 0, added.stderr + listed.stderr
    assert "reader:***@feeds.example.org" in listed.stdout
    assert PASSWORD not in added.stdout + added.stderr + listed.stdout + listed.stderr


@pytest.mark.parametrize(
    ("environ", "refused"),
    [
        ({"ALERTD_SMTP__HOST": "mail.example.org", "ALERTD_SMTP__USERNAME": "alertd"}, True),
        ({"ALERTD_SMTP__HOST": "192.0.2.25", "ALERTD_SMTP__PASSWORD": PASSWORD}, True),
        ({"ALERTD_SMTP__HOST": "127.0.0.1", "ALERTD_SMTP__PASSWORD": PASSWORD}, False),
        (
            {"ALERTD_SMTP__HOST": "mail.example.org", "ALERTD_SMTP__PASSWORD": PASSWORD,
             "ALERTD_SMTP__TLS": "starttls"},
            False,
        ),
        (
            {"ALERTD_SMTP__HOST": "mail.example.org", "ALERTD_SMTP__PASSWORD": PASSWORD,
             "ALERTD_SMTP__ALLOW_CLEARTEXT_PASSWORD": "true"},
            False,
        ),
    ],
)  # fmt: skip
def test_a_password_in_clear_to_another_host_is_refused(
    environ: dict[str, str], refused: bool
) -> None:
    environ = {"ALERTD_MAIL__DELIVERY": "smtp", **environ}
    if not refused:
        assert load_settings(None, environ).smtp.host == environ["ALERTD_SMTP__HOST"]
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ)
    message = str(caught.value)
    assert "smtp.tls" in message and "smtp.allow_cleartext_password" in message
    assert PASSWORD not in message and "\n" not in message


def test_the_daemon_refuses_a_cleartext_password_at_start(tmp_path: Path) -> None:
    done = _alertd(
        tmp_path,
        "run",
        "--once",
        ALERTD_MAIL__DELIVERY="smtp",
        ALERTD_SMTP__HOST="mail.example.org",
        ALERTD_SMTP__USERNAME="alertd",
        ALERTD_SMTP__PASSWORD=PASSWORD,
    )
    assert done.returncode == 2 and "smtp.password would be sent in clear" in done.stderr
    assert PASSWORD not in done.stderr


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the common default, under which files come out 0644
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_database_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()  # alertd never makes the folder: a mistyped path is refused (test_db)
    url = f"sqlite:///{data}/alertd.db"
    upgraded = _alertd(tmp_path, "db", "upgrade", ALERTD_DATABASE__URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert _mode(data / "alertd.db") == 0o600
    assert _mode(data / "alertd.db.migrate-lock") == 0o600
    # The -wal and -shm files exist while a connection is open.
    engine = open_database(DatabaseSettings(url=url))
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE probe (x)"))
        side_files = sorted(data.glob("alertd.db-*"))
        assert [p.name for p in side_files] == ["alertd.db-shm", "alertd.db-wal"]
        assert [_mode(p) for p in side_files] == [0o600, 0o600]
    engine.dispose()


@pytest.mark.usefixtures("umask_022")
async def test_maildir_folders_and_messages_are_private(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    async with MaildirMailer(maildir) as mailer:
        await mailer.send("alerts@example.org", "parent@example.org", b"Subject: x\r\n\r\nhi\r\n")
    for folder in (maildir, maildir / "new", maildir / "tmp", maildir / "cur"):
        assert _mode(folder) == 0o700, folder
    [message] = (maildir / "new").iterdir()
    assert _mode(message) == 0o600
    assert message.read_bytes() == b"Return-Path: <alerts@example.org>\nSubject: x\n\nhi\n"
