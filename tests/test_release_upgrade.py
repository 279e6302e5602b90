"""The upgrade from the release: a database the release wrote (schema 0011, every kind, every
state: tests/fixtures/release_db) keeps every row, and the upgraded alertd mails nothing twice."""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import json
import mailbox
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd import queries
from alertd.cli import main
from alertd.config import DatabaseSettings, Settings
from alertd.db import alembic_config, create_db_engine, open_database
from alertd.digests.compose import pending_rows
from alertd.digests.items import build_digest
from alertd.digests.render import build_environment
from alertd.digests.render_pool import RenderJob, render_here
from alertd.kinds import kind_of, statement, written_question
from alertd.kinds.kind import MemberRef, Role, member_in
from alertd.mail.transports import mailer_factory
from alertd.matching.history import IndexRow, insert_rows, item_row
from alertd.models import Item, Ledger, MemberLookup, Outbox, Subscriber
from alertd.pipeline import RunReport, Runtime, run_once
from alertd.schedule import FREQUENCIES
from alertd.web.atom import render_alert_feed

import release_scenario as story
from configs import write_config
from feed_server import FeedServer
from standin_api import StandinApi

# The release's database is restored at revision 0011 and upgraded for real.
pytestmark = [pytest.mark.slow, pytest.mark.migrations]

DUMP = Path(__file__).parent / "fixtures" / "release_db" / "release_db.json.gz"


@functools.cache
def _dump() -> dict[str, Any]:
    with gzip.open(DUMP, "rt", encoding="utf-8") as file:
        dumped: dict[str, Any] = json.load(file)
    return dumped


def _rows(name: str) -> list[dict[str, Any]]:
    """The release's rows of a table, as dumped (dates and times ISO, bytes base64)."""
    table = _dump()["tables"][name]
    return [dict(zip(table["columns"], row, strict=True)) for row in table["rows"]]


def _from_json(column: sa.Column[Any], value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, sa.DateTime):
        return datetime.fromisoformat(value)
    if isinstance(column.type, sa.Date):
        return date.fromisoformat(value)
    if isinstance(column.type, sa.LargeBinary):
        return base64.b64decode(value)
    return value


def _restore(engine: Engine) -> None:
    """The schema of 0011 (the release's head), holding the release's rows with their ids."""
    command.upgrade(alembic_config(engine), "0011")
    tables = _dump()["tables"]
    metadata = sa.MetaData()
    metadata.reflect(engine, only=list(tables))
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            connection.execute(table.delete())  # the row 0005 made in alertsversion
            rows = [
                {name: _from_json(table.c[name], value) for name, value in row.items()}
                for row in _rows(table.name)
            ]
            if rows:
                connection.execute(table.insert(), rows)
        index = _dump()["item_index"]
        insert_rows(connection, [_index_row(row) for row in index["rows"]])
        if engine.dialect.name == "postgresql":
            for table in metadata.sorted_tables:
                if "id" in table.c and tables[table.name]["rows"]:
                    connection.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT MAX(id) FROM {table.name}))"
                    )


def _index_row(row: list[Any]) -> IndexRow:
    """An index row as the release wrote it (SQLite's columns: dates as text, flags 0/1)."""
    item_id, heading, body, stems, heading_stems, fields, day, hidden = row
    return IndexRow(
        item_id,
        heading,
        body,
        stems,
        heading_stems,
        tuple(fields.split()),
        date.fromisoformat(day) if day else None,
        bool(hidden),
    )


@pytest.fixture
def upgraded(database_url: str) -> Iterator[Engine]:
    """The release's database, upgraded by open_database as alertd starts."""
    settings = DatabaseSettings(url=database_url)
    engine = create_db_engine(settings)
    try:
        _restore(engine)
    finally:
        engine.dispose()
    engine = open_database(settings)
    yield engine
    engine.dispose()


# --- every row kept ----------------------------------------------------------------------------


def _table_rows(engine: Engine, name: str) -> dict[Any, dict[str, Any]]:
    table = sa.Table(name, sa.MetaData(), autoload_with=engine)
    key = [c.name for c in table.primary_key.columns]
    with engine.connect() as connection:
        found = connection.execute(sa.select(table)).mappings().all()
    converted = [{name: story.dumped(value) for name, value in row.items()} for row in found]
    return {tuple(row[k] for k in key): row for row in converted}


