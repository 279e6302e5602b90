"""The web app in process: sign-up, double opt-in, manage, unsubscribe, tokens, limits, API."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import sqlalchemy as sa
from schemathesis import BaseSchema, Case
from schemathesis.checks import not_a_server_error
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.cli import main
from alertd.config import DatabaseSettings, Settings
from alertd.db import open_database
from alertd.errors import InvalidToken, TokenExpired
from alertd.items import add_items
from alertd.keys import subkey
from alertd.kinds.written_question import parse
from alertd.links import Action
from alertd.matching.hits import match_new_items
from alertd.models import Alert, Hit, Member, Outbox, Subscriber
from alertd.tokens import check_age, make_token, parse_token, verify_token
from alertd.web import create_app, serve_web, service
from alertd.web.limits import SlidingWindow

from db_templates import PostgresDatabases
from smtp_server import ReceivedMessage, SmtpSink
from standin_api import StandinApi, load_2021_answered

# The recorded answers are of 1 Feb 2021: the app's clock stands nine days later.
NOW = datetime(2021, 2, 10, 12, 0, tzinfo=UTC)
SECRET = "test-secret"
BASE = "http://localhost:8000"
TOPIC = '"special educational needs"'
IP = "203.0.113.7"


class Clock:
    """The app's clock, moved by the tests (links expire, windows slide)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Web:
    client: httpx.AsyncClient
    engine: Engine
    settings: Settings
    sink: SmtpSink
    clock: Clock
    standin: StandinApi

    async def send_due(self) -> None:
        """Wake the app's sender, as a queued email does, and wait until it has sent."""
        sender = self.client._transport.app.state.web.sender  # type: ignore[attr-defined]
        sender.wake()
        await sender.settled()

    def client_from(self, ip: str) -> httpx.AsyncClient:
        return _client(self.client._transport, ip)  # type: ignore[arg-type]

    def alerts(self) -> list[Alert]:
        with Session(self.engine) as session:
            return list(session.exec(select(Alert).order_by(Alert.id)))  # type: ignore[arg-type]

    def subscribers(self) -> list[Subscriber]:
        with Session(self.engine) as session:
            return list(session.exec(select(Subscriber)))


def _client(transport: httpx.ASGITransport, ip: str) -> httpx.AsyncClient:
    app = transport.app

    async def mailed(response: httpx.Response) -> None:
        # The app queues its emails and wakes its sender: wait until it has sent them.
        await app.state.web.sender.settled()  # type: ignore[attr-defined]

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 4321)),
        base_url="http://testserver",
        event_hooks={"response": [mailed]},
    )


@pytest.fixture(scope="session")
def stored_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding the 469 recorded answers of 1 Feb 2021, made once and copied."""
    path = tmp_path_factory.mktemp("stored") / "stored.db"
    _store_recorded(f"sqlite:///{path}")
    return path


def _store_recorded(database_url: str) -> None:
    engine = open_database(DatabaseSettings(url=database_url))
    items = [parse(record) for record in load_2021_answered()]
    stored_at = NOW - timedelta(days=9)
    add_items(engine, "parliament", items, now=stored_at, today=stored_at.date(), never_alert=True)
    engine.dispose()


def _stored(settings: Settings, stored_db: Path, request: pytest.FixtureRequest) -> Engine:
    """A migrated database holding the recorded answers (a copy of stored_db on SQLite, of
    a template filled once on PostgreSQL)."""
    url = sa.make_url(settings.database.url)
    if url.get_backend_name() == "sqlite":
        shutil.copy(stored_db, str(url.database))
    else:
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        template = databases.filled("recorded answers", _store_recorded)
        databases.replace(str(url.database), template)
    return open_database(settings.database)


@pytest.fixture
async def make_web(
    make_settings: Callable[..., Settings],
    smtp_sink: SmtpSink,
    standin_api: StandinApi,
    stored_db: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[Web]]]:
    """Builds the app (SMTP sink, stand-in Members API, stored answers) and a client; the
    app's lifespan runs its sender."""
    made: list[Web] = []
    lifespans = AsyncExitStack()

    async def make(ip: str = IP, database_url: str | None = None, **web: Any) -> Web:
        settings = make_settings(
            database={"url": database_url or f"sqlite:///{tmp_path}/alertd.db"},
            mail={"delivery": "smtp"},
            smtp={"host": smtp_sink.host, "port": smtp_sink.port},
            members={"base_url": standin_api.base_url},
            web={"mails_per_address_per_hour": 20, **web},
        )
        engine = _stored(settings, stored_db, request)
        clock = Clock(NOW)
        app = create_app(settings, engine, clock=clock)
        await lifespans.enter_async_context(app.router.lifespan_context(app))
        client = _client(httpx.ASGITransport(app=app), ip)
        made.append(Web(client, engine, settings, smtp_sink, clock, standin_api))
        return made[-1]

    yield make
    await lifespans.aclose()
    for web in made:
        await web.client.aclose()
        web.engine.dispose()


@pytest.fixture
async def web(make_web: Callable[..., Awaitable[Web]]) -> Web:
    """The app on a SQLite database."""
    return await make_web()


@pytest.fixture
async def any_web(make_web: Callable[..., Awaitable[Web]], database_url: str) -> Web:
    """The app on SQLite, and on PostgreSQL when ALERTD_TEST_DATABASE_URL is set."""
    return await make_web(database_url=database_url)


