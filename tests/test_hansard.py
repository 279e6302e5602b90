"""Spoken contributions to debates (Hansard): parsing, polling, revisions, matching, digests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.backfill import backfill
from alertd.config import Settings, load_settings
from alertd.db import open_database
from alertd.digests.render import build_environment
from alertd.errors import ConfigError, SourceInvalid, SourceUnavailable
from alertd.items import add_items
from alertd.kinds import KINDS, kind_of
from alertd.kinds.kind import Role
from alertd.kinds.spoken_contribution import (
    HANSARD_SEARCH,
    SOURCE,
    SpokenContribution,
    parse,
    title_slug,
    version_key,
)
from alertd.mail.transports import mailer_factory
from alertd.matching.hits import match_new_items
from alertd.models import Hit, Item, Member, SourceState
from alertd.pipeline import Runtime, run_once
from alertd.sources.source import PollResult
from alertd.status import collect_status, format_status
from alertd.subscriptions import lifecycle
from alertd.web.atom import render_alert_feed

from maildir_reading import body, take_mail
from standin_api import member_search_item
from standin_hansard import HansardStandin, load_lords, load_member185, official_path
from window_poll import poll_kind

CORBYN = 185
KIND = SpokenContribution()
# The Water Bill, 28 Mar 2025: twelve of Jeremy Corbyn's contributions to one debate.
WATER_BILL_DAY = date(2025, 3, 28)
WATER_BILL_EVENING = datetime(2025, 3, 28, 19, 0, tzinfo=UTC)
# The Debate on the Address, 17 Jul 2024: one long speech.
ADDRESS = "6B949895-BD1C-46C3-AC29-9BC88A1B26E2"
ADDRESS_EVENING = datetime(2024, 7, 17, 21, 0, tzinfo=UTC)
# The Lords, 30 Jun 2026: Baroness Doocey (4197) and Lord Hanson of Flint (533), one debate.
LORDS_DAY = date(2026, 6, 30)
ALL_DAYS_NOW = datetime(2026, 7, 21, 12, 0, tzinfo=UTC)
ALL_DAYS_LOOKBACK = (date(2026, 7, 21) - date(2024, 7, 4)).days


def _records() -> list[dict[str, Any]]:
    return [*load_member185(), *load_lords()]


def _record(ext_id: str) -> dict[str, Any]:
    return next(r for r in _records() if r["ContributionExtId"] == ext_id)


def _on(day: date) -> list[dict[str, Any]]:
    return [r for r in _records() if r["SittingDate"].startswith(day.isoformat())]


# -- parsing -----------------------------------------------------------------------------------


def test_every_recorded_contribution_parses_with_its_official_page() -> None:
    records = _records()
    items = [parse(record) for record in records]
    assert len(items) == 308
    assert {item.kind for item in items} == {KIND.name}
    assert {item.house for item in items} == {"Commons", "Lords"}
    for record, item in zip(load_member185(), items, strict=False):
        # The page Hansard's own redirect gives for each of Corbyn's 306.
        assert unquote(item.url.removeprefix("https://hansard.parliament.uk")) == official_path(
            record["ContributionExtId"]
        )
    address = next(item for item in items if item.source_id == ADDRESS)
    assert address.title == "Debate on the Address"  # the API's leading space gone
    assert address.day == date(2024, 7, 17) and address.stage == "spoken"
    assert address.members[0].role == Role.SPEAKER and address.members[0].id == CORBYN
    assert address.members[0].name is None  # named from the Members API, with party and seat
    assert address.details["attributed_to"] == "Jeremy Corbyn (Islington North) (Ind)"
    assert address.details["section"] == "Commons Chamber" and address.details["order"] == 101
    assert address.body_text.startswith("It is a great pleasure to be able to take part")
    # Paragraphs kept, the column-number anchor gone from the words.
    assert "the Islington North constituency" in address.body_text
    assert address.body_html.startswith("<p>It is a great pleasure")
    assert address.body_html.count("<p>") == address.body_text.count("\n\n") + 1


def test_an_oral_question_keeps_its_words_not_its_tags() -> None:
    record = next(r for r in load_member185() if r["HRSTag"] == "Question")
    item = parse(record)
    assert "<Question" in record["ContributionTextFull"]
    assert "HRSContentId" not in item.body_html and "<question" not in item.body_html.lower()
    assert item.body_text.startswith("7. Whether he plans to take steps to consolidate")


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Speaker’s Statement", "Speaker’SStatement"),
        ("Defence: 2.5% GDP Spending Commitment", "Defence25GDPSpendingCommitment"),
        ("Swann Report: 40th Anniversary", "SwannReport40ThAnniversary"),
        ("Israel: UNRWA Ban", "IsraelUNRWABan"),
        ("Military Co-operation with Israel", "MilitaryCo-OperationWithIsrael"),
        ("Income Tax (Charge)", "IncomeTax(Charge)"),
        (" Renters’ Rights Bill", "Renters’RightsBill"),
    ],
)
def test_title_slug_as_hansard_makes_it(title: str, slug: str) -> None:
    assert title_slug(title) == slug


def test_a_contribution_without_a_member_is_stored_without_one() -> None:
    for member_id in (0, None):
        record = {**_record(ADDRESS), "MemberId": member_id, "MemberName": None}
        record["AttributedTo"] = "Hon. Members"
        item = parse(record)
        assert item.members == () and item.details["attributed_to"] == "Hon. Members"
    del record["MemberId"]
    assert parse(record).members == ()


def test_an_unknown_field_is_ignored() -> None:
    assert parse({**_record(ADDRESS), "IsReiteration": False}) == parse(_record(ADDRESS))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ContributionExtId", None),
        ("ContributionExtId", "../../x"),
        ("DebateSectionExtId", ""),
        ("House", "Bicameral"),
        ("SittingDate", None),
        ("SittingDate", "yesterday"),
        ("ContributionTextFull", None),
    ],
)
def test_a_bad_field_is_source_invalid(field: str, value: Any) -> None:
    with pytest.raises(SourceInvalid, match=field):
        parse({**_record(ADDRESS), field: value})


def test_the_version_key_is_the_words_not_the_markup() -> None:
    text = parse(_record(ADDRESS)).body_text
    assert version_key(text) == version_key(text.replace(" ", "  "))
    assert version_key(text) != version_key(text.replace("pleasure", "privilege"))


def test_pages_are_counted_by_total_result_count_only() -> None:
    page = {"SpokenResultCount": 0, "TotalResultCount": 2, "Results": load_lords()}
    assert HANSARD_SEARCH.page(page, 0) == (2, load_lords())
    for broken in ({"Results": []}, {"TotalResultCount": 1}, [], {**page, "Results": [{}]}):
        with pytest.raises(SourceInvalid, match="skip=0"):
            HANSARD_SEARCH.page(broken, 0)


# -- polling the stand-in ----------------------------------------------------------------------


@pytest.fixture
def hansard_api() -> Iterator[HansardStandin]:
    """The stand-in serving the 308 recorded contributions (Corbyn's 306, two in the Lords)."""
    with HansardStandin(_records(), hang_seconds=5.0) as api:
        yield api


async def _poll(
    engine: Engine,
    api: HansardStandin,
    now: datetime,
    *,
    lookback_days: int = 0,
    base_url: str | None = None,
    **parliament: Any,
) -> PollResult:
    """One poll of the Hansard source alone, through its own HTTP client."""
    settings = Settings.model_validate(
        {
            "parliament": {"timeout_s": 2.0, **parliament},
            "hansard": {"base_url": base_url or api.base_url},
        }
    )
    return await poll_kind(engine, KIND, settings, now, lookback_days=lookback_days)


def _items(engine: Engine) -> list[Item]:
    with Session(engine) as session:
        return list(session.exec(select(Item).order_by(col(Item.id))).all())


def _searches(api: HansardStandin) -> list[dict[str, str]]:
    found = []
    for _, path in api.requests:
        parts = urlsplit(path)
        assert parts.path == "/search/contributions/Spoken.json"  # nothing else is asked
        found.append({k: v[-1] for k, v in parse_qs(parts.query).items()})
    return found


async def test_a_poll_pages_both_houses_to_the_end(
    db_engine: Engine, hansard_api: HansardStandin
) -> None:
    result = await _poll(
        db_engine, hansard_api, ALL_DAYS_NOW, lookback_days=ALL_DAYS_LOOKBACK, page_size=40
    )
    assert (result.fetched, result.new_items) == (308, 308)
    searches = _searches(hansard_api)
    commons = [s for s in searches if s["queryParameters.house"] == "Commons"]
    lords = [s for s in searches if s["queryParameters.house"] == "Lords"]
    assert [int(s["queryParameters.skip"]) for s in commons] == list(range(0, 306, 40))
    assert [int(s["queryParameters.skip"]) for s in lords] == [0]
    assert {s["queryParameters.startDate"] for s in searches} == {"2024-07-04"}
    assert {s["queryParameters.endDate"] for s in searches} == {"2026-07-21"}
    assert {s["queryParameters.orderBy"] for s in searches} == {"SittingDateAsc"}
    assert {s["queryParameters.take"] for s in searches} == {"40"}
    items = _items(db_engine)
    assert {i.source for i in items} == {SOURCE} and len({i.source_id for i in items}) == 308
    with Session(db_engine) as session:
        state = session.get(SourceState, SOURCE)
    assert state is not None and state.high_water == date(2026, 7, 21) and state.last_error is None

    # Polled again: nothing new (the listing holds every text: no other request).
    hansard_api.clear_requests()
    again = await _poll(
        db_engine, hansard_api, ALL_DAYS_NOW, lookback_days=ALL_DAYS_LOOKBACK, page_size=100
    )
    assert (again.fetched, again.new_items) == (308, 0)
    assert len(_searches(hansard_api)) == 5  # 4 pages of the Commons, 1 of the Lords


async def test_a_failed_page_stores_nothing_and_the_next_poll_catches_up(
    db_engine: Engine, hansard_api: HansardStandin
) -> None:
    hansard_api.fail_next("/search/contributions", 500, skip=200)
    with pytest.raises(SourceUnavailable, match="HTTP 500"):
        await _poll(
            db_engine, hansard_api, ALL_DAYS_NOW, lookback_days=ALL_DAYS_LOOKBACK, page_size=100
        )
    assert _items(db_engine) == []
    with Session(db_engine) as session:
        state = session.get(SourceState, SOURCE)
    assert state is not None and state.high_water is None and "HTTP 500" in (state.last_error or "")
    result = await _poll(
        db_engine, hansard_api, ALL_DAYS_NOW, lookback_days=ALL_DAYS_LOOKBACK, page_size=100
    )
    assert result.new_items == 308 and len(_items(db_engine)) == 308


async def test_broken_json_is_a_source_error(
    db_engine: Engine, hansard_api: HansardStandin
) -> None:
    hansard_api.fail_next("/search/contributions", "broken_json")
    with pytest.raises(SourceInvalid, match="broken JSON"):
        await _poll(db_engine, hansard_api, WATER_BILL_EVENING)
    assert _items(db_engine) == []


async def test_an_html_page_with_status_200_is_a_clear_source_error(
    db_engine: Engine, hansard_api: HansardStandin
) -> None:
    # A wrong base URL: the Hansard API answers a route it does not know with a web page.
    wrong = hansard_api.base_url + "/api"
    with pytest.raises(SourceInvalid, match="returned an HTML page, not JSON") as raised:
        await _poll(db_engine, hansard_api, WATER_BILL_EVENING, base_url=wrong)
    assert raised.value.status == 200 and "/api/search/contributions/Spoken.json" in str(
        raised.value
    )
    assert _items(db_engine) == []


async def test_a_record_with_a_bad_field_is_skipped_not_the_poll(
    db_engine: Engine, hansard_api: HansardStandin
) -> None:
    first, *rest = _on(WATER_BILL_DAY)
    hansard_api.update_contribution(first["ContributionExtId"], DebateSectionExtId=None)
    hansard_api.put_contribution({**rest[0], "IsReiteration": False})  # an unknown field
    result = await _poll(db_engine, hansard_api, WATER_BILL_EVENING)
    assert (result.fetched, result.new_items) == (12, 11)


async def test_a_revised_text_is_a_corrected_version_and_markup_alone_is_not(
    db_engine: Engine, hansard_api: HansardStandin
) -> None:
    await _poll(db_engine, hansard_api, ADDRESS_EVENING)
    original = _record(ADDRESS)["ContributionTextFull"]
    # Only the markup changes (the column-number anchor goes): the same words.
    hansard_api.update_contribution(
        ADDRESS, ContributionTextFull=re.sub(r"<span [^>]*></span>", "", original)
    )
    assert (
        await _poll(db_engine, hansard_api, ADDRESS_EVENING + timedelta(hours=1))
    ).new_items == 0
    revised = original.replace("A good start would be", "A good start, and a fair one, would be")
    hansard_api.update_contribution(ADDRESS, ContributionTextFull=revised)
    next_day = ADDRESS_EVENING + timedelta(days=1)
    result = await _poll(db_engine, hansard_api, next_day, lookback_days=1)
    assert result.new_items == 3  # the revision, and two contributions of the next day
    versions = [i for i in _items(db_engine) if i.source_id == ADDRESS]
    assert [(i.version, i.corrected_on) for i in versions] == [(1, None), (2, next_day.date())]
    assert "a fair one" in versions[1].body_text and versions[1].url == versions[0].url


# -- matching ----------------------------------------------------------------------------------


def _subscribe(engine: Engine, email: str, query: str, now: datetime, **kwargs: Any) -> int:
    kwargs.setdefault("frequency", "immediate")
    alert = lifecycle.subscribe(engine, email, query, confirmed=True, now=now, **kwargs)
    assert alert.id is not None
    return alert.id


def _hits(engine: Engine, alert_id: int) -> list[Item]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(Item)
                .join(Hit, col(Hit.item_id) == col(Item.id))
                .where(Hit.alert_id == alert_id)
                .order_by(col(Item.id))
            ).all()
        )


