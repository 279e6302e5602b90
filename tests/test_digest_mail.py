"""What a digest says and weighs: labels in words, wording by kind, the 90 KB cap and its
"more" page, MIME headers, retry timing and transactional mail first in the outbox."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alertd.config import DatabaseSettings, DeliverySettings, Settings, load_settings
from alertd.db import open_database, transaction
from alertd.digests.render import MAX_HTML_BYTES, build_environment, render_message
from alertd.digests.view import Block, Digest, DigestItem, DigestSection, human_label
from alertd.errors import ConfigError
from alertd.kinds import feed_item, written_question
from alertd.mail.outbox import claim_due, enqueue, queued_row, record_failure, retry_delay
from alertd.models import Alert, Outbox, OutboxKind, OutboxState, Subscriber
from alertd.web import create_app, serve_web

from digest_cases import CASES, Case, case_settings, compose_case

NOW = datetime(2021, 2, 10, 12, 0, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BASE = "https://alerts.example.org"
QUESTION = Block("Question", "To ask the Secretary of State for Education, what support is given.")
ANSWER = DigestItem(
    heading="Special Educational Needs: Coronavirus",
    url="https://questions-statements.parliament.uk/written-questions/detail/2021-01-25/1",
    words=written_question.ANSWER,
    origin="Department for Education",
    people=("Asked by Tulip Siddiq (Labour, Hampstead and Kilburn)", "Answered by Vicky Ford"),
    dates=(("Tabled", date(2021, 1, 25)), ("Answered", date(2021, 2, 1))),
    reference="Commons 1",
    blocks=(
        QUESTION,
        Block(
            "Answer",
            "Children and young people with special educational needs are a priority.",
            quoted=True,
        ),
    ),
    read_label="Read the full question and answer",
)
FEED_ITEM = replace(
    ANSWER,
    heading="School funding: a new formula",
    words=feed_item.FEED_ITEM,
    origin="Schools Week",
    origin_label="From ",
    people=(),
    dates=(("Published", date(2021, 2, 1)),),
    reference="",
    blocks=(
        QUESTION,
        Block(
            "Summary",
            "Children and young people with special educational needs are a priority.",
            quoted=True,
        ),
    ),
    read_label="Read it in full",
    url="https://schoolsweek.example/funding",
)


def _digest(*sections: DigestSection) -> Digest:
    return Digest(
        recipient="parent@example.org",
        sections=sections,
        unsubscribe_url=f"{BASE}/unsubscribe/u.1.sig",
        manage_url=f"{BASE}/manage/m.1.sig",
    )


def _section(label: str, items: tuple[DigestItem, ...], total: int | None = None) -> DigestSection:
    return DigestSection(
        label=label,
        stop_url=f"{BASE}/alerts/stop/s.1.sig",
        items=items,
        total=len(items) if total is None else total,
        more_url=f"{BASE}/alerts/more/more.1.sig",
    )


def _render(digest: Digest, settings: Settings | None = None) -> tuple[bytes, EmailMessage]:
    settings = settings or Settings()
    raw = render_message(
        digest, settings, build_environment(settings), message_id="<m1@localhost>", now=NOW
    ).message
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


def _body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def _compose(tmp_path: Path, case: Case) -> bytes:
    """The digest a case of our own composes, through the golden cases' store and match."""
    CASES["extra"] = case
    try:
        return compose_case(tmp_path, "extra")
    finally:
        del CASES["extra"]