def _text(message: ReceivedMessage) -> str:
    body = message.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def _path(message: ReceivedMessage, kind: str) -> str:
    """The path of the first link of a kind (confirm, manage) in a mail's text part."""
    found = re.search(rf"{re.escape(BASE)}(/{kind}/\S+)", _text(message))
    assert found, _text(message)
    return found.group(1)


def _token(
    web: Web,
    action: Action,
    subject_id: int,
    *,
    key: str = SECRET,
    secret_of: int | None = None,
    issued_at: datetime | None = None,
) -> str:
    """A token made as the app makes them: ``key``'s links subkey and the link secret of the
    owner of ``secret_of`` (default: ``subject_id``) as the database has it now."""
    secret = service.link_secret_of(web.engine, action, secret_of or subject_id)
    assert secret is not None
    return make_token(subkey(key, "links"), action, subject_id, secret, issued_at=issued_at)


def _read(key: str, action: str, token: str, secret: str = "s", **age: Any) -> int:
    parsed = parse_token(action, token, expiring=bool(age))
    found = verify_token(parsed, [subkey(key, "links")], secret)
    if age:
        check_age(parsed, age["max_age"], age["now"])
    return found


def _form(email: str, query: str = TOPIC, **extra: str) -> dict[str, str]:
    return {"email": email, "follow": "topic", "query": query, "frequency": "daily", **extra}


async def _subscribe(web: Web, email: str, query: str = TOPIC, **extra: str) -> httpx.Response:
    return await web.client.post("/signup", data=_form(email, query, step="subscribe", **extra))


async def _confirmed(web: Web, email: str, query: str = TOPIC) -> str:
    """Sign up and confirm an alert; the manage path it leads to."""
    before = len(web.sink.messages_to(email))
    assert (await _subscribe(web, email, query)).status_code == 200
    mail = web.sink.messages_to(email)[before]
    response = await web.client.post(_path(mail, "confirm"))
    assert response.status_code == 303
    return response.headers["location"].split("?")[0]


def _main(html: str) -> str:
    """The page's main text, tags stripped, whitespace collapsed."""
    inner = html[html.index("<main>") : html.index("</main>")]
    return " ".join(re.sub(r"<[^>]+>", " ", inner).split())


# -- sign-up, preview and double opt-in ----------------------------------------------------------


async def test_signup_form_has_labelled_fields(web: Web) -> None:
    response = await web.client.get("/")
    assert response.status_code == 200
    for field in ("email", "follow-topic", "follow-member", "query", "member", "frequency"):
        assert f'id="{field}"' in response.text and f'for="{field}"' in response.text
    assert response.headers["referrer-policy"] == "same-origin"
    assert "no-store" in response.headers["cache-control"]


async def test_preview_counts_stored_answers_and_saves_nothing(web: Web) -> None:
    response = await web.client.post("/signup", data=_form("a@example.org", "visas"))
    assert response.status_code == 200
    text = _main(response.text)
    assert "In the last 30 days this alert would have found 6 answers" in text
    assert text.count("(2021-02-01") == 5  # five examples
    assert 'value="subscribe"' in response.text
    assert web.alerts() == [] and web.sink.messages == []


async def test_signup_confirm_manage(any_web: Web) -> None:
    web = any_web
    response = await _subscribe(web, "Parent@Example.ORG")
    assert response.status_code == 200
    assert "Check your email" in response.text
    [alert] = web.alerts()
    assert not alert.confirmed and alert.query == TOPIC
    [mail] = web.sink.messages_to("Parent@example.org")
    assert mail.subject == "Confirm your alert"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert mail.message["To"] == "Parent@example.org"
    assert mail.message.get_body(("html",)) is not None
    confirm = _path(mail, "confirm")

    page = await web.client.get(confirm)  # a mail scanner's GET confirms nothing
    assert page.status_code == 200 and "Confirm my alert" in page.text
    assert not web.alerts()[0].confirmed

    response = await web.client.post(confirm)
    assert response.status_code == 303
    manage = response.headers["location"]
    assert manage.startswith("/manage/")
    assert web.alerts()[0].confirmed and web.alerts()[0].confirmed_at == NOW
    page = await web.client.get(manage)
    text = _main(page.text)
    assert "Your alert is confirmed" in text
    assert "Alerts for Parent@example.org" in text
    assert "special educational needs" in text and "Active" in text


async def test_a_known_address_gets_the_manage_link_and_the_same_page(any_web: Web) -> None:
    web = any_web
    manage = await _confirmed(web, "known@example.org")
    known = await _subscribe(web, "known@example.org", "visas")
    unknown = await _subscribe(web, "new@example.org", "visas")
    assert known.status_code == unknown.status_code == 200
    assert _main(known.text).replace("known@", "new@") == _main(unknown.text)
    assert known.headers.keys() == unknown.headers.keys()

    mail = web.sink.messages_to("known@example.org")[-1]
    assert mail.subject == "You already have alerts \N{EM DASH} manage them here"
    assert _path(mail, "manage") == manage
    assert web.sink.messages_to("new@example.org")[-1].subject == "Confirm your alert"
    # The new alert of the known address waits for its own confirmation.
    assert (await web.client.post(_path(mail, "confirm"))).status_code == 303
    assert [a.confirmed for a in web.alerts()] == [True, True, False]