def test_keyword_member_and_speaker_alerts_match_contributions(db_engine: Engine) -> None:
    now = datetime(2025, 3, 28, 19, 0, tzinfo=UTC)
    queries = [
        "pollution",
        "pesticides",
        f"member:{CORBYN}",
        f"speaker:{CORBYN}",
        f"asker:{CORBYN}",
        "type:debate pollution",
        "type:question pollution",
        "house:lords pollution",
        f"speaker:{CORBYN} heading:water",
        "superintelligence",
        "speaker:533",
    ]
    ids = {q: _subscribe(db_engine, "r@example.org", q, now - timedelta(hours=1)) for q in queries}
    news = [parse(r) for r in [*_on(WATER_BILL_DAY), *load_lords()]]
    assert add_items(db_engine, SOURCE, news, now=now, today=now.date()) == 14
    match_new_items(db_engine, now=now)
    counts = {q: len(_hits(db_engine, alert_id)) for q, alert_id in ids.items()}
    assert counts == {
        # Its word in 5 of the 12 contributions to the Water Bill (the debate's title does not
        # have it); another in one only.
        "pollution": 5,
        "pesticides": 1,
        f"member:{CORBYN}": 12,
        f"speaker:{CORBYN}": 12,
        f"asker:{CORBYN}": 0,
        "type:debate pollution": 5,
        "type:question pollution": 0,
        "house:lords pollution": 0,
        f"speaker:{CORBYN} heading:water": 12,
        "superintelligence": 2,
        "speaker:533": 1,
    }


