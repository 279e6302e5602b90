"""Issue 24, attacked against the running app and the installed command: typed text in
sign-up mail, mail to the address as typed, undeliverable addresses, sample and export files,
hostile import lines, weak keys and tokens."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from test_web import (  # noqa: F401  (fixtures)
    BASE,
    Web,
    _confirmed,
    _form,
    _main,
    _subscribe,
    any_web,
    make_web,
    stored_db,
    web,
)

from alertd.addresses import NON_ASCII_ERROR
from alertd.config import DatabaseSettings
from alertd.db import open_database
from alertd.matching import parse_query
from alertd.models import Alert, Outbox, Subscriber
from alertd.queries import PHONE_NUMBER_ERROR

ALERTD = Path(sys.executable).with_name("alertd")


def _alertd(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ALERTD), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        check=False,
        timeout=120,
    )


def _recipients(app: Web) -> list[str]:
    with Session(app.engine) as session:
        return list(session.exec(select(Outbox.recipient).order_by(col(Outbox.id))))


# -- 7. mail goes to the stored address; an undeliverable one is refused before any write -------


async def test_mail_goes_to_the_stored_address_not_the_one_typed(any_web: Web) -> None:  # noqa: F811
    web = any_web  # noqa: F811
    await _confirmed(web, "kate@example.org")
    before = len(_recipients(web))
    asked = await web.client.post("/manage", data={"email": "KATE@example.org"})
    signed_up = await _subscribe(web, "Kate@Example.org", "school funding")
    assert asked.status_code == signed_up.status_code == 200
    assert _recipients(web)[before:] == ["kate@example.org", "kate@example.org"]
    assert [s.email for s in web.subscribers()] == ["kate@example.org"]


async def test_a_non_ascii_local_part_is_refused_before_anything_is_written(web: Web) -> None:  # noqa: F811
    address = "jos\N{LATIN SMALL LETTER E WITH ACUTE}@example.org"
    form = await _subscribe(web, address)
    api = await web.client.post("/api/alerts", json={"email": address, "query": "school"})
    manage = await web.client.post("/manage", data={"email": address})
    assert form.status_code == api.status_code == manage.status_code == 422
    assert "SMTPUTF8" in form.text and "SMTPUTF8" in manage.text
    assert api.json()["detail"][0]["msg"] == NON_ASCII_ERROR
    cli = _alertd("subscribe", address, "school", env={"ALERTD_DATABASE__URL": str(web.engine.url)})
    assert cli.returncode == 2 and cli.stderr.splitlines() == [f"alertd: error: {NON_ASCII_ERROR}"]
    assert web.subscribers() == [] and web.alerts() == [] and _recipients(web) == []


# -- 6. a phone number in a query never reaches a sign-up mail ----------------------------------

PHONE_QUERIES = [
    "07700900123 call due hmrc now refund",
    "call 0770 090 0123 hmrc refund now today please",
    "hmrc refund due now ring +44 (0)20 7946-0958",
]


@pytest.mark.parametrize("query", PHONE_QUERIES)
async def test_a_phone_number_in_a_query_is_refused_everywhere(web: Web, query: str) -> None:  # noqa: F811
    form = await _subscribe(web, "victim@example.org", query)
    assert form.status_code == 422 and "Remove the phone number" in form.text
    api = await web.client.post("/api/alerts", json={"email": "victim@example.org", "query": query})
    assert api.status_code == 422
    assert api.json()["detail"][0]["msg"].startswith(PHONE_NUMBER_ERROR)
    cli = _alertd(
        "subscribe", "victim@example.org", query, env={"ALERTD_DATABASE__URL": str(web.engine.url)}
    )
    assert cli.returncode == 2 and len(cli.stderr.splitlines()) == 1
    assert PHONE_NUMBER_ERROR in cli.stderr
    assert web.alerts() == [] and _recipients(web) == [] and web.sink.messages == []


REAL_QUERIES = [
    "member:4138",
    "school funding 2023-24",
    '"Finance Act 2024" 2024-25',
    "HL123456 OR 123456",
    "£1,000,000 grant NHS",
    "department:17 prisons",
]


async def test_real_queries_with_numbers_still_sign_up(web: Web) -> None:  # noqa: F811
    for number, query in enumerate(REAL_QUERIES):
        response = await _subscribe(web, f"real{number}@example.org", query)
        assert response.status_code == 200, (query, _main(response.text))
    assert len(web.alerts()) == len(REAL_QUERIES)


# -- 12. a patterned key or a short metrics token stops start-up --------------------------------

STRONG_KEY = "5e0b8c3f1a9d7e2c4b6a8f0d3e1c9b7a"
PUBLIC = {"ALERTD_WEB__BASE_URL": "https://alerts.example.org"}


@pytest.mark.parametrize(
    ("environ", "setting", "secret"),
    [
        ({**PUBLIC, "ALERTD_WEB__SECRET_KEY": "a" * 32}, "web.secret_key", "a" * 32),
        ({**PUBLIC, "ALERTD_WEB__SECRET_KEY": "s3cr" * 8}, "web.secret_key", "s3cr" * 8),
        (
            {**PUBLIC, "ALERTD_WEB__SECRET_KEYS": f"{STRONG_KEY},abcdefghijklmnopqrstuvwxyz012345"},
            "web.secret_keys[1]",
            "abcdefghijklmnop",
        ),
        ({"ALERTD_WEB__METRICS_TOKEN": "letmein"}, "web.metrics_token", "letmein"),
        ({"ALERTD_WEB__METRICS_TOKEN": "m" * 40}, "web.metrics_token", "m" * 40),
    ],
)
def test_a_weak_key_or_metrics_token_stops_start_up(
    tmp_path: Path, environ: dict[str, str], setting: str, secret: str
) -> None:
    database = f"sqlite:///{tmp_path}/alertd.db"
    for command in (["list"], ["web"]):
        done = _alertd(*command, env={"ALERTD_DATABASE__URL": database, **environ})
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and setting in done.stderr, done.stderr
        assert secret not in done.stderr + done.stdout
    assert not (tmp_path / "alertd.db").exists()


def test_a_random_key_and_token_start(tmp_path: Path) -> None:
    environ = {
        **PUBLIC,
        "ALERTD_WEB__SECRET_KEY": STRONG_KEY,
        "ALERTD_WEB__METRICS_TOKEN": "d41c8e7b2f9a0635e4b1c7d9f2a8e0b3",
        "ALERTD_DATABASE__URL": f"sqlite:///{tmp_path}/alertd.db",
    }
    done = _alertd("list", env=environ)
    assert done.returncode == 0, done.stderr


# -- 9. sample and export files: 0600, new, never through a link; sample links expire ----------


def _umask_022(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed command under a umask that would make files 0644."""
    return subprocess.run(
        ["sh", "-c", 'umask 022 && exec "$@"', "sh", str(ALERTD), *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), **env},
        check=False,
        timeout=120,
    )