async def test_signing_up_again_for_the_same_alert_adds_nothing(web: Web) -> None:
    await _subscribe(web, "twice@example.org")
    await _subscribe(web, "twice@example.org")  # pending: the same alert, a fresh link
    assert len(web.alerts()) == 1
    first, second = web.sink.messages_to("twice@example.org")
    assert (await web.client.post(_path(second, "confirm"))).status_code == 303
    await _subscribe(web, "twice@example.org")  # confirmed: nothing added
    assert len(web.alerts()) == 1
    assert "You already have this alert" in _text(web.sink.messages_to("twice@example.org")[-1])


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"email": "not-an-address"}, "email", "Enter an email address"),
        ({"email": "a@example.org\r\nBcc: b@example.org"}, "email", "control characters"),
        ({"email": "a@example.org\nBcc: b@example.org"}, "email", "control characters"),
        ({"email": "a\0@example.org"}, "email", "control characters"),
        ({"email": "x" * 300 + "@example.org"}, "email", "at most 254"),
        ({"query": '"special needs'}, "query", "quote"),
        ({"query": "   "}, "query", "Enter what to follow"),
        ({"query": "-schools"}, "query", "exclu"),
        ({"query": "colour:red"}, "query", "unknown field"),
        ({"query": "schools\0"}, "query", "control characters"),
        ({"query": "x " * 300}, "query", "at most 500"),
        ({"query": "schools"}, "query", "narrow it down"),  # 31 a day: too broad to read
        ({"frequency": "hourly"}, "frequency", "Choose immediate, daily or weekly"),
        ({"follow": "everything"}, "follow", "Choose a topic or a Member"),
        ({"follow": "member", "member": "Nobody Atall"}, "member", "No Member found"),
        ({"follow": "member", "member": "x"}, "member", "at least two letters"),
        ({"follow": "member", "member_id": "99999999999999999999"}, "member_id", "at most 12"),
        ({"follow": "member", "member_id": "999999999"}, "member", "Unknown Member"),
    ],
)
async def test_bad_input_comes_back_next_to_its_field(
    any_web: Web, form: dict[str, str], field: str, message: str
) -> None:
    web = any_web
    data = {**_form("a@example.org"), "step": "subscribe", **form}
    response = await web.client.post("/signup", data=data)
    assert response.status_code == 422
    error = re.search(rf'<p class="error" id="{field}-error">(.*?)</p>', response.text)
    assert error and message in error.group(1), response.text
    assert 'aria-invalid="true"' in response.text
    assert web.alerts() == [] and web.subscribers() == [] and web.sink.messages == []


async def test_cr_lf_in_a_query_never_reaches_a_header(web: Web) -> None:
    queries = ("special\r\nBcc: evil@example.org needs", "special\r\neducational\nneeds")
    for query in queries:
        assert (await _subscribe(web, "crlf@example.org", query)).status_code == 200
    assert [a.query for a in web.alerts()] == [" ".join(q.split()) for q in queries]
    for mail in web.sink.messages:
        assert mail.rcpt_tos == ["crlf@example.org"]
        assert not any("evil" in str(value) for value in mail.message.values())
        assert sorted(mail.message.keys()) == sorted(
            ["Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted",
             "X-Auto-Response-Suppress", "Content-Type", "MIME-Version"]
        )  # fmt: skip


async def test_typed_html_is_escaped_in_pages_and_mails(web: Web) -> None:
    query = "visas <script>alert(1)</script>"
    manage = await _confirmed(web, "xss@example.org", query)
    html = web.sink.messages[0].message.get_body(("html",))
    assert html is not None
    mail = html.get_content()  # type: ignore[attr-defined]
    page = (await web.client.get(manage)).text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The email shows the canonical query (words only), never the markup as typed.
    assert "<script" not in mail and "&lt;script" not in mail
    assert "\N{LEFT DOUBLE QUOTATION MARK}" in mail and "visas" in mail


async def test_a_sign_up_while_the_mail_server_refuses_is_mailed_later(web: Web) -> None:
    web.sink.fail_rcpt("later@example.org", 451, count=None)
    refused = await _subscribe(web, "later@example.org")
    normal = await _subscribe(web, "normal@example.org")
    # The page does not wait on the mail server, and says what it says to everyone.
    assert refused.status_code == normal.status_code == 200
    assert _main(refused.text).replace("later@", "normal@") == _main(normal.text)
    assert [(a.query, a.confirmed) for a in web.alerts()] == [(TOPIC, False), (TOPIC, False)]
    assert web.sink.messages_to("later@example.org") == []
    web.sink.reset()  # the server takes mail again
    web.clock.advance(minutes=10)  # past the first retry (5 minutes, give or take a fifth)
    await web.send_due()
    [mail] = web.sink.messages_to("later@example.org")
    assert mail.subject == "Confirm your alert"
    assert (await web.client.post(_path(mail, "confirm"))).status_code == 303
    assert web.alerts()[0].confirmed


# -- following a Member --------------------------------------------------------------------------


async def test_follow_a_member_by_name(web: Web) -> None:
    data = {**_form("m@example.org"), "follow": "member", "member": "navendu"}
    response = await web.client.post("/signup", data=data)
    assert response.status_code == 200
    assert "would have found 12 answers" in _main(response.text)
    assert 'name="member_id" value="4811"' in response.text
    assert 'value="Navendu Mishra"' in response.text
    response = await web.client.post("/signup", data={**data, "step": "subscribe"})
    assert response.status_code == 200
    [alert] = web.alerts()
    assert alert.query == "member:4811"
    assert "Navendu Mishra" in _text(web.sink.messages_to("m@example.org")[0])