# -- digests, through the whole pipeline -------------------------------------------------------


@pytest.fixture
def pipeline_api() -> Iterator[HansardStandin]:
    """The stand-in serving the recorded contributions and Jeremy Corbyn in its Members API
    (named as his contributions name him), no written questions or statements."""
    corbyn = {
        "id": CORBYN,
        "name": "Jeremy Corbyn",
        "listAs": "Corbyn, Jeremy",
        "party": "Independent",
        "memberFrom": "Islington North",
    }
    members = [member_search_item(corbyn, "Commons")]
    with HansardStandin(_records(), members=members, hang_seconds=5.0) as api:
        yield api


@pytest.fixture
async def runtime(
    make_settings: Callable[..., Settings], database_url: str, pipeline_api: HansardStandin
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        database={"url": database_url},
        parliament={"base_url": pipeline_api.base_url, "lookback_days": 0},
        members={"base_url": pipeline_api.base_url},
        hansard={"enabled": True, "base_url": pipeline_api.base_url},
    )
    engine = open_database(settings.database)
    mailer = mailer_factory("maildir", settings.mail.maildir, settings.smtp)
    yield Runtime(settings, engine, mailer, build_environment())
    engine.dispose()


def _mail(runtime: Runtime) -> list[EmailMessage]:
    return take_mail(runtime.settings.mail.maildir)


