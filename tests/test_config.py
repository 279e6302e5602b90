"""Settings: TOML file, environment overlay, and clear errors naming the key."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from alertd.config import load_settings
from alertd.errors import ConfigError

ROOT = Path(__file__).parent.parent


def test_defaults_without_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.database.url == "sqlite:///alertd.db"
    assert settings.parliament.base_url == "https://questions-statements-api.parliament.uk"
    assert settings.mail.delivery == "maildir"
    assert settings.digest.timezone == "Europe/London"


def test_example_file_is_the_defaults() -> None:
    assert load_settings(ROOT / "config.example.toml", environ={}) == load_settings(None, {})


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[smtp]\nhost = "mx.example.org"\nport = 2525\n[digest]\ndaily_at = "06:30"\n')
    settings = load_settings(path, environ={"ALERTD_SMTP__PORT": "587", "ALERTD_TEST_X": "1"})
    assert settings.smtp.host == "mx.example.org"
    assert settings.smtp.port == 587
    assert settings.digest.daily_at == time(6, 30)


def test_alertd_config_variable_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mail]\nfrom = "alerts@example.org"\n')
    settings = load_settings(None, environ={"ALERTD_CONFIG": str(path)})
    assert settings.mail.from_address == "alerts@example.org"


def test_settings_are_frozen() -> None:
    settings = load_settings(None, environ={})
    with pytest.raises(ValueError):
        settings.smtp.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("toml", "environ", "message"),
    [
        ("[smtp]\nhots = 'x'\n", {}, "unknown key smtp.hots"),
        ("[nosuch]\na = 1\n", {}, "unknown key nosuch"),
        ("", {"ALERTD_SMTP__HOTS": "x"}, "unknown setting ALERTD_SMTP__HOTS (environment)"),
        ("", {"ALERTD_NOSUCH__A": "1"}, "unknown setting ALERTD_NOSUCH__A (environment)"),
        # The file's unknown key is still named as the file's, beside a good variable.
        ("[smtp]\nhots = 'x'\n", {"ALERTD_SMTP__PORT": "26"}, "unknown key smtp.hots"),
        ("", {"ALERTD_SMTP__PORT": "abc"}, "smtp.port (environment ALERTD_SMTP__PORT)"),
        ("[smtp]\nport = 'abc'\n", {}, "smtp.port"),
        ("[smtp]\ntls = 'ssl'\n", {}, "smtp.tls"),
        ("[mail]\ndelivery = 'pigeon'\n", {}, "mail.delivery"),
        ("[digest]\ntimezone = 'Mars/Olympus'\n", {}, "unknown time zone"),
        ("[database]\nurl = 'mysql://x'\n", {}, "database.url"),
        ("[database]\nurl = 'sqlite:///~nosuchuser/a.db'\n", {}, "no home folder for ~nosuchuser"),
        ("[smtp\n", {}, "not valid TOML"),
        ("[smtp]\nmessages_per_connection = 0\n", {}, "smtp.messages_per_connection"),
        ("", {"ALERTD_DIGEST__RENDER_PROCESSES": "-1"}, "digest.render_processes"),
        ("[web]\npreview_concurrency = 0\n", {}, "web.preview_concurrency"),
        ("", {"ALERTD_WEB__PREVIEWS_PER_IP_PER_MINUTE": "0"}, "web.previews_per_ip_per_minute"),
        ("[web]\nbase_url = 'https://alerts.example.org'\n", {}, "web.secret_key"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, toml: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_secrets_never_printed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[smtp]\npassword = 'hunter2'\n[web]\nsecret_key = 42\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "42" not in str(caught.value)
    settings = load_settings(None, environ={"ALERTD_SMTP__PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings)


def test_an_unknown_variable_is_named_without_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"ALERTD_SMTP__PASWORD": "hunter2"})
    assert str(caught.value) == "config error: unknown setting ALERTD_SMTP__PASWORD (environment)"


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_statements_follow_parliament_unless_set() -> None:
    assert load_settings(None, {}).polls_statements
    off = {"ALERTD_PARLIAMENT__ENABLED": "false"}
    assert not load_settings(None, off).polls_statements
    only_statements = {**off, "ALERTD_STATEMENTS__ENABLED": "true"}
    assert load_settings(None, only_statements).polls_statements
    assert not load_settings(None, {"ALERTD_STATEMENTS__ENABLED": "false"}).polls_statements