async def test_an_ambiguous_name_offers_a_choice(web: Web) -> None:
    data = {**_form("m@example.org"), "follow": "member", "member": "smith"}
    response = await web.client.post("/signup", data=data)
    assert response.status_code == 422
    assert "Several Members match" in response.text
    assert 'name="member_id" value="4436"' in response.text  # Cat Smith, a radio button
    chosen = {**data, "member": "smith", "member_id": "4436"}
    response = await web.client.post("/signup", data=chosen)
    assert response.status_code == 422  # the typed name is not the chosen Member's
    response = await web.client.post("/signup", data={**chosen, "member": "Cat Smith"})
    assert response.status_code == 200 and "Following: Cat Smith (Labour" in response.text


async def test_member_lookup_uses_the_api_once_and_caches_it(any_web: Web) -> None:
    web = any_web
    response = await web.client.get("/members", params={"q": "keir"})
    assert response.status_code == 200
    assert 'href="/?member_id=4514"' in response.text and "Sir Keir Starmer" in response.text
    searches = [path for _, path in web.standin.requests if "Members/Search" in path]
    assert len(searches) == 1 and "Name=keir" in searches[0]
    with Session(web.engine) as session:
        member = session.get(Member, 4514)
        assert member is not None and member.party == "Labour"
    again = await web.client.get("/api/members", params={"q": "KEIR"})
    assert [m["id"] for m in again.json()] == [4514]
    assert again.json()[0]["query"] == "member:4514"
    assert len([p for _, p in web.standin.requests if "Members/Search" in p]) == 1
    page = await web.client.get("/", params={"member_id": 4514})
    assert 'value="Sir Keir Starmer"' in page.text and 'value="member" checked' in page.text


async def test_member_lookup_falls_back_to_known_members(web: Web) -> None:
    web.standin.fail_next("members", 503)
    response = await web.client.get("/api/members", params={"q": "cat smith"})
    assert response.status_code == 200
    assert [m["name"] for m in response.json()] == ["Cat Smith"]


# -- tokens --------------------------------------------------------------------------------------


def test_expiring_tokens() -> None:
    key = subkey("k", "links")
    token = make_token(key, "confirm", 7, "s", issued_at=NOW)
    week = timedelta(days=7)
    assert _read("k", "confirm", token, max_age=week, now=NOW + timedelta(days=6)) == 7
    with pytest.raises(TokenExpired):
        _read("k", "confirm", token, max_age=week, now=NOW + timedelta(days=7, seconds=1))
    with pytest.raises(TokenExpired):
        _read("k", "confirm", token, max_age=week, now=NOW - timedelta(hours=1))
    with pytest.raises(InvalidToken):  # a non-expiring token where an expiring one is needed
        _read("k", "confirm", make_token(key, "confirm", 7, "s"), max_age=week, now=NOW)
    with pytest.raises(InvalidToken):  # the issue time altered
        _read("k", "confirm", token.replace(".1612", ".1712"), max_age=week, now=NOW)
    for odd in ("confirm.\u00b2.1.x", "unsubscribe.1.\u00e9", "a" * 1000):
        with pytest.raises(InvalidToken):
            _read("k", "unsubscribe", odd)


async def test_an_expired_confirmation_link_does_nothing(web: Web) -> None:
    await _subscribe(web, "late@example.org")
    confirm = _path(web.sink.messages[0], "confirm")
    web.clock.advance(days=7, minutes=1)
    for response in (await web.client.get(confirm), await web.client.post(confirm)):
        assert response.status_code == 400
        assert "This link has expired" in response.text
    assert not web.alerts()[0].confirmed


async def test_forged_altered_and_swapped_tokens_do_nothing(any_web: Web) -> None:
    web = any_web
    manage = await _confirmed(web, "victim@example.org")
    other = await _confirmed(web, "other@example.org", "visas")
    victim_alert, other_alert = web.alerts()
    assert victim_alert.id is not None and other_alert.id is not None
    alert_id, subscriber_id = victim_alert.id, victim_alert.subscriber_id
    forged = [
        _token(web, "unsubscribe", subscriber_id, key="another-secret"),
        _token(web, "unsubscribe", subscriber_id).replace(f".{subscriber_id}.", ".99."),
        _token(web, "stop", alert_id),  # a stop token used to unsubscribe
        _token(web, "manage", subscriber_id),  # a manage token used to unsubscribe
        # The raw key, not the links subkey: a signature made for another purpose.
        make_token(SECRET.encode(), "unsubscribe", subscriber_id, "x"),
        "unsubscribe.1",
        "%00",
    ]
    for token in forged:
        for method in ("GET", "POST"):
            response = await web.client.request(method, f"/unsubscribe/{token}")
            assert response.status_code == 400, (method, token)
            assert "This link is not valid" in response.text
    swapped = [
        ("POST", f"/alerts/stop/{_token(web, 'unsubscribe', subscriber_id)}"),
        ("POST", f"/alerts/stop/{_token(web, 'stop', alert_id)}x"),
        ("GET", f"/manage/{_token(web, 'unsubscribe', subscriber_id)}"),
        ("POST", f"/confirm/{_token(web, 'confirm', alert_id)}"),  # no issue time
        ("POST", f"/manage/{_token(web, 'manage', subscriber_id)[:-1]}/delete-all"),
    ]
    for method, path in swapped:
        response = await web.client.request(method, path)
        assert response.status_code == 400 and "Nothing was changed" in response.text, path
    # The other subscriber's manage link cannot touch the victim's alert.
    for action in ("pause", "delete"):
        response = await web.client.post(
            f"{other}/alerts/{alert_id}/{action}", data={"confirmed": "yes"}
        )
        assert response.status_code == 404 and "Nothing was changed" in response.text
    asked = await web.client.post(f"{other}/alerts/{alert_id}/delete")  # the question first
    assert asked.status_code == 404 and "Delete this alert" not in asked.text
    assert [(a.unsubscribed_at, a.paused_at) for a in web.alerts()] == [(None, None)] * 2
    assert "special educational needs" in (await web.client.get(manage)).text


