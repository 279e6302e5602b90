"""A local stand-in for the Oral Questions and Motions API (oral questions, Early Day Motions),
from recorded responses, beside the Parliament and Members stand-in it extends (standin_api)."""

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

ORAL_DIR = FIXTURES_DIR / "oralquestions"
ORAL_LIST = ORAL_DIR / "oralquestions_list_askingMemberIds-185_take-100.json"
MOTIONS_LIST = (
    ORAL_DIR / "EarlyDayMotions_list_tabled-2020-03-01_2020-03-08_Published_take-100.json"
)
MOTION_DETAILS = (ORAL_DIR / "EarlyDayMotion_56795.json", ORAL_DIR / "EarlyDayMotion_65938.json")
SWAGGER = ORAL_DIR / "oralquestionsandmotions-api_swagger_docs_v1.json"
ORAL_PATH = "/oralquestions/list"
MOTIONS_PATH = "/earlydaymotions/list"
MOTION_PATH = "/earlydaymotion/"
# The API's page size when none is asked for, and the most it gives.
DEFAULT_TAKE, MAX_TAKE = 25, 100
MOTION_STATUSES = ("Published", "Withdrawn")


def load_oral_questions() -> list[Record]:
    """Jeremy Corbyn's 12 recorded oral questions (2020–2026)."""
    records: list[Record] = json.loads(ORAL_LIST.read_bytes())["Response"]
    return records


def load_motion_list() -> list[Record]:
    """The 32 motions tabled 2–5 Mar 2020, as the list gives them (no names)."""
    records: list[Record] = json.loads(MOTIONS_LIST.read_bytes())["Response"]
    return records


def load_motion_details() -> list[Record]:
    """Two motions in full: "VAT on energy bills" (17 names) and a 2026 prayer (169, two of
    them taken off)."""
    return [json.loads(path.read_bytes())["Response"] for path in MOTION_DETAILS]


def swagger() -> Any:
    return json.loads(SWAGGER.read_bytes())


def _envelope(records: Any, paging: Mapping[str, Any] | None) -> bytes:
    return _encode(
        {
            "PagingInfo": paging,
            "StatusCode": 200,
            "Success": True,
            "Errors": [],
            "Response": records,
        }
    )


def _status_number(value: Any) -> int:
    return MOTION_STATUSES.index(value) if isinstance(value, str) else int(value)


def _values(params: Params, name: str) -> list[str]:
    return [v for v in params.get(name.lower(), []) if v]


def list_view(motion: Mapping[str, Any]) -> Record:
    """A motion as the list gives it: no names, their count beside it (the count of names on
    it, where the stand-in knows them)."""
    view = {k: copy.deepcopy(v) for k, v in motion.items() if k not in ("Sponsors", "Amendments")}
    sponsors = motion.get("Sponsors")
    if sponsors:
        view["SponsorsCount"] = sum(1 for s in sponsors if not s.get("IsWithdrawn"))
    return view


def detail_view(motion: Mapping[str, Any]) -> Record:
    """A motion as its detail gives it: the names, and a SponsorsCount of 0, as recorded."""
    view = copy.deepcopy(dict(motion))
    view.setdefault("Sponsors", [])
    view.setdefault("Amendments", [])
    view["SponsorsCount"] = 0
    return view


