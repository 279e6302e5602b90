"""Following a Member: one run after a sitting day mails everything they did, each once.

Jeremy Corbyn (185) on Monday 8 June 2026, through the whole pipeline against the stand-ins:
what he said in the Commons (two recorded contributions), an oral question he tabled, a
motion he signed (the recorded prayer 65938: his name was added that day) and one he tabled.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from alertd.config import Settings
from alertd.db import open_database
from alertd.digests.render import build_environment
from alertd.mail.transports import mailer_factory
from alertd.pipeline import Runtime, run_once
from alertd.status import collect_status, format_status
from alertd.subscriptions import lifecycle

from maildir_reading import body, take_mail
from standin_api import member_search_item
from standin_hansard import HansardStandin, load_member185
from standin_oral import OralStandin, load_motion_details, load_oral_questions

CORBYN = 185
DAY = "2026-06-08"
BEFORE = datetime(2026, 6, 7, 19, 0, tzinfo=UTC)
EVENING = datetime(2026, 6, 8, 20, 0, tzinfo=UTC)
PRAYER, VAT, QUESTION = 65938, 56795, 411372


def _motion_as_of(motion_id: int, day: str) -> dict[str, Any]:
    motion = next(r for r in load_motion_details() if r["Id"] == motion_id)
    sponsors = [s for s in motion["Sponsors"] if s["CreatedWhen"][:10] <= day]
    return {**motion, "Sponsors": sponsors}


def _corbyns_motion() -> dict[str, Any]:
    """ "VAT on energy bills" (recorded 2020) as if he had tabled it that day: its sponsor and
    first name his (his Member object as the prayer's names give it)."""
    prayer = next(r for r in load_motion_details() if r["Id"] == PRAYER)
    corbyn = next(s["Member"] for s in prayer["Sponsors"] if s["MemberId"] == CORBYN)
    motion = copy.deepcopy(next(r for r in load_motion_details() if r["Id"] == VAT))
    first = {**motion["Sponsors"][0], "MemberId": CORBYN, "Member": corbyn}
    first["CreatedWhen"] = f"{DAY}T11:00:00"
    return {
        **motion,
        "MemberId": CORBYN,
        "PrimarySponsor": corbyn,
        "DateTabled": f"{DAY}T00:00:00",
        "Sponsors": [first],
    }


def _corbyns_question() -> dict[str, Any]:
    """His recorded question of 25 Feb 2026, as if tabled that day for 16 June."""
    question = next(r for r in load_oral_questions() if r["Id"] == QUESTION)
    return {
        **question,
        "TabledWhen": f"{DAY}T00:00:00",
        "AnsweringWhen": "2026-06-16T00:00:00",
        "Status": 5,
        "RemovedFromToBeAskedWhen": None,
    }


@pytest.fixture
def hansard_api() -> Iterator[HansardStandin]:
    corbyn = {
        "id": CORBYN,
        "name": "Jeremy Corbyn",
        "listAs": "Corbyn, Jeremy",
        "party": "Independent",
        "memberFrom": "Islington North",
    }
    members = [member_search_item(corbyn, "Commons")]
    with HansardStandin(load_member185(), members=members, hang_seconds=5.0) as api:
        yield api


@pytest.fixture
def oral_api() -> Iterator[OralStandin]:
    with OralStandin(motions=[_motion_as_of(PRAYER, "2026-06-07")], hang_seconds=5.0) as api:
        yield api


@pytest.fixture
async def runtime(
    make_settings: Callable[..., Settings],
    database_url: str,
    hansard_api: HansardStandin,
    oral_api: OralStandin,
) -> AsyncIterator[Runtime]:
    settings = make_settings(
        database={"url": database_url},
        parliament={"base_url": hansard_api.base_url, "lookback_days": 0},
        members={"base_url": hansard_api.base_url},
        hansard={"enabled": True, "base_url": hansard_api.base_url},
        oral_questions={"enabled": True, "base_url": oral_api.base_url, "signatures_days": 14},
    )
    engine = open_database(settings.database)
    mailer = mailer_factory("maildir", settings.mail.maildir, settings.smtp)
    yield Runtime(settings, engine, mailer, build_environment())
    engine.dispose()


def _mail(runtime: Runtime) -> list[EmailMessage]:
    return take_mail(runtime.settings.mail.maildir)


async def test_one_run_mails_all_a_member_did_that_day_each_once(
    runtime: Runtime, oral_api: OralStandin
) -> None:
    lifecycle.subscribe(
        runtime.engine,
        "constituent@example.org",
        f"member:{CORBYN}",
        confirmed=True,
        now=BEFORE - timedelta(days=1),
        frequency="immediate",
    )
    # The day before: the prayer as it stood, without his name. Nothing for him.
    before = await run_once(runtime, now=BEFORE)
    assert before.errors == []
    assert before.new_items_by_source.get("early_day_motions") == 1
    assert _mail(runtime) == []

    oral_api.put_question(_corbyns_question())
    oral_api.put_motion(_motion_as_of(PRAYER, DAY))
    oral_api.put_motion(_corbyns_motion())
    report = await run_once(runtime, now=EVENING)
    assert report.errors == []
    assert report.polls == {
        "parliament": True,
        "statements": True,
        "hansard": True,
        "oral_questions": True,
        "early_day_motions": True,
    }
    assert report.new_items_by_source["hansard"] == 2
    assert report.new_items_by_source["oral_questions"] == 1
    assert report.new_items_by_source["early_day_motions"] == 2
    [message] = _mail(runtime)
    text = body(message, "plain")
    # Each kind in its own group, each with its official link.
    for group in ("Debates", "Oral questions", "Early Day Motions"):
        assert f"\n\n{group}\n\n" in text
    assert re.search(r"https://hansard\.parliament\.uk/Commons/2026-06-08/debates/\S+", text)
    assert "Oral question to Foreign, Commonwealth and Development Office" in text
    assert "To be asked by Jeremy Corbyn" in text
    assert "https://hansard.parliament.uk/Commons/2026-06-16" in text
    assert "https://edm.parliament.uk/early-day-motion/65938" in text
    assert "https://edm.parliament.uk/early-day-motion/56795" in text
    assert "Signed by Jeremy Corbyn" in text and "Tabled by Jeremy Corbyn" in text
    html = body(message, "html")
    assert 'href="https://edm.parliament.uk/early-day-motion/65938"' in html
    assert ">Early Day Motions</h3>" in html and ">Oral questions</h3>" in html

    # Run again: nothing is mailed twice.
    again = await run_once(runtime, now=EVENING + timedelta(hours=1), on_demand=True)
    assert again.errors == [] and sum(again.new_items_by_source.values()) == 0
    assert _mail(runtime) == []
    status = format_status(collect_status(runtime.engine, runtime.settings, now=EVENING))
    assert "source oral_questions: last poll" in status
    assert "source early_day_motions: last poll" in status