# -- manage, unsubscribe, stop -------------------------------------------------------------------


async def test_manage_pause_resume_frequency_delete(any_web: Web) -> None:
    web = any_web
    manage = await _confirmed(web, "me@example.org")
    await _confirmed(web, "me@example.org", "visas")
    first, second = (a.id for a in web.alerts())

    response = await web.client.post(f"{manage}/alerts/{first}/pause")
    assert response.status_code == 303
    page = await web.client.get(response.headers["location"])
    assert "The alert is paused" in page.text and "Paused" in _main(page.text)
    assert web.alerts()[0].paused_at == NOW

    # A paused alert matches nothing: new answers reach only the other alert.
    records = [r for r in load_2021_answered() if "visa" in str(r).lower()]
    for record in records:
        record["id"] += 10_000_000
        record["heading"] += " special educational needs"
    later = NOW + timedelta(hours=1)
    add_items(web.engine, "parliament", [parse(r) for r in records], now=later, today=later.date())
    match_new_items(web.engine, now=later)
    with Session(web.engine) as session:
        assert {hit.alert_id for hit in session.exec(select(Hit))} == {second}

    web.clock.advance(hours=2)
    assert (await web.client.post(f"{manage}/alerts/{first}/resume")).status_code == 303
    assert web.alerts()[0].paused_at is None

    data = {"frequency": "weekly"}
    assert (await web.client.post(f"{manage}/alerts/{first}/frequency", data=data)).is_redirect
    assert web.alerts()[0].frequency == "weekly"
    bad = await web.client.post(f"{manage}/alerts/{first}/frequency", data={"frequency": "x"})
    assert bad.status_code == 422 and web.alerts()[0].frequency == "weekly"

    # A delete asks first (a slip of the finger deletes nothing), then acts on the answer.
    asked = await web.client.post(f"{manage}/alerts/{first}/delete")
    assert asked.status_code == 200 and "Delete this alert?" in _main(asked.text)
    assert 'name="confirmed" value="yes"' in asked.text
    assert all(a.unsubscribed_at is None for a in web.alerts())
    yes = {"confirmed": "yes"}
    deleted = await web.client.post(f"{manage}/alerts/{first}/delete", data=yes)
    assert deleted.status_code == 303
    assert web.alerts()[0].unsubscribed_at is not None and web.alerts()[1].unsubscribed_at is None
    assert (await web.client.post(f"{manage}/alerts/{first}/pause")).status_code == 404
    asked = await web.client.post(f"{manage}/delete-all")
    assert "Delete all your alerts?" in _main(asked.text) and "Delete all 1 alert" not in asked.text
    assert "Delete your alert" in asked.text and web.alerts()[1].unsubscribed_at is None
    response = await web.client.post(f"{manage}/delete-all", data=yes)
    page = await web.client.get(response.headers["location"])
    assert "All your alerts are deleted" in page.text and "You have no alerts" in page.text
    assert all(a.unsubscribed_at is not None for a in web.alerts())


async def test_pages_speak_of_one_alert_as_one(web: Web) -> None:
    manage = await _confirmed(web, "single@example.org")
    subscriber_id = web.alerts()[0].subscriber_id
    page = await web.client.get(f"/unsubscribe/{_token(web, 'unsubscribe', subscriber_id)}")
    assert "Stop your alert?" in _main(page.text) and "all 1" not in page.text
    # "Add an alert" brings the address along to the sign-up form.
    managed = await web.client.get(manage)
    assert 'href="/?email=single%40example.org"' in managed.text
    form = await web.client.get("/", params={"email": "single@example.org"})
    assert 'value="single@example.org"' in form.text


async def test_a_browser_gets_pages_for_wrong_addresses_and_the_api_gets_json(web: Web) -> None:
    for path in ("/no-such-page", "/manage/x/y/z/w"):
        page = await web.client.get(path, headers={"accept": "text/html"})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "Page not found" in _main(page.text)
        assert page.headers["x-frame-options"] == "DENY"  # the security headers too
    wrong_method = await web.client.put("/manage")
    assert wrong_method.status_code == 405 and "Method Not Allowed" in _main(wrong_method.text)
    bad_query = await web.client.get("/", params={"member_id": "not-a-number"})
    assert bad_query.status_code == 422 and "Nothing was changed" in _main(bad_query.text)
    api = await web.client.get("/api/no-such-thing")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}
    api = await web.client.post("/api/alerts", json={"email": 5})
    assert api.status_code == 422 and isinstance(api.json()["detail"], list)


