"""A local stand-in for the Hansard API's spoken-contribution search, from recorded responses,
beside the Parliament and Members stand-in it extends (standin_api)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from standin_api import (
    FIXTURES_DIR,
    Params,
    Predicate,
    Record,
    Route,
    StandinApi,
    _date_param,
    _date_predicate,
    _encode,
    _int_param,
    _param,
    _Response,
)

HANSARD_DIR = FIXTURES_DIR / "hansard"
# Jeremy Corbyn (Members API id 185) in the Commons, 4 Jul 2024 to 21 Jul 2026: 306
# contributions in four pages of the real search, asked for oldest first.
MEMBER185_PAGES = tuple(
    HANSARD_DIR / "search_contributions_Spoken_member185_Commons_2024-07-04_2026-07-21_"
    f"SittingDateAsc_skip-{skip}_take-100.json"
    for skip in (0, 100, 200, 300)
)
# Two Lords contributions to one debate (30 Jun 2026), found by a search for words.
LORDS_SEARCH = HANSARD_DIR / "search_contributions_Spoken_artificial-superintelligence.json"
REDIRECTS_DIR = HANSARD_DIR / "parlisearchredirect"
SPOKEN_PATH = "/search/contributions/spoken.json"
# How the Hansard API answers a route it does not know: a web page, with status 200.
NOT_A_ROUTE_PAGE = (
    b"<!DOCTYPE html>\r\n<html><head><title>Hansard API</title></head>"
    b"<body><h1>Hansard API</h1><p>Help pages for the API are at /swagger.</p></body></html>"
)


def load_member185() -> list[Record]:
    """The 306 recorded contributions of Jeremy Corbyn, oldest first, as the pages held them."""
    records: list[Record] = []
    for page in MEMBER185_PAGES:
        records.extend(json.loads(page.read_bytes())["Results"])
    return records


def load_lords() -> list[Record]:
    """Baroness Doocey and Lord Hanson of Flint in one Lords debate (with full texts)."""
    results: list[Record] = json.loads(LORDS_SEARCH.read_bytes())["Results"]
    return results


def official_path(ext_id: str) -> str:
    """The page Hansard's redirect (parlisearchredirect) gave for a recorded contribution."""
    name = f"parlisearchredirect_externalId-{ext_id}.json"
    path: str = json.loads((REDIRECTS_DIR / name).read_bytes())
    return path


def _filters(params: Params) -> list[Predicate]:
    """The search's filters this stand-in knows: sitting dates, House, Member."""
    prefix = "queryparameters."
    predicates: list[Predicate] = []
    first, last = _date_param(params, prefix + "startdate"), _date_param(params, prefix + "enddate")
    if first or last:
        predicates.append(_date_predicate("SittingDate", first, last))
    house = (_param(params, prefix + "house") or "").lower()
    if house:
        predicates.append(lambda record: str(record.get("House") or "").lower() == house)
    member = _param(params, prefix + "memberid")
    if member:
        predicates.append(lambda record: str(record.get("MemberId")) == member)
    return predicates


def _sitting_order(record: Mapping[str, Any]) -> tuple[str, int, int]:
    return (
        str(record.get("SittingDate") or ""),
        int(record.get("DebateSectionOrder") or 0),
        int(record.get("OrderInDebateSection") or 0),
    )


class HansardStandin(StandinApi):
    """The Parliament stand-in, also serving ``GET /search/contributions/Spoken.json``
    (``queryParameters.`` startDate, endDate, house, memberId, orderBy, skip, take) from
    recorded contributions; any route it does not know is answered, as the real Hansard API
    answers one, with an HTML page and status 200. Faults: target ``/search/contributions``
    (by ``skip`` too). The per-type counts beside TotalResultCount are 0, as in a recorded
    search: only TotalResultCount can be paged by.
    """

    def __init__(self, contributions: Iterable[Mapping[str, Any]] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._contributions: dict[str, Record] = {}
        for record in contributions:
            self.put_contribution(record)

    def put_contribution(self, record: Mapping[str, Any]) -> None:
        """Insert or replace a contribution (by ContributionExtId; a deep copy)."""
        stored = copy.deepcopy(dict(record))
        with self._lock:
            self._contributions[str(stored["ContributionExtId"])] = stored

    def update_contribution(self, ext_id: str, **changes: Any) -> Record:
        """Change some fields of a contribution (a revised text); returns a copy."""
        with self._lock:
            record = {**self._contributions[ext_id], **copy.deepcopy(changes)}
            self._contributions[ext_id] = record
            return copy.deepcopy(record)

    def contributions(self) -> list[Record]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._contributions.values()]

    def _listing_skip(self, route: Route, path: str, params: Params) -> int | None:
        if path.rstrip("/").lower() == SPOKEN_PATH:
            with contextlib.suppress(ValueError):
                return _int_param(params, "queryparameters.skip", 0)
            return None
        return super()._listing_skip(route, path, params)

    def _respond(self, route: Route, path: str, params: Params) -> _Response:
        if path.rstrip("/").lower() == SPOKEN_PATH:
            return self._spoken(params)
        if route == "other":
            return _Response(200, NOT_A_ROUTE_PAGE, "text/html; charset=utf-8")
        return super()._respond(route, path, params)

    def _spoken(self, params: Params) -> _Response:
        predicates = _filters(params)
        with self._lock:
            records = list(self._contributions.values())
        matched = sorted((r for r in records if all(p(r) for p in predicates)), key=_sitting_order)
        if (_param(params, "queryparameters.orderby") or "").lower() == "sittingdatedesc":
            matched.reverse()
        skip = _int_param(params, "queryparameters.skip", 0)
        # Without a take, the real search returns every result.
        take = _int_param(params, "queryparameters.take", len(matched))
        body = {
            "SearchTerms": None,
            "SpokenResultCount": 0,
            "WrittenResultCount": 0,
            "CorrectionsResultCount": 0,
            "DivisionsResultCount": 0,
            "Results": copy.deepcopy(matched[skip : skip + take]),
            "TotalResultCount": len(matched),
        }
        return _Response(200, _encode(body))