def _regular_0600(path: Path) -> bool:
    return not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_render_sample_writes_private_files_with_links_that_expire(
    web: Web,  # noqa: F811
    tmp_path: Path,
) -> None:
    await _confirmed(web, "kate@example.org")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "digest-sample.eml").symlink_to(victim)  # planted where the sample is written
    days = (datetime.now(UTC).date() - date(2021, 2, 1)).days + 1
    env = {
        "ALERTD_DATABASE__URL": str(web.engine.url),
        "ALERTD_WEB__SECRET_KEY": web.settings.web.secret_key.get_secret_value(),
        "ALERTD_MAIL__FROM": "alerts@alertd.test",
    }
    done = _umask_022(
        "render-sample", "kate@example.org", "--out", f"{out}/", "--days", str(days), env=env
    )
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me\n"
    eml, html = out / "digest-sample.eml", out / "digest-sample.html"
    assert _regular_0600(eml) and _regular_0600(html)
    assert sorted(p.name for p in out.iterdir()) == [eml.name, html.name]  # no .partial left
    text = html.read_text()
    manage = re.search(rf"{re.escape(BASE)}(/manage/[^\"'<\s]+)", text)
    unsubscribe = re.search(rf"{re.escape(BASE)}(/unsubscribe/[^\"'<\s]+)", text)
    assert manage is not None and unsubscribe is not None
    web.clock.now = datetime.now(UTC)
    assert (await web.client.get(manage.group(1))).status_code == 200  # works for a while
    web.clock.advance(hours=24, minutes=10)
    for path in (manage.group(1), unsubscribe.group(1)):
        late = await web.client.post(path) if "unsub" in path else await web.client.get(path)
        assert late.status_code == 400 and "This link has expired" in late.text, path
    assert [alert.unsubscribed_at for alert in web.alerts()] == [None]