async def test_one_click_unsubscribe(any_web: Web) -> None:
    web = any_web
    await _confirmed(web, "bye@example.org")
    await _confirmed(web, "bye@example.org", "visas")
    subscriber_id = web.alerts()[0].subscriber_id
    path = f"/unsubscribe/{_token(web, 'unsubscribe', subscriber_id)}"
    for _ in range(2):  # a mail scanner following the link changes nothing
        page = await web.client.get(path)
        assert page.status_code == 200 and "Unsubscribe from all alerts" in page.text
        assert "Stop all 2 of your alerts?" in _main(page.text)
    assert all(a.unsubscribed_at is None for a in web.alerts())
    # RFC 8058: the mail provider POSTs this body, with no cookie and no confirmation.
    response = await web.client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text and "2 alerts stopped" in response.text
    assert all(a.unsubscribed_at == NOW for a in web.alerts())
    assert (await web.client.post(path)).status_code == 200  # again: still fine


async def test_stop_one_alert(web: Web) -> None:
    await _confirmed(web, "stop@example.org")
    await _confirmed(web, "stop@example.org", "visas")
    first = web.alerts()[0]
    assert first.id is not None
    path = f"/alerts/stop/{_token(web, 'stop', first.id)}"
    page = await web.client.get(path)
    assert "Stop the alert" in page.text and "special educational needs" in page.text
    assert web.alerts()[0].unsubscribed_at is None
    response = await web.client.post(path)
    assert response.status_code == 200 and "is stopped" in response.text
    assert [a.unsubscribed_at for a in web.alerts()] == [NOW, None]
    assert "already stopped" in (await web.client.get(path)).text


async def test_manage_page_resends_the_confirmation_of_an_unconfirmed_alert(web: Web) -> None:
    manage = await _confirmed(web, "parent@example.org")
    # A second alert of a known address gets the manage link, not a confirmation link.
    assert (await _subscribe(web, "parent@example.org", "visas")).status_code == 200
    active, pending = web.alerts()
    assert not pending.confirmed
    page = await web.client.get(manage)
    assert f'/alerts/{pending.id}/resend"' in page.text and "Resend confirmation" in page.text
    assert f'/alerts/{active.id}/resend"' not in page.text
    before = len(web.sink.messages_to("parent@example.org"))
    response = await web.client.post(f"{manage}/alerts/{pending.id}/resend")
    assert response.status_code == 303 and response.headers["location"].endswith("?done=resent")
    mails = web.sink.messages_to("parent@example.org")
    assert len(mails) == before + 1 and mails[-1].subject == "Confirm your alert"
    assert (await web.client.post(_path(mails[-1], "confirm"))).status_code == 303
    assert all(alert.confirmed for alert in web.alerts())
    # A confirmed alert has nothing to resend, and nothing is sent.
    response = await web.client.post(f"{manage}/alerts/{pending.id}/resend")
    assert response.status_code == 404
    assert len(web.sink.messages_to("parent@example.org")) == before + 1


def _outbox(web: Web) -> list[Outbox]:
    with Session(web.engine) as session:
        return list(session.exec(select(Outbox).order_by(col(Outbox.id))))