def _parsed(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# ---------------------------------------------------------------------------------------------
# Labels in words


@pytest.mark.parametrize(
    ("query", "label"),
    [
        ('department:"Department for Education"', "Department for Education"),
        ("member:4113", "Nadhim Zahawi"),
        ("asker:99", "Member 99"),
        ("department:60 schools", "Department for Education, schools"),
        ('member:"Rushanara Ali" schools', "Rushanara Ali, schools"),
        ('"special educational needs" -funding', "special educational needs, not funding"),
        ("NHS waiting lists", "NHS waiting lists"),
        ("(nhs OR dental) house:lords", "(nhs or dental), House of Lords"),
        ("heading:covid* AND NOT vaccine", "covid*, not vaccine"),
        ("\u201cfree school meals\u201d", "free school meals"),
    ],
)
def test_an_alert_is_labelled_in_words(query: str, label: str) -> None:
    names = {4113: "Nadhim Zahawi"}
    assert human_label(query, names, {60: "Department for Education"}) == label


@pytest.mark.slow
def test_a_department_alert_is_named_by_its_department(tmp_path: Path) -> None:
    # The Department for Education's id: named from the stored answers.
    parsed = _parsed(_compose(tmp_path, Case(("department:60",), "2021", 3)))
    subject = str(parsed["Subject"])
    assert re.fullmatch(r"\d+ new answers: Department for Education", subject), subject
    plain, markup = _body(parsed, "plain"), _body(parsed, "html")
    assert "department:" not in plain and "department:" not in markup
    assert re.search(r"^Department for Education: \d+ new answers$", plain, re.M)


# ---------------------------------------------------------------------------------------------
# Wording follows the kinds a digest holds


def test_a_digest_of_feed_items_says_so() -> None:
    _, parsed = _render(_digest(_section("school funding", (FEED_ITEM, FEED_ITEM))))
    plain, markup = _body(parsed, "plain"), _body(parsed, "html")
    assert str(parsed["Subject"]) == "2 new items: school funding"
    assert plain.startswith("2 new items from your feeds\nItems from the feeds alertd follows")
    assert ">2 new items from your feeds</h1>" in markup
    assert "school funding: 2 new items" in plain
    for text in (plain, markup, str(parsed["Subject"])):
        assert "written question" not in text and "new answer" not in text


def test_a_mixed_digest_names_both_kinds() -> None:
    digest = _digest(
        _section("special educational needs", (ANSWER,)),
        _section("school funding", (FEED_ITEM, FEED_ITEM), total=5),
    )
    _, parsed = _render(digest)
    plain = _body(parsed, "plain")
    assert str(parsed["Subject"]) == (
        "1 new answer and 5 new items: special educational needs, school funding"
    )
    assert plain.startswith(
        "1 new answer to a written question and 5 new items from your feeds\n"
        "UK Parliament written answers and items from the feeds alertd follows that match"
    )
    # The three not shown are counted as the kind of those shown.
    assert "school funding: 5 new items" in plain


# ---------------------------------------------------------------------------------------------
# Under 90 KB, whatever the digest holds


def test_a_busy_digest_is_cut_to_fit_under_90_kb_the_same_way_every_time() -> None:
    long_answer = replace(
        ANSWER,
        blocks=(QUESTION, Block("Answer", "A long answer about schools. " * 60, quoted=True)),
    )
    many = tuple(
        replace(long_answer, reference=f"Commons {n}", heading=f"Question {n}") for n in range(80)
    )
    digest = _digest(_section("schools", many, total=126), _section("pupils", many[:30], total=30))
    raw, parsed = _render(digest)
    assert raw == _render(digest)[0]
    markup = _body(parsed, "html")
    assert len(markup.encode()) <= MAX_HTML_BYTES
    shown = markup.count('class="card"')
    assert 2 <= shown < 110
    # One limit for every alert: both show the same number, each its first (newest) items.
    assert markup.count(">Question 0</a>") == 2
    per_alert = shown // 2
    assert f">Question {per_alert - 1}</a>" in markup and f">Question {per_alert}<" not in markup
    assert f"and {126 - per_alert} more for this alert</a>" in markup
    assert f"and {30 - per_alert} more for this alert</a>" in markup
    assert f'href="{BASE}/alerts/more/more.1.sig"' in markup
    # The footer (and its unsubscribe link) is still there, at the end.
    assert markup.rstrip().endswith("</html>") and "Unsubscribe from all alerts" in markup
    # The text part shows the same items.
    assert _body(parsed, "plain").count("Read it in full:") == shown


def test_a_small_digest_is_left_whole() -> None:
    _, parsed = _render(_digest(_section("schools", (ANSWER, ANSWER), total=2)))
    assert _body(parsed, "html").count('class="card"') == 2


@pytest.mark.slow
def test_a_busy_composed_digest_stays_under_90_kb(tmp_path: Path) -> None:
    # 347 answers of 1 February 2021 match these two, with room for all of them per alert;
    # questions answered together (groupedQuestions) are shown once: 312.
    parsed = _parsed(_compose(tmp_path, Case(("government", "department"), "2021", 1000)))
    markup = _body(parsed, "html")
    assert len(markup.encode()) <= MAX_HTML_BYTES
    assert str(parsed["Subject"]).startswith("312 new answers: government, department")
    hidden = [int(n) for n in re.findall(r"and (\d+) more for this alert</a>", markup)]
    assert len(hidden) == 2 and markup.count('class="card"') + sum(hidden) == 312
    assert "Unsubscribe from all alerts" in markup


# ---------------------------------------------------------------------------------------------
# MIME


def test_mime_version_is_in_the_message_header_only() -> None:
    raw, parsed = _render(_digest(_section("schools", (ANSWER,))))
    assert raw.count(b"MIME-Version:") == 1
    for part in parsed.iter_parts():
        assert "MIME-Version" not in part


# ---------------------------------------------------------------------------------------------
# The "more" page


async def test_the_more_link_lists_what_the_digest_had_no_room_for(tmp_path: Path) -> None:
    # Nadhim Zahawi answered 19 of the recorded answers, two of them together: 18 shown as
    # items, the digest shows 5.
    raw = compose_case(tmp_path, "member")
    plain = _body(_parsed(raw), "plain")
    found = re.search(r"\.\.\. and 13 more for this alert:\n(\S+)", plain)
    assert found is not None
    path = found.group(1).removeprefix(BASE)
    assert path.startswith("/alerts/more/")
    settings = case_settings(tmp_path, "member")
    engine = open_database(settings.database)
    try:
        app = create_app(settings, engine)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as web:
            page = await web.get(path)
            forged = await web.get(path[:-3] + "abc")
            with transaction(engine) as session:
                for alert in session.exec(select(Alert)).all():
                    alert.unsubscribed_at = NOW
            gone = await web.get(path)
    finally:
        engine.dispose()
    assert page.status_code == 200
    assert "Nadhim Zahawi" in page.text and "member:4113" not in page.text
    assert page.text.count("<li>") == 19
    for heading in re.findall(r"^([^\n]+)\n(?:Department|From )", plain, re.M)[:5]:
        assert heading.split(" (Corrected")[0] in page.text
    assert forged.status_code >= 400 and "<li>" not in forged.text
    assert gone.status_code == 404


# ---------------------------------------------------------------------------------------------
# Retry timing and transactional mail


def test_retry_timing_is_configured_like_postfix_backoff(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text("[delivery]\nfirst_retry_s = 60\nmax_retry_s = 600\n")
    delivery = load_settings(str(config), {}).delivery
    assert (delivery.first_retry_s, delivery.max_retry_s) == (60, 600)
    assert Settings().delivery.first_retry_s == 300 and Settings().delivery.max_retry_s == 21600
    rng = random.Random(7)
    delays = [retry_delay(n, delivery, rng).total_seconds() for n in range(1, 12)]
    assert 48 <= delays[0] <= 72 and 96 <= delays[1] <= 144 and 192 <= delays[2] <= 288
    assert all(d <= 600 for d in delays) and delays[-1] >= 480
    assert retry_delay(10_000, delivery, rng).total_seconds() <= 600  # no overflow
    config.write_text("[delivery]\nfirst_retry_s = 600\nmax_retry_s = 60\n")
    with pytest.raises(ConfigError, match="max_retry_s"):
        load_settings(str(config), {})


@pytest.fixture
def engine(database_url: str) -> Engine:
    return open_database(DatabaseSettings(url=database_url))


def _subscriber(engine: Engine) -> int:
    with transaction(engine) as session:
        subscriber = Subscriber(email="reader@example.org", created_at=NOW)
        session.add(subscriber)
        session.flush()
        assert subscriber.id is not None
        return subscriber.id


def test_a_failed_send_waits_as_configured(engine: Engine) -> None:
    subscriber_id = _subscriber(engine)
    outbox_id = enqueue(
        engine,
        subscriber_id=subscriber_id,
        recipient="reader@example.org",
        message_id="<d1@alertd.test>",
        subject="s",
        message=b"x",
        now=NOW,
    )
    delivery = DeliverySettings(first_retry_s=10, max_retry_s=25)
    waits = []
    for _ in range(3):
        record_failure(engine, outbox_id, "451", delivery, NOW, random.Random(3), permanent=False)
        with Session(engine) as session:
            row = session.get(Outbox, outbox_id)
            assert row is not None and row.status == OutboxState.RETRY
            waits.append((row.next_attempt_at.replace(tzinfo=UTC) - NOW).total_seconds())
    assert 8 <= waits[0] <= 12 and 16 <= waits[1] <= 24 and 20 <= waits[2] <= 25
    engine.dispose()


def test_transactional_mail_goes_first_and_its_refusal_is_no_bounce(engine: Engine) -> None:
    subscriber_id = _subscriber(engine)
    with transaction(engine) as session:
        for n in range(3):
            session.add(
                Outbox(
                    **queued_row(
                        subscriber_id=subscriber_id,
                        recipient="reader@example.org",
                        message_id=f"<digest{n}@alertd.test>",
                        subject="digest",
                        message=b"x",
                        now=NOW - timedelta(hours=1),
                    )
                )
            )
    confirm_id = enqueue(
        engine,
        subscriber_id=subscriber_id,
        recipient="reader@example.org",
        message_id="<confirm@alertd.test>",
        subject="Confirm your alert",
        message=b"x",
        now=NOW,
    )
    [first] = claim_due(engine, now=NOW, limit=1, lease_s=60, owner="w")
    assert first.id == confirm_id
    record_failure(
        engine, confirm_id, "550 no such user", DeliverySettings(), NOW, random.Random(),
        permanent=True,
    )  # fmt: skip
    with Session(engine) as session:
        row = session.get(Outbox, confirm_id)
        subscriber = session.get(Subscriber, subscriber_id)
        assert row is not None and subscriber is not None
        assert (row.kind, row.status) == (OutboxKind.TRANSACTIONAL, OutboxState.DEAD)
        assert subscriber.consecutive_bounces == 0
    # A digest refused the same way is a bounce.
    [digest] = claim_due(engine, now=NOW, limit=1, lease_s=60, owner="w")
    record_failure(
        engine, digest.id, "550 no such user", DeliverySettings(), NOW, random.Random(),
        permanent=True,
    )  # fmt: skip
    with Session(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None and subscriber.consecutive_bounces == 1
    engine.dispose()


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)
async def test_the_more_page_reads_on_a_phone(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    raw = compose_case(tmp_path, "member")
    found = re.search(r"\.\.\. and 13 more for this alert:\n(\S+)", _body(_parsed(raw), "plain"))
    assert found is not None
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings = case_settings(tmp_path, "member")
    engine = open_database(settings.database)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_web(settings, engine, stop, sock=sock, clock=lambda: NOW))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}" + found.group(1).removeprefix(BASE)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page(viewport={"width": 390, "height": 844})
                await page.goto(url)
                heading = page.get_by_role("heading", name="Recent matches of your alert")
                assert await heading.is_visible()
                assert await page.get_by_text("Nadhim Zahawi", exact=True).is_visible()
                assert await page.locator("ol.matches > li").count() == 19
                first = page.locator("ol.matches h2 a").first
                assert (await first.get_attribute("href") or "").startswith(
                    "https://questions-statements.parliament.uk/"
                )
                # Nothing wider than the phone: no sideways scrolling.
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
                shot = tmp_path / "more-390.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
            finally:
                await browser.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.close()
        engine.dispose()