async def test_a_debate_is_one_card_of_its_contributions_in_text_and_html(
    runtime: Runtime,
) -> None:
    engine = runtime.engine
    _subscribe(engine, "follower@example.org", f"speaker:{CORBYN}", WATER_BILL_EVENING)
    report = await run_once(runtime, now=WATER_BILL_EVENING + timedelta(minutes=1))
    assert report.errors == [] and report.polls["hansard"]
    assert report.new_items_by_source[SOURCE] == 12
    [message] = _mail(runtime)
    assert str(message["Subject"]) == "12 new contributions: Jeremy Corbyn"
    text = body(message, "plain")
    assert text.startswith("12 new contributions to debates\nUK Parliament debates (Hansard)")
    assert (
        "\n\nDebates\n\nWater Bill\nCommons Chamber\nDebated 28 March 2025 (House of Commons)\n"
        in (text)
    )
    # Up to five contributions, each under who spoke, with its own link; the rest counted.
    labels = re.findall(r"\n\n(Jeremy Corbyn[^\n]*):\n", text)
    assert len(labels) == 5 and "Jeremy Corbyn (Islington North) (Ind)" in labels
    links = re.findall(r"\n(https://hansard\.parliament\.uk/\S+#contribution-\S+)\n", text)
    assert len(links) == 5 and all("/Commons/2025-03-28/debates/" in link for link in links)
    assert "/WaterBill#contribution-3F65C7E7-6F3B-4121-848A-A3434E18A432" in links[0]
    assert "7 more contributions in this debate also match." in text
    assert "Read it in full:\nhttps://hansard.parliament.uk/Commons/2025-03-28/debates/" in text
    assert "Why you got this: you follow Jeremy Corbyn" in text
    assert "more for this alert" not in text  # all twelve are in the card
    html = body(message, "html")
    assert re.search(r'<h3 class="group"[^>]*>Debates</h3>', html)
    assert html.count('class="card"') == 1 and ">Water Bill</a></h3>" in html
    labels_html = re.findall(r'<p class="label"[^>]*><a href="([^"]+)"[^>]*>([^<]+)</a>', html)
    assert [href for href, _ in labels_html] == links
    assert labels_html[0][1] == "Jeremy Corbyn (Islington North) (Ind)"
    assert "Read the debate</a>" in html
    with Session(engine) as session:
        member = session.get(Member, CORBYN)
    # Named through the Members API, with the party and seat Hansard does not give.
    assert member is not None and (member.name, member.party) == ("Jeremy Corbyn", "Independent")


