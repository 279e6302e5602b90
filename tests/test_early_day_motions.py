"""Early Day Motions (Oral Questions and Motions API): parsing, polling, signatures, who hears."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import Settings, load_settings
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import build_environment
from alertd.errors import ConfigError, SourceInvalid
from alertd.items import add_items
from alertd.kinds.early_day_motion import (
    SOURCE,
    EarlyDayMotion,
    MotionStage,
    parse,
    shown_signatures,
    version_key,
)
from alertd.matching.hits import match_new_items
from alertd.models import Hit, Item
from alertd.queries import matching_lines
from alertd.sources.source import PollResult
from alertd.subscriptions import lifecycle
from alertd.web.atom import render_alert_feed

from standin_api import FaultRule
from standin_oral import OralStandin, list_view, load_motion_details, load_motion_list
from window_poll import poll_kind

KIND = EarlyDayMotion()
CORBYN = 185
# "VAT on energy bills", tabled 25 Mar 2020 by Jamie Stone (4612): 17 names, the last two
# added on 5 and 13 May 2020.
VAT = 56795
STONE, DAVEY = 4612, 188
# A prayer against a draft code of practice, tabled 1 Jun 2026 by Nadia Whittome (4869):
# 169 names, Jeremy Corbyn's added on 8 Jun 2026; Andrew George's and Tim Farron's added and
# taken off on 2 Jun 2026.
PRAYER = 65938
WHITTOME, GEORGE, FARRON = 4869, 227, 1591
# "BBC as an institution of national importance", tabled 5 Mar 2020 (listed, 21 names).
BBC = 56720


def _detail(motion_id: int) -> dict[str, Any]:
    return copy.deepcopy(next(r for r in load_motion_details() if r["Id"] == motion_id))


def _as_of(motion: dict[str, Any], day: str) -> dict[str, Any]:
    """The motion as it stood at the end of a day: the names added by then, none taken off."""
    sponsors = [
        {**s, "IsWithdrawn": False, "WithdrawnDate": None}
        for s in motion["Sponsors"]
        if s["CreatedWhen"][:10] <= day
    ]
    return {**motion, "Sponsors": sponsors}


def _listed(motion: dict[str, Any]) -> dict[str, Any]:
    return list_view(motion)


# -- parsing -----------------------------------------------------------------------------------


def test_every_listed_motion_parses_with_its_sponsor_and_page() -> None:
    parsed = [parse(r) for r in load_motion_list()]
    assert len(parsed) == 32
    assert {new.stage for new in parsed} == {MotionStage.PUBLISHED}
    bbc = next(new for new in parsed if new.source_id == str(BBC))
    assert bbc.title == "BBC as an institution of national importance"
    assert bbc.url == "https://edm.parliament.uk/early-day-motion/56720"
    assert bbc.day == date(2020, 3, 5) and bbc.house == "Commons"
    assert bbc.body_text.startswith("That this House recognises that the BBC")
    assert [(m.role, m.id, m.name) for m in bbc.members] == [("sponsor", 4500, "Clive Lewis")]
    assert bbc.details["listed_count"] == 21 and bbc.details["uin"] == "262"
    amendment = next(new for new in parsed if new.source_id == "56700")
    assert amendment.details["amends"] == 55700 and amendment.details["uin"] == "235A1"


def test_a_detail_names_everyone_on_it_and_not_those_who_took_their_names_off() -> None:
    new = parse(_detail(PRAYER), _listed(_detail(PRAYER)))
    ids = [m.id for m in new.members]
    assert ids[0] == WHITTOME and len(ids) == 167 and CORBYN in ids
    assert GEORGE not in ids and FARRON not in ids
    assert sorted(new.details["withdrawn_ids"]) == [GEORGE, FARRON]
    corbyn = next(s for s in new.details["signatures"] if s["id"] == CORBYN)
    assert corbyn == {"id": CORBYN, "order": 90, "signed_on": "2026-06-08"}
    # The listing's count names the version: the detail's own count says 0.
    assert new.details["listed_count"] == 167
    assert new.version_key == parse(_listed(_detail(PRAYER))).version_key


def test_names_parse_as_the_numbers_do() -> None:
    record = _detail(VAT)
    assert parse({**record, "Status": "Published"}) == parse(record)
    assert parse({**record, "Status": 1}).stage == MotionStage.WITHDRAWN


@pytest.mark.parametrize(
    ("field", "value"),
    [("Title", ""), ("Title", None), ("Status", 7), ("DateTabled", None), ("DateTabled", "x")],
)
def test_a_bad_field_is_source_invalid(field: str, value: Any) -> None:
    with pytest.raises(SourceInvalid, match="56795"):
        parse({**_detail(VAT), field: value})


def test_an_unknown_field_is_ignored() -> None:
    assert parse({**_detail(VAT), "Novel": {"a": 1}}) == parse(_detail(VAT))


def test_the_version_key_changes_with_the_count_or_the_status() -> None:
    keys = {
        version_key("Published", "T", "x", 3),
        version_key("Published", "T", "x", 4),
        version_key("Withdrawn", "T", "x", 4),
        version_key("Published", "T", "y", 4),
    }
    assert len(keys) == 4


# -- polling -----------------------------------------------------------------------------------


@pytest.fixture
def motions_api() -> Iterator[OralStandin]:
    """Both recorded motions in full, as they stood on 7 Jun 2026 for the prayer (before
    Jeremy Corbyn signed) and in May 2020 for "VAT on energy bills"."""
    motions = [_as_of(_detail(PRAYER), "2026-06-07"), _detail(VAT), *load_motion_list()]
    with OralStandin(motions=motions, hang_seconds=5.0) as api:
        yield api


def _settings(api: OralStandin, **parliament: Any) -> Settings:
    return Settings.model_validate(
        {
            "parliament": {"timeout_s": 2.0, **parliament},
            "oral_questions": {"base_url": api.base_url, "signatures_days": 14},
        }
    )


async def _poll(
    engine: Engine, api: OralStandin, now: datetime, *, lookback_days: int = 0, **parliament: Any
) -> PollResult:
    settings = _settings(api, **parliament)
    return await poll_kind(engine, KIND, settings, now, lookback_days=lookback_days)


def _requests(api: OralStandin) -> list[tuple[str, dict[str, str]]]:
    found = []
    for _, path in api.requests:
        parts = urlsplit(path)
        found.append((parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}))
    api.clear_requests()
    return found


def _versions(engine: Engine, motion_id: int) -> list[Item]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(Item).where(Item.source_id == str(motion_id)).order_by(col(Item.version))
            ).all()
        )


def _evening(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=19, tzinfo=UTC)


async def test_a_poll_lists_recent_motions_and_fetches_only_new_or_changed_ones(
    db_engine: Engine, motions_api: OralStandin
) -> None:
    result = await _poll(db_engine, motions_api, _evening("2026-06-07"))
    assert (result.fetched, result.new_items) == (1, 1)
    asked = _requests(motions_api)
    assert asked[0] == (
        "/EarlyDayMotions/list",
        {
            "parameters.tabledStartDate": "2026-05-24",  # signatures_days back
            "parameters.tabledEndDate": "2026-06-07",
            "parameters.orderBy": "DateTabledAsc",
            "parameters.skip": "0",
            "parameters.take": "100",
        },
    )
    assert [path for path, _ in asked[1:]] == [f"/EarlyDayMotion/{PRAYER}"]
    [first] = _versions(db_engine, PRAYER)
    assert first.details["listed_count"] == 94 and len(first.members or []) == 94

    # Nothing changed: the listing alone is asked for.
    again = await _poll(db_engine, motions_api, _evening("2026-06-07") + timedelta(hours=1))
    assert again.new_items == 0
    assert [path for path, _ in _requests(motions_api)] == ["/EarlyDayMotions/list"]

    # Ten more names on 8 Jun, Jeremy Corbyn's among them: fetched again, a new version.
    motions_api.put_motion(_as_of(_detail(PRAYER), "2026-06-08"))
    later = await _poll(db_engine, motions_api, _evening("2026-06-08"))
    assert later.new_items == 1
    assert [path for path, _ in _requests(motions_api)][1:] == [f"/EarlyDayMotion/{PRAYER}"]
    assert [len(v.members or []) for v in _versions(db_engine, PRAYER)] == [94, 104]


async def test_a_failed_detail_stores_nothing_and_the_next_poll_catches_up(
    db_engine: Engine, motions_api: OralStandin
) -> None:
    motions_api.add_fault(FaultRule(500, target="/EarlyDayMotion/", count=None))
    with pytest.raises(Exception, match="500"):
        await _poll(db_engine, motions_api, _evening("2026-06-07"))
    assert _versions(db_engine, PRAYER) == []
    motions_api.clear_faults()
    assert (await _poll(db_engine, motions_api, _evening("2026-06-07"))).new_items == 1


async def test_a_motion_whose_detail_is_gone_is_stored_as_listed(
    db_engine: Engine, motions_api: OralStandin
) -> None:
    # Listed but its detail answers 404 (the API's own envelope): the listing's record.
    motions_api.add_fault(FaultRule(404, target=f"/EarlyDayMotion/{PRAYER}", count=None))
    assert (await _poll(db_engine, motions_api, _evening("2026-06-07"))).new_items == 1
    [stored] = _versions(db_engine, PRAYER)
    assert [m.get("id") for m in stored.members or []] == [WHITTOME]
    assert stored.details["listed_count"] == 94


async def test_paging_over_many_motions(db_engine: Engine, motions_api: OralStandin) -> None:
    # The 32 motions of March 2020, with their signatures window, five to a page.
    now = _evening("2020-03-08")
    result = await _poll(db_engine, motions_api, now, lookback_days=7, page_size=5)
    assert (result.fetched, result.new_items) == (32, 32)
    skips = [int(q["parameters.skip"]) for p, q in _requests(motions_api) if p.endswith("list")]
    assert skips == [0, 5, 10, 15, 20, 25, 30]


async def test_a_motion_withdrawn_before_it_was_seen_is_not_stored(
    db_engine: Engine, motions_api: OralStandin
) -> None:
    motions_api.update_motion(PRAYER, Status=1)
    assert (await _poll(db_engine, motions_api, _evening("2026-06-07"))).new_items == 0


# -- who hears ---------------------------------------------------------------------------------


def _subscribe(engine: Engine, query: str, now: datetime) -> int:
    alert = lifecycle.subscribe(
        engine, "r@example.org", query, confirmed=True, now=now, frequency="immediate"
    )
    assert alert.id is not None
    return alert.id


def _heard(engine: Engine, alert_id: int) -> list[tuple[str, int]]:
    with Session(engine) as session:
        rows = session.exec(
            select(Item.source_id, Item.version)
            .join(Hit, col(Hit.item_id) == col(Item.id))
            .where(Hit.alert_id == alert_id)
            .order_by(col(Item.id))
        ).all()
        return [(source_id, version) for source_id, version in rows]


def _store(engine: Engine, motion: dict[str, Any], now: datetime) -> int:
    new = parse(motion, _listed(motion))
    return add_items(engine, SOURCE, [new], now=now, today=now.date())


def test_each_new_name_is_heard_once_by_those_following_that_member(db_engine: Engine) -> None:
    start = _evening("2026-05-31")
    queries = [
        f"member:{CORBYN}",
        f"sponsor:{CORBYN}",
        f"member:{WHITTOME}",
        f"member:{GEORGE}",
        "disapproved",
        "type:edm code practice",
        "type:question code practice",
        f"asker:{CORBYN}",
    ]
    ids = {q: _subscribe(db_engine, q, start) for q in queries}
    day = {d: _evening(d) for d in ("2026-06-01", "2026-06-02", "2026-06-08", "2026-06-09")}

    # Tabled on 1 Jun with 27 names.
    _store(db_engine, _as_of(_detail(PRAYER), "2026-06-01"), day["2026-06-01"])
    match_new_items(db_engine, now=day["2026-06-01"])
    # 2 Jun: 25 more, Andrew George's among them (version 2)…
    noon = day["2026-06-02"] - timedelta(hours=6)
    assert _store(db_engine, _as_of(_detail(PRAYER), "2026-06-02"), noon) == 1
    match_new_items(db_engine, now=noon)
    # … then he and Tim Farron take their names off (version 3: nobody is told).
    assert _store(db_engine, _detail_on(PRAYER, "2026-06-02"), day["2026-06-02"]) == 1
    match_new_items(db_engine, now=day["2026-06-02"])
    # 8 Jun: Jeremy Corbyn signs (version 4).
    assert _store(db_engine, _detail_on(PRAYER, "2026-06-08"), day["2026-06-08"]) == 1
    match_new_items(db_engine, now=day["2026-06-08"])
    # 9 Jun: more names, and Andrew George's back (version 5): not news to his follower.
    again = _detail_on(PRAYER, "2026-06-09")
    for sponsor in again["Sponsors"]:
        if sponsor["MemberId"] == GEORGE:
            sponsor.update(IsWithdrawn=False, WithdrawnDate=None)
    assert _store(db_engine, again, day["2026-06-09"]) == 1
    match_new_items(db_engine, now=day["2026-06-09"])

    heard = {q: _heard(db_engine, alert_id) for q, alert_id in ids.items()}
    motion = str(PRAYER)
    assert heard == {
        # Told once, when he signed.
        f"member:{CORBYN}": [(motion, 4)],
        f"sponsor:{CORBYN}": [(motion, 4)],
        # Told once, when she tabled it.
        f"member:{WHITTOME}": [(motion, 1)],
        # Told when he signed; not again when he signed again.
        f"member:{GEORGE}": [(motion, 2)],
        # Its words: told once, when it was tabled.
        "disapproved": [(motion, 1)],
        "type:edm code practice": [(motion, 1)],
        "type:question code practice": [],
        f"asker:{CORBYN}": [],
    }


def _detail_on(motion_id: int, day: str) -> dict[str, Any]:
    """The recorded motion as it stood at the end of a day, names taken off by then shown
    withdrawn."""
    motion = _detail(motion_id)
    sponsors = []
    for sponsor in motion["Sponsors"]:
        if sponsor["CreatedWhen"][:10] > day:
            continue
        withdrawn = sponsor["WithdrawnDate"]
        if withdrawn is not None and withdrawn[:10] > day:
            sponsor = {**sponsor, "IsWithdrawn": False, "WithdrawnDate": None}
        sponsors.append(sponsor)
    return {**motion, "Sponsors": sponsors}


def _corbyn() -> dict[str, Any]:
    """Jeremy Corbyn as the prayer's names give him (a Member object of the API)."""
    prayer = _detail(PRAYER)
    member: dict[str, Any] = next(
        s["Member"] for s in prayer["Sponsors"] if s["MemberId"] == CORBYN
    )
    return member


