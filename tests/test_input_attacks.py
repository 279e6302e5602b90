"""Issue 24, attacked against the running app and the installed command: typed text in
sign-up mail, mail to the address as typed, undeliverable addresses, sample and export files,
hostile import lines, weak keys and tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import Session, col, select
from test_web import (  # noqa: F401  (fixtures)
    Web,
    _confirmed,
    _form,
    _subscribe,
    any_web,
    make_web,
    stored_db,
    web,
)

from alertd.addresses import NON_ASCII_ERROR
from alertd.models import Outbox

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