def _feed_0013(row: dict[str, Any]) -> dict[str, Any]:
    """A feed row as migration 0013 keeps it: its state instead of enabled and "removed"."""
    removed = row["disabled_reason"] == "removed"
    state = "active" if row["enabled"] else "removed" if removed else "gone"
    kept = {k: v for k, v in row.items() if k != "enabled"}
    return {**kept, "state": state, "disabled_reason": None if removed else row["disabled_reason"]}


def test_every_row_but_the_items_is_kept_as_it_was(upgraded: Engine) -> None:
    backfilled: dict[tuple[Any, ...], dict[str, Any]] = {}
    for name in _dump()["tables"]:
        if name == "item":
            continue
        now = _table_rows(upgraded, name)
        key = [c.name for c in sa.Table(name, sa.MetaData(), autoload_with=upgraded).primary_key]
        rows = _rows(name)
        if name == "feed":
            rows = [_feed_0013(row) for row in rows]
        if name == "sourcestate":
            # 0013: the days a backfill loaded moved to their own table.
            for row in [row for row in rows if "-backfill:" in row["name"]]:
                source, _, day = row["name"].partition("-backfill:")
                backfilled[source, day] = {
                    "source": source,
                    "day": day,
                    "stored": row["last_new_count"],
                    "done_at": row["last_ok_at"],
                }
                rows.remove(row)
        before = {tuple(row[k] for k in key): row for row in rows}
        assert len(now) == len(rows), name
        assert now == before, name
    assert backfilled and _table_rows(upgraded, "backfillday") == backfilled


