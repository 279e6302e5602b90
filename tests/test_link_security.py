"""Issue 14, tokens and flows, attacked against the real app: key rotation, links bound to a
per-subscriber secret (sign out of all links), ids never reused, confirm links that work
once, queued digests cancelled on unsubscribe, and sign-up mails that carry no typed text."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select
from test_web import (  # noqa: F401  (fixtures)
    NOW,
    TOPIC,
    Web,
    _confirmed,
    _form,
    _main,
    _path,
    _subscribe,
    _text,
    _token,
    any_web,
    make_web,
    stored_db,
    web,
)

from alertd.config import DeliverySettings
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import build_environment
from alertd.items import add_items
from alertd.kinds.written_question import parse
from alertd.mail.outbox import queued_row, record_failure
from alertd.matching.hits import match_new_items
from alertd.models import Alert, Outbox, Subscriber
from alertd.tokens import new_link_secret

from standin_api import load_2021_answered

OLD_KEY = "old-key-" + "o" * 32
NEW_KEY = "new-key-" + "n" * 32


def _token_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


# -- key rotation --------------------------------------------------------------------------------


async def test_links_of_an_older_key_work_until_it_is_removed(
    make_web: Callable[..., Awaitable[Web]],  # noqa: F811
) -> None:
    old = await make_web(secret_key=OLD_KEY)
    manage = await _confirmed(old, "rotate@example.org")
    assert (await old.client.get(manage)).status_code == 200

    rotated = await make_web(secret_keys=[NEW_KEY, OLD_KEY])
    assert (await rotated.client.get(manage)).status_code == 200  # the old link still works
    await _subscribe(rotated, "rotate@example.org", "visas")
    fresh = _path(rotated.sink.messages_to("rotate@example.org")[-1], "manage")
    assert fresh != manage  # new links are signed with the newest key

    retired = await make_web(secret_keys=[NEW_KEY])
    response = await retired.client.get(manage)
    assert response.status_code == 400 and "This link is not valid" in response.text
    assert (await retired.client.get(fresh)).status_code == 200


# -- links bound to the subscriber's secret ------------------------------------------------------


async def test_sign_me_out_of_all_links(any_web: Web) -> None:  # noqa: F811
    app = any_web
    manage = await _confirmed(app, "leaked@example.org")
    [alert] = app.alerts()
    assert alert.id is not None
    page = await app.client.get(manage)
    feed = re.search(r"/alerts/feed/[^\"<\s]+", page.text)
    assert feed and "Sign me out of all links" in page.text
    old_links = [
        ("GET", manage),
        ("POST", f"{manage}/delete-all"),
        ("POST", f"/unsubscribe/{_token(app, 'unsubscribe', alert.subscriber_id)}"),
        ("POST", f"/alerts/stop/{_token(app, 'stop', alert.id)}"),
        ("GET", feed.group(0)),
    ]
    assert (await app.client.get(feed.group(0))).status_code == 200

    response = await app.client.post(f"{manage}/sign-out")
    assert response.status_code == 200 and "Signed out of all links" in response.text
    for method, path in old_links:
        response = await app.client.request(method, path)
        assert response.status_code == 400, (method, path)
    [alert] = app.alerts()
    assert alert.unsubscribed_at is None  # the alerts keep running
    # A fresh link (by email) works again.
    await app.client.post("/manage", data={"email": "leaked@example.org"})
    fresh = _path(app.sink.messages_to("leaked@example.org")[-1], "manage")
    assert fresh != manage and (await app.client.get(fresh)).status_code == 200


async def test_a_reused_id_never_accepts_the_old_rows_links(web: Web) -> None:  # noqa: F811
    manage = await _confirmed(web, "first@example.org")
    [first] = web.subscribers()
    assert first.id is not None
    # The old release deleted a sign-up's rows when its mail failed: the newest rows go.
    with web.engine.begin() as connection:
        for table in (Outbox, Alert, Subscriber):
            connection.execute(sa.delete(table))
    await _subscribe(web, "second@example.org")
    [second] = web.subscribers()
    assert second.id is not None and second.id > first.id  # the id is not given again
    # Even a row that did get the old id (a database restored, an old SQLite file) has a
    # secret of its own: the old link is refused.
    with web.engine.begin() as connection:
        connection.execute(
            sa.insert(Subscriber).values(
                id=first.id,
                email="third@example.org",
                created_at=NOW,
                consecutive_bounces=0,
                changed_version=0,
                link_secret=new_link_secret(),
            )
        )
    response = await web.client.get(manage)
    assert response.status_code == 400 and "third@example.org" not in response.text


def test_sqlite_ids_are_never_given_again(web: Web) -> None:  # noqa: F811
    with web.engine.connect() as connection:
        for table in ("subscriber", "alert"):
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
            ).scalar_one()
            assert "AUTOINCREMENT" in sql, sql


# -- confirm once --------------------------------------------------------------------------------


async def test_a_confirm_link_confirms_once_and_is_no_manage_link(any_web: Web) -> None:  # noqa: F811
    app = any_web
    await _subscribe(app, "once@example.org")
    confirm = _path(app.sink.messages_to("once@example.org")[0], "confirm")
    first = await app.client.post(confirm)
    assert first.status_code == 303 and first.headers["location"].startswith("/manage/")
    for method in ("GET", "POST"):
        again = await app.client.request(method, confirm)
        assert again.status_code == 200, method
        assert "already confirmed" in _main(again.text)
        assert "/manage/" not in again.text and "location" not in again.headers
    # Suspension lifted by the first use only: a replay changes nothing.
    with app.engine.begin() as connection:
        connection.execute(sa.update(Subscriber).values(suspended_at=NOW, consecutive_bounces=3))
    await app.client.post(confirm)
    [subscriber] = app.subscribers()
    assert subscriber.suspended_at is not None and subscriber.consecutive_bounces == 3


# -- queued digests after an unsubscribe ---------------------------------------------------------


def _queue_digests(app: Web) -> set[int]:
    """New answers matching the alerts, matched and composed: the outbox ids of the
    immediate digests queued."""
    with Session(app.engine) as session:
        before = set(session.exec(select(Outbox.id)))
    records = [r for r in load_2021_answered() if "visa" in str(r).lower()][:3]
    for record in records:
        record["id"] += 20_000_000
        record["heading"] += " special educational needs"
    later = app.clock.now + timedelta(minutes=5)
    add_items(app.engine, "parliament", [parse(r) for r in records], now=later, today=later.date())
    match_new_items(app.engine, now=later)
    env = build_environment(app.settings)
    assert compose_due_digests(app.engine, app.settings, env, now=later) >= 1
    with Session(app.engine) as session:
        return {i for i in session.exec(select(Outbox.id)) if i is not None} - before


def _outbox(app: Web, recipient: str) -> list[Outbox]:
    with Session(app.engine) as session:
        query = select(Outbox).where(Outbox.recipient == recipient).order_by(col(Outbox.id))
        return list(session.exec(query))


async def _immediate(app: Web, email: str) -> None:
    data = _form(email, TOPIC, step="subscribe", frequency="immediate")
    assert (await app.client.post("/signup", data=data)).status_code == 200
    mail = app.sink.messages_to(email)[-1]
    assert (await app.client.post(_path(mail, "confirm"))).status_code == 303


@pytest.mark.slow
@pytest.mark.parametrize("how", ["unsubscribe", "stop", "cli", "suspend"])
async def test_queued_digests_are_not_sent_after_unsubscribing(
    any_web: Web,  # noqa: F811
    how: str,
) -> None:
    app = any_web
    await _immediate(app, "gone@example.org")
    await _immediate(app, "stays@example.org")
    app.sink.fail_rcpt("gone@example.org", 451, count=None)  # its digest goes to retry
    digests = _queue_digests(app)
    app.clock.advance(minutes=10)
    await app.send_due()
    [digest] = [m for m in _outbox(app, "gone@example.org") if m.id in digests]
    assert digest.status == "retry"
    # The other subscriber's digest went: the sender does send what is due.
    [sent] = [m for m in _outbox(app, "stays@example.org") if m.id in digests]
    assert sent.status == "sent"

    [alert] = [a for a in app.alerts() if a.subscriber_id == digest.subscriber_id]
    assert alert.id is not None
    if how == "unsubscribe":
        path = f"/unsubscribe/{_token(app, 'unsubscribe', digest.subscriber_id)}"
        response = await app.client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200
    elif how == "stop":
        response = await app.client.post(f"/alerts/stop/{_token(app, 'stop', alert.id)}")
        assert response.status_code == 200
    elif how == "cli":
        done = subprocess.run(
            ["alertd", "unsubscribe", str(alert.id)],
            capture_output=True,
            text=True,
            env={"ALERTD_DATABASE__URL": app.engine.url.render_as_string(), "PATH": _bin_path()},
            check=False,
        )
        assert done.returncode == 0, done.stderr
    else:  # three permanent bounces of other digests suspend the address
        for n in range(3):
            row = queued_row(
                subscriber_id=digest.subscriber_id,
                recipient="gone@example.org",
                message_id=f"<bounce-{n}@alertd.test>",
                subject="x",
                message=b"x",
                now=app.clock.now,
            )
            with app.engine.begin() as connection:
                inserted = connection.execute(
                    sa.insert(Outbox).values(row).returning(col(Outbox.id))
                )
                bounced = inserted.scalar_one()
            record_failure(
                app.engine,
                bounced,
                "550 no such user",
                DeliverySettings(max_bounces=3),
                app.clock.now,
                random.Random(1),
                permanent=True,
            )
    [digest] = [m for m in _outbox(app, "gone@example.org") if m.id == digest.id]
    assert digest.status == "cancelled"

    app.sink.reset()  # the mail server accepts again
    app.clock.advance(days=2)
    await app.send_due()
    assert app.sink.messages_to("gone@example.org") == []


async def test_a_digest_with_a_live_alert_is_still_sent(web: Web) -> None:  # noqa: F811
    await _immediate(web, "two@example.org")
    data = _form("two@example.org", "visas", step="subscribe", frequency="immediate")
    await web.client.post("/signup", data=data)
    await web.client.post(_path(web.sink.messages_to("two@example.org")[-1], "confirm"))
    web.sink.fail_rcpt("two@example.org", 451, count=None)
    digests = _queue_digests(web)
    web.clock.advance(minutes=10)
    await web.send_due()
    topic_alert = web.alerts()[0]
    assert topic_alert.id is not None
    await web.client.post(f"/alerts/stop/{_token(web, 'stop', topic_alert.id)}")
    statuses = {m.status for m in _outbox(web, "two@example.org") if m.id in digests}
    assert statuses == {"retry"}  # the visas alert is live: its digest stays queued


# -- what a sign-up mail carries -----------------------------------------------------------------


async def test_sign_up_mail_shows_the_canonical_query_quoted_and_cut(web: Web) -> None:  # noqa: F811
    query = (
        "Visas   URGENT your Barclays account is suspended reply with your password today "
        "or lose access to your savings forever"
    )
    response = await _subscribe(web, "target@example.org", query)
    assert response.status_code == 200, _main(response.text)
    text = _text(web.sink.messages_to("target@example.org")[0])
    shown = re.search("\N{LEFT DOUBLE QUOTATION MARK}(.*?)\N{RIGHT DOUBLE QUOTATION MARK}", text)
    assert shown is not None and shown.group(1).endswith("\N{HORIZONTAL ELLIPSIS}")
    assert len(shown.group(1)) <= 60 and "Visas   URGENT" not in text and "URGENT" not in text


PHISHING = [
    "https://evil.example/login www.evil.example",
    "call +44 20 7946 0958 now",
    "evil-bank.example/verify",
]


@pytest.mark.parametrize("query", PHISHING)
async def test_mostly_url_or_phone_queries_are_refused_everywhere(
    web: Web,  # noqa: F811
    query: str,
    tmp_path: Path,
) -> None:
    form = await web.client.post("/signup", data=_form("v@example.org", query, step="subscribe"))
    assert form.status_code == 422
    assert "web addresses or phone numbers" in form.text
    api = await web.client.post("/api/alerts", json={"email": "v@example.org", "query": query})
    assert api.status_code == 422
    assert "web addresses or phone numbers" in str(api.json()["detail"])
    cli = subprocess.run(
        ["alertd", "subscribe", "v@example.org", query],
        capture_output=True,
        text=True,
        env={"ALERTD_DATABASE__URL": str(web.engine.url), "PATH": _bin_path()},
        check=False,
    )
    assert cli.returncode != 0
    assert "web addresses or phone numbers" in cli.stderr and len(cli.stderr.splitlines()) == 1
    assert web.alerts() == [] and web.sink.messages == []


def _bin_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