async def test_lost_manage_link_is_mailed_without_enumeration(any_web: Web) -> None:
    """POST /manage does the same work for a known and an unknown address (the subscriber
    row, one outbox row, the same email) and answers the same, while mail fails too."""
    web = any_web
    manage = await _confirmed(web, "lost@example.org")
    web.sink.fail_rcpt(None, 451, count=None)  # the mail server is failing
    before = len(_outbox(web))
    known = await web.client.post("/manage", data={"email": "lost@example.org"})
    unknown = await web.client.post("/manage", data={"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 200
    assert _main(known.text).replace("lost@", "nobody@") == _main(unknown.text)
    assert known.headers.keys() == unknown.headers.keys()
    queued = _outbox(web)[before:]
    assert [(row.recipient, row.subject, row.status) for row in queued] == [
        ("lost@example.org", "Your link to manage your alerts", "retry"),
        ("nobody@example.org", "Your link to manage your alerts", "retry"),
    ]
    assert queued[0].attempts == queued[1].attempts == 1
    assert abs(len(queued[0].message) - len(queued[1].message)) < 40  # only the names differ
    assert {s.email for s in web.subscribers()} == {"lost@example.org", "nobody@example.org"}

    web.sink.reset()
    web.clock.advance(hours=1)
    await web.send_due()
    assert _path(web.sink.messages_to("lost@example.org")[-1], "manage") == manage
    # The unknown address's link leads to an empty manage page, as signing up would.
    empty = await web.client.get(_path(web.sink.messages_to("nobody@example.org")[-1], "manage"))
    assert empty.status_code == 200 and "You have no alerts" in _main(empty.text)
    bad = await web.client.post("/manage", data={"email": "lost@example.org\r\nBcc: x@y.org"})
    assert bad.status_code == 422 and 'id="email-error"' in bad.text


# -- limits --------------------------------------------------------------------------------------


def test_sliding_window() -> None:
    window = SlidingWindow(2, 60.0)
    assert window.allow("a", 0.0) and window.allow("a", 10.0) and not window.allow("a", 59.0)
    assert window.allow("b", 59.0)
    assert window.retry_after("a", 59.0) == 1
    assert window.allow("a", 60.5) and not window.allow("a", 61.0)


async def test_signups_are_limited_per_ip(make_web: Callable[..., Awaitable[Web]]) -> None:
    web = await make_web(signups_per_ip_per_hour=2)
    for n in range(2):
        assert (await _subscribe(web, f"ip{n}@example.org")).status_code == 200
    response = await _subscribe(web, "ip3@example.org")
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert "Too many requests" in response.text
    async with web.client_from("198.51.100.1") as elsewhere:
        data = _form("ip3@example.org", step="subscribe")
        assert (await elsewhere.post("/signup", data=data)).status_code == 200
    web.clock.advance(hours=1)
    assert (await _subscribe(web, "ip4@example.org")).status_code == 200


async def test_mails_are_limited_per_address_and_the_page_says_so(
    make_web: Callable[..., Awaitable[Web]],
) -> None:
    web = await make_web(mails_per_address_per_hour=2)
    pages = [await _subscribe(web, "flood@example.org", q) for q in (TOPIC, "visas", "fishing")]
    assert [p.status_code for p in pages] == [200, 200, 429]
    assert "We have sent an email" in _main(pages[0].text)
    held = _main(pages[2].text)
    assert "No email sent" in held and "We have sent an email" not in held
    assert "did not send another, and this alert was not saved" in held
    assert 0 < int(pages[2].headers["retry-after"]) <= 3600
    assert 'href="/?email=flood%40example.org"' in pages[2].text  # try again, address kept
    assert len(web.sink.messages_to("flood@example.org")) == 2
    assert [a.query for a in web.alerts()] == [TOPIC, "visas"]  # the third was not saved
    # The JSON API says the same in its own terms.
    body = {"email": "flood@example.org", "query": "fishing", "frequency": "daily"}
    response = await web.client.post("/api/alerts", json=body)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    assert len(web.alerts()) == 2


async def test_mails_are_limited_per_ip(make_web: Callable[..., Awaitable[Web]]) -> None:
    web = await make_web(mails_per_ip_per_hour=1)
    assert (await _subscribe(web, "one@example.org")).status_code == 200
    assert (await web.client.post("/manage", data={"email": "one@example.org"})).status_code == 429
    assert len(web.sink.messages) == 1


async def test_alerts_per_address_are_capped(make_web: Callable[..., Awaitable[Web]]) -> None:
    web = await make_web(max_alerts_per_address=2)
    manage = await _confirmed(web, "cap@example.org")
    await _subscribe(web, "cap@example.org", "visas")
    response = await _subscribe(web, "cap@example.org", "fishing")
    assert response.status_code == 200 and "Check your email" in response.text
    assert len(web.alerts()) == 2
    mail = web.sink.messages_to("cap@example.org")[-1]
    assert "reached the limit of 2 alerts" in _text(mail)
    assert _path(mail, "manage") == manage and "/confirm/" not in _text(mail)
    # Unconfirmed alerts whose link has expired give their place back.
    web.clock.advance(days=8)
    await _subscribe(web, "cap@example.org", "fishing")
    assert len(web.alerts()) == 3


# -- JSON API ------------------------------------------------------------------------------------


async def test_api_create_list_update_delete(any_web: Web) -> None:
    web = any_web
    body = {"email": "api@example.org", "query": TOPIC, "frequency": "weekly"}
    response = await web.client.post("/api/alerts", json=body)
    assert response.status_code == 202 and response.json()["status"] == "accepted"
    again = await web.client.post("/api/alerts", json={**body, "query": "visas"})
    assert again.status_code == 202 and again.json() == response.json()
    first = web.sink.messages_to("api@example.org")[0]
    assert (await web.client.post(_path(first, "confirm"))).status_code == 303
    manage = await _confirmed(web, "api@example.org", "fishing")
    auth = {"Authorization": f"Bearer {manage.removeprefix('/manage/')}"}

    listing = await web.client.get("/api/alerts", headers=auth)
    assert listing.status_code == 200
    assert listing.json()["email"] == "api@example.org"
    alerts = listing.json()["alerts"]
    assert [(a["query"], a["status"], a["frequency"]) for a in alerts] == [
        (TOPIC, "active", "weekly"),
        ("visas", "pending", "weekly"),
        ("fishing", "active", "daily"),
    ]
    first_id = alerts[0]["id"]
    patched = await web.client.patch(
        f"/api/alerts/{first_id}", json={"paused": True, "frequency": "daily"}, headers=auth
    )
    assert patched.status_code == 200
    assert (patched.json()["status"], patched.json()["frequency"]) == ("paused", "daily")
    assert (await web.client.delete(f"/api/alerts/{first_id}", headers=auth)).status_code == 204
    assert (await web.client.delete(f"/api/alerts/{first_id}", headers=auth)).status_code == 404
    listing = await web.client.get("/api/alerts", headers=auth)
    assert [a["query"] for a in listing.json()["alerts"]] == ["visas", "fishing"]


async def test_api_member_alert_and_errors(web: Web) -> None:
    ok = await web.client.post("/api/alerts", json={"email": "m@example.org", "member_id": 4811})
    assert ok.status_code == 202 and web.alerts()[0].query == "member:4811"
    cases = [
        ({"email": "bad", "query": TOPIC}, "email"),
        ({"email": "a@example.org\r\nX: y", "query": TOPIC}, "email"),
        ({"email": "a@example.org", "query": '"open'}, "query"),
        ({"email": "a@example.org"}, "query"),
        ({"email": "a@example.org", "query": TOPIC, "member_id": 4811}, "query"),
        ({"email": "a@example.org", "member_id": 123456}, "member_id"),
        ({"email": "a@example.org", "query": "the"}, "query"),
        ({"email": "a@example.org", "query": TOPIC, "frequency": "hourly"}, "frequency"),
    ]
    for body, field in cases:
        response = await web.client.post("/api/alerts", json=body)
        assert response.status_code == 422, body
        assert field in [error["loc"][-1] for error in response.json()["detail"]], body
    assert len(web.alerts()) == 1 and len(web.sink.messages) == 1


async def test_api_and_form_choose_what_an_alert_hears_about(web: Web) -> None:
    member = await web.client.post(
        "/api/alerts", json={"email": "m@example.org", "member_id": 4811}
    )
    assert member.status_code == 202
    both = {"email": "b@example.org", "query": TOPIC, "on": ["answered", "tabled"]}
    assert (await web.client.post("/api/alerts", json=both)).status_code == 202
    assert (
        await _subscribe(web, "f@example.org", "visas", on="tabled,answered")
    ).status_code == 200
    assert (await _subscribe(web, "t@example.org", "visas")).status_code == 200
    assert [a.notify_on for a in web.alerts()] == [
        "tabled,answered",  # a Member alert, by default
        "tabled,answered",
        "tabled,answered",
        "answered",  # a topic alert, by default
    ]
    for on in (["tabled"], ["soon"], []):
        body = {"email": "x@example.org", "query": TOPIC, "on": on}
        response = await web.client.post("/api/alerts", json=body)
        assert response.status_code == 422, on
        assert any("on" in error["loc"] for error in response.json()["detail"]), on
    refused = await _subscribe(web, "y@example.org", "visas", on="tabled")
    assert refused.status_code == 422 and "when to hear about questions" in refused.text
    assert len(web.alerts()) == 4
    form = await web.client.get("/")
    assert '<select id="on" name="on"' in form.text
    confirmed = await web.client.post(_path(web.sink.messages_to("f@example.org")[0], "confirm"))
    manage = await web.client.get(confirmed.headers["location"])
    assert "Questions when asked, and when answered" in _main(manage.text)


async def test_api_tokens(web: Web) -> None:
    await _confirmed(web, "owner@example.org")
    other = await _confirmed(web, "other@example.org", "visas")
    owner_alert = web.alerts()[0]
    assert (await web.client.get("/api/alerts")).status_code == 401
    for token in (
        _token(web, "unsubscribe", owner_alert.subscriber_id),
        _token(web, "manage", owner_alert.subscriber_id, key="other-secret"),
        "nonsense",
    ):
        response = await web.client.get("/api/alerts", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    auth = {"Authorization": f"Bearer {other.removeprefix('/manage/')}"}
    response = await web.client.delete(f"/api/alerts/{owner_alert.id}", headers=auth)
    assert response.status_code == 404
    response = await web.client.patch(
        f"/api/alerts/{owner_alert.id}", json={"paused": True}, headers=auth
    )
    assert response.status_code == 404
    assert web.alerts()[0].unsubscribed_at is None and web.alerts()[0].paused_at is None


async def test_api_preview_health_and_schema(make_web: Callable[..., Awaitable[Web]]) -> None:
    web = await make_web(openapi_docs=True)
    preview = await web.client.get("/api/preview", params={"q": "visas"})
    assert preview.status_code == 200 and preview.json()["count"] == 6
    assert len(preview.json()["examples"]) == 5
    bad = await web.client.get("/api/preview", params={"q": "(visas"})
    assert bad.status_code == 422
    health = await web.client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = (await web.client.get("/openapi.json")).json()
    for path in ("/api/alerts", "/api/alerts/{alert_id}", "/api/members", "/healthz"):
        assert path in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


async def test_healthz_reports_a_broken_database(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    broken = sa.create_engine(f"sqlite:///{tmp_path}/no/such/dir/alertd.db")
    app = create_app(make_settings(), broken)
    async with _client(httpx.ASGITransport(app=app), IP) as client:
        response = await client.get("/healthz")
    assert response.status_code == 503 and response.json()["status"] == "database unavailable"


# -- the server ----------------------------------------------------------------------------------


async def test_serve_web_serves_until_stopped(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    engine = open_database(settings.database)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    task = asyncio.create_task(serve_web(settings, engine, stop, sock=sock))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(100):
            try:
                response = await client.get("/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        assert response.status_code == 200
    stop.set()
    await asyncio.wait_for(task, 10)
    sock.close()
    engine.dispose()


def test_alertd_web_refuses_a_port_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = tmp_path / "alertd.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path}/alertd.db"\n'
            f"[web]\nport = {busy.getsockname()[1]}\n"
        )
        assert main(["web", "--config", str(config)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


# -- schemathesis: no input found by fuzzing the OpenAPI schema makes a server error -------------


@pytest.fixture
def web_schema(
    make_settings: Callable[..., Settings],
    standin_api: StandinApi,
    stored_db: Path,
    database_url: str,
    request: pytest.FixtureRequest,
) -> Iterator[BaseSchema]:
    settings = make_settings(
        database={"url": database_url},
        members={"base_url": standin_api.base_url},
        web={
            "signups_per_ip_per_hour": 10_000,
            "lookups_per_ip_per_minute": 10_000,
            "previews_per_ip_per_minute": 10_000,
            "openapi_docs": True,
        },
    )
    engine = _stored(settings, stored_db, request)
    app = create_app(settings, engine, clock=Clock(NOW))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    engine.dispose()


@pytest.mark.slow
def test_fuzzing_finds_no_server_error(web_schema: BaseSchema) -> None:
    operations = [result.ok() for result in web_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=15, deadline=None, database=None)
        def fuzz(case: Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