def _aware(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _member(ref: MemberRef | None) -> tuple[Any, ...] | None:
    return None if ref is None else (ref.id, ref.name, ref.party, ref.constituency)


def _release_stage(old: dict[str, Any]) -> str:
    """What the release's flags say a question's version is."""
    if old["is_withdrawn"]:
        return "withdrawn"
    if old["is_holding"]:
        return "holding"
    return "tabled" if old["date_answered"] is None else "answer"


def _check_item(old: dict[str, Any], item: Item) -> None:
    """The upgraded item says what the release's row said, read through its kind."""
    same = ("kind", "source", "source_id", "version", "version_key", "url", "house")
    same += ("answering_body_id", "answering_body_name")
    assert {name: getattr(item, name) for name in same} == {name: old[name] for name in same}
    texts = (item.title, item.secondary_text, item.body_text, item.body_html)
    assert texts == (old["heading"], old["question_text"], old["answer_text"], old["answer_html"])
    assert (item.day, item.corrected_on) == (
        _day(old["date_answered"]),
        _day(old["date_answer_corrected"]),
    )
    times = (item.published_at, item.ingested_at, item.matched_at)
    assert times == tuple(_aware(old[k]) for k in ("published_at", "ingested_at", "matched_at"))
    assert item.never_alert == old["is_holding"]
    kind = kind_of(item)
    assert kind.reference(item) == (old["uin"] or "")
    answerer = member_in(item, Role.ANSWERER)
    assert _member(answerer) == (
        None
        if old["answering_member_id"] is None
        else (old["answering_member_id"], old["answering_member_name"], None, None)
    )
    if item.kind == written_question.WrittenQuestion.name:
        asker = member_in(item, Role.ASKER)
        assert _member(asker) == (
            None
            if old["asking_member_id"] is None
            else tuple(old[f"asking_member_{k}"] for k in ("id", "name", "party", "constituency"))
        )
        assert item.stage == _release_stage(old)
        details = written_question.details(item)
        assert written_question.date_tabled(item) == _day(old["date_tabled"])
        assert details["date_for_answer"] == old["date_for_answer"]
        assert details["is_named_day"] == old["is_named_day"]
        assert details["grouped_uins"] == old["grouped_uins"].split()
    elif item.kind == statement.Statement.name:
        assert item.stage == "made"
        assert [m["role"] for m in item.members] == ["answerer"]
        found = statement.details(item)
        assert found["role"] == old["answering_member_role"]
        assert found["attachments"] == (old["attachments"] or [])
        assert found["linked_statements"] == (old["linked_statements"] or [])
    else:
        assert (item.stage, item.members, item.details) == ("published", [], {})


def test_every_item_says_what_it_said(upgraded: Engine) -> None:
    with Session(upgraded) as session:
        items = {item.id: item for item in session.exec(select(Item)).all()}
    olds = {row["id"]: row for row in _rows("item")}
    assert set(items) == set(olds)
    for item_id, old in olds.items():
        _check_item(old, items[item_id])
    kinds = Counter((item.kind, item.stage) for item in items.values())
    # Every kind, every stage the story reached (tests/release_scenario.py).
    assert set(kinds) == {
        ("written_question", "tabled"),
        ("written_question", "holding"),
        ("written_question", "answer"),
        ("written_question", "withdrawn"),
        ("statement", "made"),
        ("feed_item", "published"),
    }


def test_the_index_and_the_previews_find_what_they_found(upgraded: Engine) -> None:
    """Items are indexed as the release indexed them, so queries find what they found."""
    with Session(upgraded) as session:
        items = {item.id: item for item in session.exec(select(Item)).all()}
    for row in _dump()["item_index"]["rows"]:
        release = _index_row(row)
        now = item_row(items[release.item_id])
        # The release also indexed a missing Member or department as "askerNone".
        kept = tuple(f for f in release.fields if not f.endswith("None"))
        assert now == IndexRow(**{**release.__dict__, "fields": kept}), release.item_id
    for preview in _dump()["previews"]:
        found = queries.matching_ids(
            upgraded,
            preview["query"],
            date.fromisoformat(preview["since"]),
            include_feed_items=preview["feed_items"],
        )
        assert found == preview["ids"], preview["query"]


def _parsed(message: bytes) -> EmailMessage:
    parsed = message_from_bytes(message, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _parts(message: bytes) -> tuple[str, str, str]:
    parsed = _parsed(message)
    text, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert text is not None and html is not None
    return str(parsed["Subject"]), str(text.get_content()), str(html.get_content())


def test_digests_and_alert_feeds_show_what_the_release_showed(
    upgraded: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The hits not mailed yet render as the release rendered them; each alert's Atom feed
    is the one feed readers hold (the same entries, ids and texts)."""
    settings = make_settings()
    env = build_environment()
    for unsent in _dump()["unsent_digests"]:
        with Session(upgraded) as session:
            subscriber = session.get(Subscriber, unsent["subscriber_id"])
            assert subscriber is not None
            rows = pending_rows(session, unsent["subscriber_id"], list(FREQUENCIES))
            digest = build_digest(session, settings, subscriber, rows)
        job = RenderJob(digest, unsent["message_id"], datetime.fromisoformat(unsent["now"]))
        (rendered,) = render_here([job], settings, env)
        release = base64.b64decode(unsent["message"])
        assert _parts(rendered.message) == _parts(release), unsent["subject"]
    for feed in _dump()["alert_feeds"]:
        atom = render_alert_feed(upgraded, feed["alert_id"], feed["self_url"])
        assert atom is not None and atom.decode() == feed["atom"], feed["alert_id"]


# --- the next runs mail nothing twice ----------------------------------------------------------


def _delivered(maildir: Path) -> list[EmailMessage]:
    return [parsed for _, parsed in _maildir(maildir)]


def _maildir(maildir: Path) -> list[tuple[bytes, EmailMessage]]:
    """Each delivered message as written (the Maildir's Return-Path first), and parsed."""
    if not maildir.exists():
        return []
    box = mailbox.Maildir(maildir, create=False)
    found = []
    for key in box.keys():
        raw = box.get_bytes(key)
        found.append((raw, _parsed(raw)))
    return found


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())


class Upgraded:
    """The upgraded database run by the new alertd over the stand-ins, day by day."""

    def __init__(self, runtime: Runtime, api: StandinApi, feeds: FeedServer) -> None:
        self.runtime, self.api, self.feeds = runtime, api, feeds
        self.maildir = runtime.settings.mail.maildir

    def serve(self, moment: datetime) -> None:
        story.serve(self.api, self.feeds, moment)

    async def run(self, moment: datetime, runtime: Runtime | None = None) -> RunReport:
        self.serve(moment)
        report = await run_once(runtime or self.runtime, now=moment, on_demand=True)
        assert not report.errors, report.errors
        return report

    def mail_to(self, address: str) -> list[EmailMessage]:
        """What the address was sent since the upgrade, oldest first (by its Date)."""
        sent = [m for m in _delivered(self.maildir) if m["To"] == address]
        return sorted(sent, key=lambda m: m["Date"].datetime)


def _at(day: int, hour: int) -> datetime:
    return datetime(2021, 2, day, hour, tzinfo=UTC)


def _ledger(engine: Engine) -> list[tuple[int, str, str, int, int]]:
    with Session(engine) as session:
        rows = session.exec(
            select(
                Ledger.subscriber_id,
                Ledger.source,
                Ledger.source_id,
                Ledger.version,
                Ledger.outbox_id,
            )
        ).all()
    return [tuple(row) for row in rows]


def _items_stored(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Item.id)).all())


def _release_message(outbox_id: int) -> bytes:
    row = next(r for r in _rows("outbox") if r["id"] == outbox_id)
    return base64.b64decode(row["message"])


async def _days_after(it: Upgraded, engine: Engine) -> None:
    """Thursday 18 to Tuesday 23 February, as the release would have gone on."""
    morning = await it.run(_at(18, 7))
    # What the release had queued (a digest, two in retry, a confirmation) goes out; the
    # daily hits it left are composed as their period comes (Bob's, Ken's); the feed entries
    # it stored last, not matched yet, are matched now (one for Alice).
    unsent = [r for r in _rows("outbox") if r["status"] in ("pending", "retry")]
    assert len(unsent) == 4
    assert (morning.new_items, morning.hits, morning.digests_queued) == (0, 1, 3)
    assert morning.sent == len(unsent) + 3
    with Session(engine) as session:
        unmatched = session.exec(select(Item.id).where(col(Item.matched_at).is_(None)))
        assert unmatched.all() == []
    delivered = {parsed["Message-ID"]: raw for raw, parsed in _maildir(it.maildir)}
    for row in unsent:
        written = delivered[row["message_id"]].split(b"\n", 1)[1]  # after its Return-Path
        assert written == _release_message(row["id"]).replace(b"\r\n", b"\n")
    # Bob heard of Jonathan Ashworth's questions as tabled, in his daily digest of 3 Feb; the
    # answer the release found last is in this morning's.
    (ashworth,) = it.mail_to("bob@example.org")
    assert ashworth["Subject"] == "1 new answer: Jonathan Ashworth"
    told = "We told you about this question when it was tabled, in our email of 3 February 2021."
    assert "(Now answered)" in _text(ashworth) and told in _text(ashworth)
    assert "answered 17 February 2021 (Commons 146893)" in _text(ashworth)

    await it.run(_at(18, 19))
    with Session(engine) as session:
        assert session.get(MemberLookup, story.WOLFSON) is None
        versions = select(Item).where(Item.source_id == str(story.UNNAMED_ANSWER))
        answer = session.exec(versions.order_by(col(Item.version).desc())).first()
        assert answer is not None and answer.stage == "answer"
        answerer = member_in(answer, Role.ANSWERER)
    assert answerer is not None and answerer.name == "Lord Wolfson of Tredegar"

    # The answer the release sent Bob on 16 Feb is corrected: he alone hears of it.
    await it.run(_at(19, 19))
    corrected = it.mail_to("bob@example.org")[-1]
    assert corrected["Subject"] == "1 new answer: Anne Marie Morris"
    assert "Carers: Coronavirus (Corrected answer)" in _text(corrected)
    assert "(Commons 146895)" in _text(corrected)
    assert it.mail_to("carol@example.org") == []  # weekly: due on Monday

    weekly = await it.run(_at(22, 7))
    assert weekly.digests_queued >= 1
    (carers,) = it.mail_to("carol@example.org")
    assert "Carers: Coronavirus" in _text(carers) and "(Commons 146895)" in _text(carers)

    await it.run(_at(22, 19))
    await it.run(_at(23, 7))
    answered = it.mail_to("bob@example.org")[-1]
    assert "(Now answered)" in _text(answered) and told in _text(answered)
    assert "answered 22 February 2021 (Commons 146892)" in _text(answered)
    # Paused, stopped, suspended and unconfirmed alerts stay silent.
    readers = {m["To"] for m in _delivered(it.maildir)}
    assert readers == {
        f"{name}@example.org" for name in ("alice", "bob", "carol", "dave", "ken", "ivan")
    }


_READ_LINK = re.compile(r"^Read [^\n]*:\n(\S+)$", re.MULTILINE)
# What a card says of the version it shows, after its heading: "Carers: Coronavirus (Now
# answered)". A plain answer, statement or feed item says nothing.
_STATUSES = (
    "Now answered",
    "Corrected answer",
    "Corrected statement",
    "Withdrawn",
    "Asked, awaiting answer",
)


def _cards(message: EmailMessage) -> list[tuple[str, str]]:
    """The cards of a digest as a reader tells them apart: each one's link, and its status."""
    part = message.get_body(("plain",))
    assert part is not None
    text = str(part.get_content()).replace("\r\n", "\n")  # the release's, as queued: CRLF
    cards, start = [], 0
    for link in _READ_LINK.finditer(text):
        card = " ".join(text[start : link.start()].split())
        cards.append((link.group(1), next((s for s in _STATUSES if f"({s}" in card), "")))
        start = link.end()
    assert cards, message["Subject"]
    return cards


def _check_nothing_twice(engine: Engine, maildir: Path) -> Counter[tuple[int, str, str]]:
    """No version went twice to anyone: the release's ledger is whole and nothing is claimed
    twice; every message was delivered once; each digest since shows only what its own
    ledger rows claim; and no reader got a card (a link at a stage) twice, in the release's
    mail or since. Returns the cards each subscriber read."""
    ledger = _ledger(engine)
    claimed = [row[:4] for row in ledger]
    released = [
        (r["subscriber_id"], r["source"], r["source_id"], r["version"]) for r in _rows("ledger")
    ]
    assert set(released) <= set(claimed) and len(claimed) == len(set(claimed))
    with Session(engine) as session:
        outbox = {row.message_id: row for row in session.exec(select(Outbox)).all()}
        items = {(i.source, i.source_id, i.version): i for i in session.exec(select(Item)).all()}
    sent_before = [r for r in _rows("outbox") if r["status"] == "sent"]
    delivered = Counter(m["Message-ID"] for m in _delivered(maildir))
    sent_now = {mid for mid, row in outbox.items() if row.status == "sent"}
    assert set(delivered) == sent_now - {r["message_id"] for r in sent_before}
    assert set(delivered.values()) == {1}
    read: Counter[tuple[int, str, str]] = Counter()
    for row in sent_before:
        if row["kind"] == "digest":
            cards = _cards(_parsed(base64.b64decode(row["message"])))
            read.update((row["subscriber_id"], *card) for card in cards)
    for message in _delivered(maildir):
        mailed = outbox[message["Message-ID"]]
        if mailed.kind != "digest":
            continue
        cards = _cards(message)
        own = {items[key[1:4]].url for key in ledger if key[4] == mailed.id}
        assert {link for link, _ in cards} <= own, message["Subject"]
        read.update((mailed.subscriber_id, *card) for card in cards)
    assert [card for card, count in read.items() if count > 1] == []
    return read


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


def test_upgraded_database_mails_nothing_twice(
    upgraded: Engine,
    make_settings: Callable[..., Settings],
    database_url: str,
    feeds: FeedServer,
    tmp_path: Path,
) -> None:
    with StandinApi(members=story.members(), hang_seconds=10.0) as api:
        with upgraded.begin() as connection:
            # The feed's address is the one value that differs: the feed server's port.
            connection.execute(
                sa.text("UPDATE feed SET url = :url"), {"url": feeds.url(story.FEED_PATH)}
            )
        settings = make_settings(
            database={"url": database_url},
            parliament={"base_url": api.base_url, "lookback_days": 1},
            members={"base_url": api.base_url},
        )
        mailer = mailer_factory("maildir", settings.mail.maildir, settings.smtp)
        runtime = Runtime(settings, upgraded, mailer, build_environment())
        it = Upgraded(runtime, api, feeds)
        asyncio.run(_days_after(it, upgraded))
        read = _check_nothing_twice(upgraded, settings.mail.maildir)
        # Bob read Anne Marie Morris's question as tabled and as answered (from the release),
        # then its correction (since), each once.
        bob = next(r["id"] for r in _rows("subscriber") if r["email"] == "bob@example.org")
        carers = {stage for who, link, stage in read if who == bob and link.endswith("/146895")}
        assert carers == {"Asked, awaiting answer", "Now answered", "Corrected answer"}

        # Polled again over the whole month, twice: every version is known already.
        month = settings.model_copy(
            update={"parliament": settings.parliament.model_copy(update={"lookback_days": 30})}
        )
        again = Runtime(month, upgraded, mailer, build_environment())

        async def twice() -> list[RunReport]:
            return [await it.run(_at(23, 8), again), await it.run(_at(23, 9), again)]

        for report in asyncio.run(twice()):
            assert (report.new_items, report.digests_queued, report.sent) == (0, 0, 0)

        # `alertd run --once`, twice, today: the questions answered since come in, once.
        it.serve(datetime.now(UTC))
        config = write_config(
            tmp_path,
            api,
            database={"url": database_url},
            mail={"maildir": str(settings.mail.maildir)},
        )
        before = len(_delivered(settings.mail.maildir))
        assert main(["run", "--once", "--config", str(config)]) == 0
        first = len(_delivered(settings.mail.maildir))
        stored = _items_stored(upgraded)
        assert first > before
        assert main(["run", "--once", "--config", str(config)]) == 0
        assert len(_delivered(settings.mail.maildir)) == first
        assert _items_stored(upgraded) == stored
    _check_nothing_twice(upgraded, settings.mail.maildir)
