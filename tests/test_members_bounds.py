"""The Members lookup against a hostile stand-in: slow, huge and gzip-bomb answers end quickly
in bounded memory (the Members already known are still found), and its cache is bounded."""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import Settings
from alertd.db import open_database
from alertd.models import MemberSearch
from alertd.sources.members import search_members

from feed_server import gzip_bomb
from standin_api import StandinApi

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(make_settings: Any, standin_api: StandinApi) -> Settings:
    made: Settings = make_settings(
        members={
            "base_url": standin_api.base_url,
            "timeout_s": 5.0,
            # Room for a loaded test machine; a drip would take an hour.
            "fetch_deadline_s": 3.0,
            "cache_max_rows": 3,
        }
    )
    return made


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = open_database(settings.database)
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "drip", "seconds": 1.0}, "gave no complete answer within 3s"),
        ({"kind": "huge"}, "answered more than 1,000,000 bytes: refused"),
        pytest.param(
            {"kind": "gzip_bomb"},
            "answered more than 1,000,000 bytes: refused",
            marks=pytest.mark.slow,  # building the bomb takes seconds
        ),
    ],
    ids=["drip", "huge", "gzip_bomb"],
)
async def test_a_hostile_members_api_fails_fast_in_bounded_memory(
    engine: Engine,
    settings: Settings,
    standin_api: StandinApi,
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any],
    message: str,
) -> None:
    known = await search_members(engine, settings, "Keir Starmer", NOW)
    assert [hit.name for hit in known] == ["Sir Keir Starmer"]
    standin_api.fail_next("members", **fault)
    if fault["kind"] == "gzip_bomb":
        gzip_bomb()  # built (once) before the clock starts: the stand-in serves it
    tracemalloc.start()
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="alertd.sources.members"):
            # Not cached under this spelling: the API is asked, and misbehaves.
            found = await search_members(engine, settings, "Starmer", NOW)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == known  # the Member already known is still found
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "Members API search for 'starmer' failed" in warning and message in warning
    assert elapsed < 6 and peak < 20_000_000


async def test_the_search_cache_expires_and_keeps_at_most_its_cap(
    engine: Engine, settings: Settings, standin_api: StandinApi
) -> None:
    names = ["keir", "starmer", "aberconway", "mone", "baroness"]
    for n, name in enumerate(names):
        await search_members(engine, settings, name, NOW + timedelta(minutes=n))
    with Session(engine) as session:
        kept = session.exec(select(MemberSearch.name).order_by(col(MemberSearch.name))).all()
    assert kept == sorted(names[-3:])  # cache_max_rows = 3: the oldest went first
    # Within cache_hours a cached name is not asked again; past it, it is.
    asked = len(standin_api.requests)
    await search_members(engine, settings, "mone", NOW + timedelta(hours=1))
    assert len(standin_api.requests) == asked
    later = NOW + timedelta(hours=settings.members.cache_hours, minutes=10)
    await search_members(engine, settings, "lord", later)
    with Session(engine) as session:
        assert session.exec(select(MemberSearch.name)).all() == ["lord"]