def test_a_withdrawn_motion_goes_only_to_those_mailed_it(
    db_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    start = _evening("2026-06-06")
    mailed = _subscribe(db_engine, f"member:{STONE}", start)
    _store(db_engine, _detail(VAT), start)
    match_new_items(db_engine, now=start)
    settings = make_settings()
    assert compose_due_digests(db_engine, settings, build_environment(settings), now=start) == 1
    newcomer = _subscribe(db_engine, f"member:{CORBYN}", start + timedelta(minutes=1))
    topic = _subscribe(db_engine, "energy bills", start + timedelta(minutes=1))
    # His name is added (version 2): news to his follower, not to a topic it matched before.
    signed = start + timedelta(minutes=2)
    motion = _detail(VAT)
    motion["Sponsors"].append(
        {
            **motion["Sponsors"][-1],
            "Id": 1,
            "MemberId": CORBYN,
            "Member": _corbyn(),
            "SponsoringOrder": 18,
        }
    )
    assert _store(db_engine, motion, signed) == 1
    match_new_items(db_engine, now=signed)
    assert _heard(db_engine, newcomer) == [(str(VAT), 2)]
    assert _heard(db_engine, topic) == []

    later = start + timedelta(days=1)
    assert _store(db_engine, {**motion, "Status": 1}, later) == 1
    match_new_items(db_engine, now=later)
    # Those mailed it hear of its withdrawal; one still waiting for it hears nothing.
    assert _heard(db_engine, mailed) == [(str(VAT), 1), (str(VAT), 3)]
    assert _heard(db_engine, newcomer) == []
    assert _versions(db_engine, VAT)[-1].stage == MotionStage.WITHDRAWN


async def test_a_first_poll_keeps_older_motions_as_history_and_hears_their_new_names(
    db_engine: Engine, motions_api: OralStandin
) -> None:
    before = _evening("2026-06-06")
    follower = _subscribe(db_engine, f"member:{CORBYN}", before)
    topic = _subscribe(db_engine, "disapproved", before)
    # The first poll lists motions tabled up to signatures_days back: the prayer, tabled
    # before the look-back window, is history, mailed to nobody.
    assert (await _poll(db_engine, motions_api, _evening("2026-06-07"))).new_items == 1
    assert [v.never_alert for v in _versions(db_engine, PRAYER)] == [True]
    match_new_items(db_engine, now=_evening("2026-06-07"))
    assert _heard(db_engine, topic) == []
    # His name added on 8 Jun: news to his follower only.
    motions_api.put_motion(_as_of(_detail(PRAYER), "2026-06-08"))
    assert (await _poll(db_engine, motions_api, _evening("2026-06-08"))).new_items == 1
    match_new_items(db_engine, now=_evening("2026-06-08"))
    assert _heard(db_engine, follower) == [(str(PRAYER), 2)]
    assert _heard(db_engine, topic) == []


def test_a_card_names_the_followed_members_signature_first() -> None:
    new = parse(_detail(PRAYER), _listed(_detail(PRAYER)))
    item = new.row(source=SOURCE, source_id=str(PRAYER), version=1, corrected_on=None, now=_now())
    newest = shown_signatures(item, frozenset())
    assert CORBYN not in [s["id"] for s in newest]
    assert newest[0]["signed_on"] == "2026-07-16"  # the last name added
    followed = shown_signatures(item, frozenset({CORBYN}))
    assert followed[0]["id"] == CORBYN and len(followed) == 8


def _now() -> datetime:
    return datetime(2026, 6, 16, tzinfo=UTC)


def test_an_atom_entry_and_a_preview_name_the_motion_and_its_sponsor(db_engine: Engine) -> None:
    now = _evening("2026-06-06")
    alert_id = _subscribe(db_engine, "type:edm energy", now - timedelta(hours=1))
    _store(db_engine, _detail(VAT), now)
    match_new_items(db_engine, now=now)
    feed = ET.fromstring(render_alert_feed(db_engine, alert_id, "https://x/feed") or b"")
    atom = "{http://www.w3.org/2005/Atom}"
    [entry] = feed.findall(f"{atom}entry")
    assert entry.findtext(f"{atom}title") == "VAT on energy bills"
    assert entry.findtext(f"{atom}author/{atom}name") == "Jamie Stone"
    assert entry.find(f"{atom}link").get("href") == (  # type: ignore[union-attr]
        "https://edm.parliament.uk/early-day-motion/56795"
    )
    assert entry.findtext(f"{atom}id") == "urn:alertd:edm:56795:1"
    # `alertd preview`: the motion's line, by its sponsor, with its page.
    [line] = matching_lines(db_engine, "type:edm energy", date(2020, 3, 1))
    assert (line.title, line.day, line.url) == (
        "VAT on energy bills",
        date(2020, 3, 25),
        "https://edm.parliament.uk/early-day-motion/56795",
    )


def test_settings_come_from_the_environment_too() -> None:
    environ = {
        "ALERTD_ORAL_QUESTIONS__BASE_URL": "http://127.0.0.1:9/",
        "ALERTD_ORAL_QUESTIONS__SIGNATURES_DAYS": "30",
        "ALERTD_ORAL_QUESTIONS__ENABLED": "false",
    }
    settings = load_settings(None, environ)
    assert settings.oral_questions.base_url == "http://127.0.0.1:9/"
    assert settings.oral_questions.signatures_days == 30
    assert KIND.poll_settings(settings) is None
    assert load_settings(None, {}).oral_questions.enabled is None  # as parliament.enabled
    with pytest.raises(ConfigError, match="oral_questions.base_url"):
        load_settings(None, {"ALERTD_ORAL_QUESTIONS__BASE_URL": "ftp://oral"})