async def test_contributions_found_by_different_alerts_are_not_grouped_together(
    runtime: Runtime,
) -> None:
    engine = runtime.engine
    before = WATER_BILL_EVENING - timedelta(hours=1)
    _subscribe(engine, "reader@example.org", "pesticides", before)
    _subscribe(engine, "reader@example.org", '"United Utilities"', before)
    _subscribe(engine, "reader@example.org", "pollution", before)
    await run_once(runtime, now=WATER_BILL_EVENING)
    [message] = _mail(runtime)
    text = body(message, "plain")
    # "pollution" is in five contributions, among them the two the other alerts found
    # first: those stand alone under their own alert; the other three share one card.
    subject = "5 new contributions: pesticides, United Utilities, pollution"
    assert str(message["Subject"]) == subject
    headings = re.findall(r"\n={72}\n([^\n]+)\n={72}\n", text)
    assert headings == [
        "pesticides: 1 new contribution",
        "United Utilities: 1 new contribution",
        "pollution: 3 new contributions",
    ]
    assert text.count("\nWater Bill\n") == 3 and text.count("#contribution-") == 5
    assert text.count("Also matches: pollution") == 2


async def test_the_more_count_counts_contributions_not_cards(
    runtime: Runtime,
) -> None:
    # 11 Sep 2024: six of Corbyn's contributions to three debates (four to one of them), two
    # cards per alert shown: the debate of four and one other, five contributions in all.
    runtime.settings = runtime.settings.model_copy(
        update={"digest": runtime.settings.digest.model_copy(update={"max_per_alert": 2})}
    )
    evening = datetime(2024, 9, 11, 20, 0, tzinfo=UTC)
    _subscribe(runtime.engine, "follower@example.org", f"speaker:{CORBYN}", evening)
    await run_once(runtime, now=evening + timedelta(minutes=1))
    [message] = _mail(runtime)
    text = body(message, "plain")
    assert "Jeremy Corbyn: 6 new contributions" in text and text.count("Read it in full:") == 2
    assert "\nBuilding Safety and Resilience\n" in text and text.count("#contribution-") == 5
    assert "... and 1 more for this alert:" in text


