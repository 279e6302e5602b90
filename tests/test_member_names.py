"""Members given only by id: a failed lookup is asked again on a later poll, within a bound."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from alertd.kinds.kind import Role, member_in
from alertd.models import Item
from alertd.pipeline import Runtime, poll_once
from alertd.sources.member_names import MAX_LOOKUPS, RETRY_HORIZON

from standin_api import FaultRule, StandinApi, load_2021_tabled, member_search_item

STURDY, STURDY_UIN = 4079, "146871"
NO_SUCH_MEMBER = 9_999_999
MONDAY_EVENING = datetime(2021, 2, 1, 19, 0, tzinfo=UTC)


@pytest.fixture
def api() -> Iterator[StandinApi]:
    """Two tabled questions that give their asker by id only: Julian Sturdy, whom the
    Members API knows, and an id it has no Member for."""
    record = next(r for r in load_2021_tabled() if r["uin"] == STURDY_UIN)
    members = [member_search_item(record["askingMember"], record["house"])]
    sturdy = {**copy.deepcopy(record), "askingMember": None}
    nobody = {
        **copy.deepcopy(record),
        "id": record["id"] + 1,
        "uin": "999999",
        "askingMember": None,
        "askingMemberId": NO_SUCH_MEMBER,
    }
    with StandinApi(records=[sturdy, nobody], members=members) as api:
        yield api


@pytest.fixture
def runtime(standin_runtime: Callable[[StandinApi], Runtime], api: StandinApi) -> Runtime:
    return standin_runtime(api)


def _askers(runtime: Runtime) -> dict[int | None, tuple[str | None, str | None, str | None]]:
    with Session(runtime.engine) as session:
        items = session.exec(select(Item)).all()
    askers = [member_in(item, Role.ASKER) for item in items]
    return {
        asker.id if asker else None: (
            (asker.name, asker.party, asker.constituency) if asker else (None, None, None)
        )
        for asker in askers
    }


def _lookups(api: StandinApi, member_id: int) -> int:
    return sum(1 for _, path in api.requests if path == f"/api/Members/{member_id}")


async def test_a_member_not_named_at_ingest_is_named_by_a_later_poll(
    runtime: Runtime, api: StandinApi
) -> None:
    outage = api.add_fault(FaultRule(503, target="members", count=None))
    report = await poll_once(runtime, now=MONDAY_EVENING, on_demand=True)
    assert report.new_items == 2 and report.errors == []
    assert _askers(runtime)[STURDY] == (None, None, None)
    assert (outage.hits, _lookups(api, STURDY)) == (2, 1)
    # Ten minutes on, the Members API is not asked again yet...
    await poll_once(runtime, now=MONDAY_EVENING + timedelta(minutes=10), on_demand=True)
    assert _lookups(api, STURDY) == 1
    # ...an hour on, it is, and answers: the stored question gets its asker's name.
    api.clear_faults()
    await poll_once(runtime, now=MONDAY_EVENING + timedelta(hours=1), on_demand=True)
    assert _askers(runtime)[STURDY] == ("Julian Sturdy", "Conservative", "York Outer")
    assert _lookups(api, STURDY) == 2
    await poll_once(runtime, now=MONDAY_EVENING + timedelta(hours=5), on_demand=True)
    assert _lookups(api, STURDY) == 2  # named: never asked again


async def test_a_member_id_with_no_member_is_asked_a_bounded_number_of_times(
    runtime: Runtime, api: StandinApi
) -> None:
    # A poll every 30 minutes for two days, then twice a day for three weeks: the id is asked
    # for less and less often, then not at all.
    times = [MONDAY_EVENING + timedelta(minutes=30 * poll) for poll in range(2 * 48)]
    times += [times[-1] + timedelta(hours=12 * poll) for poll in range(1, 3 * 7 * 2)]
    for index, now in enumerate(times):
        report = await poll_once(runtime, now=now, on_demand=True)
        assert report.errors == []
        if index == 2 * 48 - 1:
            assert 2 < _lookups(api, NO_SUCH_MEMBER) < MAX_LOOKUPS
    assert _lookups(api, NO_SUCH_MEMBER) == MAX_LOOKUPS
    assert _askers(runtime)[NO_SUCH_MEMBER] == (None, None, None)
    assert _askers(runtime)[STURDY][0] == "Julian Sturdy"


async def test_items_older_than_the_horizon_are_not_scanned_again(
    runtime: Runtime, api: StandinApi
) -> None:
    # The daemon was stopped for longer than the horizon after an outage of the Members API:
    # the scan for unnamed Members covers recent items only (its cost must not grow with the
    # history), so these are left as they are.
    api.add_fault(FaultRule(503, target="members", count=None))
    await poll_once(runtime, now=MONDAY_EVENING, on_demand=True)
    api.clear_faults()
    later = MONDAY_EVENING + RETRY_HORIZON + timedelta(days=1)
    await poll_once(runtime, now=later, on_demand=True)
    assert _lookups(api, STURDY) == 1
    assert _askers(runtime)[STURDY] == (None, None, None)