def test_export_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/alertd.db"
    assert _alertd(
        "subscribe", "kate@example.org", "school funding", "--confirmed",
        env={"ALERTD_DATABASE__URL": database},
    ).returncode == 0  # fmt: skip
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    backup = tmp_path / "backup.jsonl"
    planted = tmp_path / ".backup.jsonl.partial"  # the name an older alertd wrote to
    planted.symlink_to(victim)
    done = _umask_022("export", "--out", str(backup), env={"ALERTD_DATABASE__URL": database})
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me\n" and planted.is_symlink()
    assert _regular_0600(backup) and "kate@example.org" in backup.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and p != planted]


# -- 11. alertd import of hostile lines ---------------------------------------------------------


def _lines(*documents: object) -> str:
    header = json.dumps({"format": "alertd-export", "version": 1})
    return "\n".join([header, *(d if isinstance(d, str) else json.dumps(d) for d in documents)])


def test_import_refuses_hostile_lines_one_line_each(database_url: str, tmp_path: Path) -> None:
    env = {"ALERTD_DATABASE__URL": database_url}
    hostile = tmp_path / "hostile.jsonl"
    nested = '{"email": "deep@example.org", "alerts": ' + "[" * 100_000 + "]" * 100_000 + "}"
    hostile.write_text(
        _lines(
            # Shows a Member and school funding; would match every prison answer.
            {
                "email": "a@example.org",
                "alerts": [{"query": 'member:"Rushanara Ali" school', "canonical": "prison*"}],
            },
            {"email": "b@example.org", "alerts": [{"query": "x" * 600, "canonical": "x"}]},
            {"email": "c@example.org", "alerts": [{"id": 2**63 - 1, "query": "nhs"}]},
            {"id": 2**63 - 1, "email": "d@example.org", "alerts": [{"query": "nhs"}]},
            nested,
            {"email": "e@example.org", "alerts": [{"query": "nhs " * 1_500_000}]},
        )
    )
    done = _alertd("import", str(hostile), env=env)
    assert done.returncode == 2, done.stderr
    said = done.stderr.splitlines()
    assert "Traceback" not in done.stderr and len(said) == 6, done.stderr
    assert [line.split(":")[0 if i else 2].strip() for i, line in enumerate(said)] == [
        f"line {n}" for n in range(2, 8)
    ]
    assert "canonical: not the form of its query" in said[0]
    assert "query too long" in said[1]
    assert "id: not a whole number from 1 to" in said[2] and "id:" in said[3]
    assert "nested too deeply" in said[4] and "longer than" in said[5]
    assert said[-1].endswith("nothing was imported")
    engine = open_database(DatabaseSettings(url=database_url))
    with Session(engine) as session:
        assert session.exec(select(Subscriber)).all() == []
    engine.dispose()


def test_import_matches_what_the_query_says_and_leaves_ids_for_sign_ups(
    database_url: str, tmp_path: Path
) -> None:
    env = {"ALERTD_DATABASE__URL": database_url}
    lines = tmp_path / "lines.jsonl"
    lines.write_text(
        _lines(
            {
                "id": 7,
                "email": "a@example.org",
                "alerts": [{"id": 9, "query": "school funding", "canonical": "prison*"}],
            }
        )
    )
    done = _alertd("import", str(lines), env=env)
    assert done.returncode == 0, done.stderr
    later = _alertd("subscribe", "later@example.org", "nhs", "--confirmed", env=env)
    assert later.returncode == 0, later.stderr
    engine = open_database(DatabaseSettings(url=database_url))
    with Session(engine) as session:
        alerts = {a.query: a.canonical for a in session.exec(select(Alert)).all()}
    engine.dispose()
    assert alerts == {"school funding": parse_query("school funding").canonical, "nhs": "nhs"}