async def test_a_revision_goes_only_to_those_sent_the_original(
    runtime: Runtime, pipeline_api: HansardStandin
) -> None:
    engine = runtime.engine
    before = ADDRESS_EVENING - timedelta(hours=1)
    _subscribe(engine, "alice@example.org", '"two-child benefit cap"', before)
    _subscribe(engine, "carol@example.org", f"speaker:{CORBYN}", before)
    _subscribe(engine, "bob@example.org", "cherished", before)  # only the revision says it
    await run_once(runtime, now=ADDRESS_EVENING)
    assert sorted(str(m["To"]) for m in _mail(runtime)) == [
        "alice@example.org",
        "carol@example.org",
    ]
    original = _record(ADDRESS)["ContributionTextFull"]
    revised = original.replace("A good start would be", "A cherished start would be")
    pipeline_api.update_contribution(ADDRESS, ContributionTextFull=revised)
    # The next day's poll asks again from the last good one's day.
    next_day = ADDRESS_EVENING + timedelta(days=1)
    report = await run_once(runtime, now=next_day)
    # The revision, and the next day's two contributions (to another debate).
    assert report.new_items_by_source[SOURCE] == 3
    corrected = {str(m["To"]): m for m in _mail(runtime)}
    assert sorted(corrected) == ["alice@example.org", "carol@example.org"]
    text = body(corrected["alice@example.org"], "plain")
    assert str(corrected["alice@example.org"]["Subject"]).startswith("1 new contribution: ")
    assert "Debate on the Address (Corrected)" in text
    assert "Jeremy Corbyn (Islington North) (Ind) (corrected):" in text
    assert 'Why you got this: your alert "two-child benefit cap"' in text
    carol = body(corrected["carol@example.org"], "plain")
    assert (
        "Debate on the Address (Corrected)" in carol and "\nForeign Affairs and Defence\n" in carol
    )
    assert str(corrected["carol@example.org"]["Subject"]).startswith("3 new contributions: ")