class OralStandin(StandinApi):
    """The Parliament stand-in, also serving ``GET /oralquestions/list`` (``parameters.``
    answeringDateStart, answeringDateEnd, askingMemberIds, skip, take),
    ``GET /EarlyDayMotions/list`` (``parameters.`` tabledStartDate, tabledEndDate, statuses,
    memberId, orderBy, skip, take) and ``GET /EarlyDayMotion/{id}``. Faults: target the path
    (``/oralquestions``, ``/EarlyDayMotions``, ``/EarlyDayMotion/``), by ``parameters.skip``
    too.
    """

    def __init__(
        self,
        questions: Iterable[Mapping[str, Any]] = (),
        motions: Iterable[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._questions: dict[int, Record] = {}
        self._motions: dict[int, Record] = {}
        for question in questions:
            self.put_question(question)
        for motion in motions:
            self.put_motion(motion)

    def put_question(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._questions[int(record["Id"])] = copy.deepcopy(dict(record))

    def update_question(self, question_id: int, **changes: Any) -> Record:
        with self._lock:
            record = {**self._questions[question_id], **copy.deepcopy(changes)}
            self._questions[question_id] = record
            return copy.deepcopy(record)

    def put_motion(self, record: Mapping[str, Any]) -> None:
        """A motion in full (its detail's ``Response``, or a list record)."""
        with self._lock:
            self._motions[int(record["Id"])] = copy.deepcopy(dict(record))

    def update_motion(self, motion_id: int, **changes: Any) -> Record:
        with self._lock:
            record = {**self._motions[motion_id], **copy.deepcopy(changes)}
            self._motions[motion_id] = record
            return copy.deepcopy(record)

    def motion(self, motion_id: int) -> Record:
        with self._lock:
            return copy.deepcopy(self._motions[motion_id])

    def _listing_skip(self, route: Route, path: str, params: Params) -> int | None:
        if path.rstrip("/").lower() in (ORAL_PATH, MOTIONS_PATH):
            with contextlib.suppress(ValueError):
                return _int_param(params, "parameters.skip", 0)
            return None
        return super()._listing_skip(route, path, params)

    def _respond(self, route: Route, path: str, params: Params) -> _Response:
        lowered = path.rstrip("/").lower()
        try:
            if lowered == ORAL_PATH:
                return self._oral_list(params)
            if lowered == MOTIONS_PATH:
                return self._motions_list(params)
        except ValueError as exc:
            body = {"PagingInfo": None, "StatusCode": 400, "Success": False, "Errors": [str(exc)]}
            return _Response(400, _encode({**body, "Response": None}))
        if lowered.startswith(MOTION_PATH) and lowered[len(MOTION_PATH) :].isdigit():
            return self._motion(int(lowered[len(MOTION_PATH) :]))
        return super()._respond(route, path, params)

    def _page(self, records: list[Record], params: Params, global_total: bool) -> _Response:
        skip = _int_param(params, "parameters.skip", 0)
        take = min(_int_param(params, "parameters.take", DEFAULT_TAKE), MAX_TAKE)
        paging: Record = {"Skip": skip, "Take": take, "Total": len(records)}
        if global_total:
            paging["GlobalTotal"] = len(records)
        paging["StatusCounts"] = []
        if global_total:
            paging["GlobalStatusCounts"] = []
        return _Response(200, _envelope(records[skip : skip + take], paging))

    def _oral_list(self, params: Params) -> _Response:
        predicates: list[Predicate] = []
        first = _date_param(params, "parameters.answeringdatestart")
        last = _date_param(params, "parameters.answeringdateend")
        if first or last:
            predicates.append(_date_predicate("AnsweringWhen", first, last))
        askers = {int(v) for v in _values(params, "parameters.askingmemberids")}
        if askers:
            predicates.append(lambda r: r.get("AskingMemberId") in askers)
        with self._lock:
            records = [copy.deepcopy(r) for _, r in sorted(self._questions.items())]
        matched = [r for r in records if all(p(r) for p in predicates)]
        return self._page(matched, params, global_total=True)

    def _motions_list(self, params: Params) -> _Response:
        predicates: list[Predicate] = []
        first = _date_param(params, "parameters.tabledstartdate")
        last = _date_param(params, "parameters.tabledenddate")
        if first or last:
            predicates.append(_date_predicate("DateTabled", first, last))
        statuses = {MOTION_STATUSES.index(v) for v in _values(params, "parameters.statuses")}
        if statuses:
            predicates.append(lambda r: _status_number(r.get("Status")) in statuses)
        member = _param(params, "parameters.memberid")
        if member:
            predicates.append(lambda r: str(r.get("MemberId")) == member)
        with self._lock:
            records = [list_view(r) for r in self._motions.values()]
        matched = [r for r in records if all(p(r) for p in predicates)]
        ascending = (_param(params, "parameters.orderby") or "").lower() == "datetabledasc"
        matched.sort(key=lambda r: (str(r.get("DateTabled")), int(r["Id"])), reverse=not ascending)
        return self._page(matched, params, global_total=False)

    def _motion(self, motion_id: int) -> _Response:
        with self._lock:
            motion = self._motions.get(motion_id)
        if motion is None:
            body = {
                "PagingInfo": None,
                "StatusCode": 404,
                "Success": False,
                "Errors": [f"Early Day Motion {motion_id} not found"],
                "Response": None,
            }
            return _Response(404, _encode(body))
        return _Response(200, _envelope(detail_view(motion), None))
