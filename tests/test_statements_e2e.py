"""Written statements end to end: the installed CLI in subprocesses, the stand-in API, real SMTP."""

from __future__ import annotations

import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa

from configs import write_config
from smtp_server import SmtpSink
from standin_api import StandinApi, load_2021_statements

HONG_KONG_HC = 1282160  # HCWS751, Priti Patel, Home Office, 1 Feb 2021
OFFICIAL = "https://questions-statements.parliament.uk/written-statements/detail/2021-02-01/"

pytestmark = pytest.mark.slow


def _alertd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "alertd", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def _subscribe(config: Path, email: str, query: str) -> None:
    _alertd(config, "subscribe", email, query, "--frequency", "immediate", "--confirmed")


def _by_recipient(sink: SmtpSink) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for message in sink.messages:
        found.setdefault(message.rcpt_tos[0], []).append(message.message)
    return found


def _plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


def _an_interval_later(tmp_path: Path) -> None:
    """As if the statements' poll interval had passed (the CLI runs on the real clock)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/alertd.db")
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE sourcestate SET last_ok_at = NULL WHERE name = 'statements'")
        )
    engine.dispose()


@pytest.fixture
def config(tmp_path: Path, standin_api: StandinApi, smtp_sink: SmtpSink) -> Path:
    for statement in load_2021_statements():
        standin_api.put_statement(statement)
    return write_config(tmp_path, standin_api, smtp_sink)


def test_topic_alerts_get_matching_statements_and_type_narrows(
    config: Path, smtp_sink: SmtpSink
) -> None:
    _subscribe(config, "both@example.org", '"hong kong"')
    _subscribe(config, "statements@example.org", '"hong kong" type:statement')
    _subscribe(config, "questions@example.org", '"hong kong" type:question')
    _alertd(config, "run", "--once")
    mail = _by_recipient(smtp_sink)
    assert sorted(mail) == ["both@example.org", "questions@example.org", "statements@example.org"]
    assert all(len(messages) == 1 for messages in mail.values())

    both = mail["both@example.org"][0]
    # Two of the three answers were given together (groupedQuestions): shown once.
    assert both["Subject"] == "2 new answers and 2 new statements: hong kong"
    answers, statements = _plain(both).split("\nWritten statements\n")
    assert "Answered by" in answers and "HCWS" not in answers
    assert "Launch of the Hong Kong British National (Overseas) route" in statements
    assert "Home Office" in statements
    assert "Made by Priti Patel, The Secretary of State for the Home Department" in statements
    assert "Made 1 February 2021 (Commons HCWS751)" in statements
    assert "*Hong Kong*" in statements
    assert OFFICIAL + "HCWS751" in statements and OFFICIAL + "HLWS745" in statements
    html = both.get_body(("html",))
    assert isinstance(html, EmailMessage)
    assert f'href="{OFFICIAL}HCWS751"' in str(html.get_content())

    only_statements = mail["statements@example.org"][0]
    assert only_statements["Subject"] == "2 new statements: hong kong, written statements"
    assert "Answered by" not in _plain(only_statements)
    only_questions = mail["questions@example.org"][0]
    assert only_questions["Subject"] == "2 new answers: hong kong, written questions"
    assert "Written statements" not in _plain(only_questions)

    # Nothing twice: another run (statements polled again) sends nothing.
    _an_interval_later(config.parent)
    _alertd(config, "run", "--once")
    assert len(smtp_sink.messages) == 3


def test_corrected_statement_goes_once_to_those_sent_the_original(
    config: Path, standin_api: StandinApi, smtp_sink: SmtpSink
) -> None:
    _subscribe(config, "home@example.org", '"bn(o)" type:statement')
    _alertd(config, "run", "--once")
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["home@example.org"]]
    first = _plain(smtp_sink.messages[0].message)
    assert "(Corrected statement)" not in first and "HCWS751" in first
    # Subscribed after the original went out: the correction is no news to them.
    _subscribe(config, "late@example.org", '"bn(o)" type:statement')

    standin_api.update_statement(
        HONG_KONG_HC,
        text="<p>I am pleased to confirm that the Hong Kong British National (Overseas) "
        "(BN(O)) route opened on 31 January 2021; applications cost £250, not £25.</p>",
    )
    _an_interval_later(config.parent)
    _alertd(config, "run", "--once")
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["home@example.org"]] * 2
    corrected = smtp_sink.messages[1].message
    assert corrected["Subject"] == "1 new statement: bn(o), written statements"
    text = " ".join(_plain(corrected).split())
    assert "Launch of the Hong Kong British National (Overseas) route (Corrected statement)" in text
    assert "applications cost £250, not £25." in text
    assert OFFICIAL + "HCWS751" in text

    _an_interval_later(config.parent)
    _alertd(config, "run", "--once")
    assert len(smtp_sink.messages) == 2