async def test_status_metrics_and_backfill_know_the_source(
    runtime: Runtime, pipeline_api: HansardStandin
) -> None:
    engine = runtime.engine
    pipeline_api.fail_next("/search/contributions", 503, count=1)
    failed = await run_once(runtime, now=datetime(2026, 6, 30, 20, 0, tzinfo=UTC))
    assert failed.polls == {"parliament": True, "statements": True, "hansard": False}
    assert "HTTP 503" in failed.errors[0]
    report = await run_once(runtime, now=datetime(2026, 6, 30, 21, 0, tzinfo=UTC), on_demand=True)
    # The two Lords contributions, and one of Corbyn's in the Commons.
    assert report.errors == [] and report.new_items_by_source[SOURCE] == 3
    status = format_status(collect_status(engine, runtime.settings, now=ALL_DAYS_NOW))
    assert "source hansard: last poll 2026-06-30 21:00Z" in status
    exposition = runtime.metrics.exposition().decode()
    assert 'alertd_items_ingested_total{source="hansard"} 3.0' in exposition
    assert 'alertd_polls_total{outcome="error",source="hansard"} 1.0' in exposition
    assert 'alertd_polls_total{outcome="ok",source="hansard"} 1.0' in exposition

    # Backfill: the Water Bill's day, alerting nobody.
    totals = await backfill(
        engine,
        runtime.settings,
        WATER_BILL_DAY,
        WATER_BILL_DAY,
        now=ALL_DAYS_NOW,
        today=ALL_DAYS_NOW.date(),
        progress=lambda done: None,
        retry_base_s=0.01,
    )
    assert str(totals) == "0 answer versions, 0 written statements and 12 debate contributions"
    water = [i for i in _items(engine) if i.day == WATER_BILL_DAY]
    assert len(water) == 12 and all(i.never_alert for i in water)


def test_an_atom_entry_and_a_summary_name_the_debate_and_the_speaker(db_engine: Engine) -> None:
    now = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    alert_id = _subscribe(db_engine, "feed@example.org", "superintelligence", now)
    add_items(db_engine, SOURCE, [parse(r) for r in load_lords()], now=now, today=now.date())
    match_new_items(db_engine, now=now)
    [doocey, hanson] = _hits(db_engine, alert_id)
    summary = kind_of(doocey).summary(doocey)
    assert summary.title == "National Security (State Threats) Bill"
    assert (summary.where, summary.by, summary.day) == (
        "Lords Chamber",
        "Baroness Doocey",
        LORDS_DAY,
    )
    feed = ET.fromstring(render_alert_feed(db_engine, alert_id, "https://x/feed") or b"")
    atom = "{http://www.w3.org/2005/Atom}"
    entries = feed.findall(f"{atom}entry")
    assert len(entries) == 2
    titles = {e.findtext(f"{atom}title") for e in entries}
    assert titles == {"National Security (State Threats) Bill"}
    authors = {e.findtext(f"{atom}author/{atom}name") for e in entries}
    assert authors == {"Baroness Doocey", "Lord Hanson of Flint"}
    links = {e.find(f"{atom}link").get("href") for e in entries}  # type: ignore[union-attr]
    assert hanson.url in links and doocey.url in links


def test_the_kind_is_registered_as_a_polled_api_kind() -> None:
    assert isinstance(KINDS["spoken_contribution"], SpokenContribution)
    on = Settings()
    assert KIND.poll_settings(on) == (60, 3)
    off = Settings.model_validate({"parliament": {"enabled": False}})
    assert KIND.poll_settings(off) is None
    alone = Settings.model_validate(
        {"parliament": {"enabled": False}, "hansard": {"enabled": True}}
    )
    assert KIND.poll_settings(alone) == (60, 3)


def test_hansard_settings_come_from_the_environment_too() -> None:
    environ = {
        "ALERTD_HANSARD__BASE_URL": "http://127.0.0.1:9/",
        "ALERTD_HANSARD__POLL_INTERVAL_MINUTES": "15",
        "ALERTD_HANSARD__ENABLED": "false",
    }
    settings = load_settings(None, environ)
    assert settings.hansard.base_url == "http://127.0.0.1:9/"
    assert settings.hansard.poll_interval_minutes == 15
    assert KIND.poll_settings(settings) is None
    with pytest.raises(ConfigError, match="hansard.base_url .environment ALERTD_HANSARD__BASE_URL"):
        load_settings(None, {"ALERTD_HANSARD__BASE_URL": "ftp://hansard"})
