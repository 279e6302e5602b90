"""Sources: fetch written questions (tabled and answered) from the Parliament API as items."""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx

from alertd.config import ParliamentSettings
from alertd.errors import PermanentError, SourceInvalid
from alertd.htmltext import html_to_text, looks_like_html, sanitise_html
from alertd.models import QuestionStage
from alertd.sources import http

log = logging.getLogger("alertd.sources.parliament")
LIST_PATH = "/api/writtenquestions/questions"
OFFICIAL_URL = "https://questions-statements.parliament.uk/written-questions/detail/{tabled}/{uin}"


@dataclass(frozen=True)
class MemberInfo:
    id: int
    # None when the API gave only the id (no member object): named at ingest (MemberNames).
    name: str | None
    party: str | None
    constituency: str | None
    house: str | None


@dataclass(frozen=True)
class AnswerItem:
    """One answer version of a written question, as the API describes it."""

    api_id: int
    uin: str
    house: str
    heading: str
    question_text: str
    answer_html: str
    answer_text: str
    asking_member: MemberInfo | None
    answering_member: MemberInfo | None
    answering_body_id: int | None
    answering_body_name: str | None
    date_tabled: date
    date_answered: date | None
    date_answer_corrected: date | None
    is_holding: bool
    is_withdrawn: bool
    date_for_answer: date | None = None
    is_named_day: bool = False
    # The UINs of the questions grouped with this one (answered together).
    grouped_uins: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return OFFICIAL_URL.format(tabled=self.date_tabled.isoformat(), uin=self.uin)

    @property
    def version_key(self) -> str:
        """Names the version: it changes when a tabled question is answered (or withdrawn),
        or a holding answer is replaced or corrected. The prefix is its QuestionStage."""
        if self.is_withdrawn:
            return QuestionStage.WITHDRAWN.value
        if self.date_answered is None:
            return QuestionStage.TABLED.value
        answered = self.date_answered.isoformat()
        if self.is_holding:
            return f"holding:{answered}"
        corrected = self.date_answer_corrected.isoformat() if self.date_answer_corrected else "-"
        return f"answer:{answered}:{corrected}"


def api_date(value: Any, field: str) -> date | None:
    """The UK date of an API date-time field; None when it is empty."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a date string")
    # The API sends UK dates as YYYY-MM-DDT00:00:00 with no zone: the date is what counts.
    return datetime.fromisoformat(value).date()


def member_info(raw: Any, fallback_id: Any, house: str) -> MemberInfo | None:
    """A Member from an expanded member object, else from the bare id; None without either."""
    if isinstance(raw, Mapping) and isinstance(raw.get("id"), int):
        return MemberInfo(
            id=raw["id"],
            name=str(raw.get("name") or raw.get("listAs") or "") or None,
            party=raw.get("party"),
            constituency=raw.get("memberFrom"),
            house=house,
        )
    if isinstance(fallback_id, int):
        return MemberInfo(id=fallback_id, name=None, party=None, constituency=None, house=house)
    return None


def parse_item(value: Mapping[str, Any]) -> AnswerItem:
    """Normalise one API ``value`` object.

    Raises:
        SourceInvalid: a required field is missing or has the wrong type.
    """
    try:
        house = str(value["house"])
        raw_answer = str(value.get("answerText") or "")
        answer_html = sanitise_html(
            raw_answer if looks_like_html(raw_answer) else paragraphs_html(raw_answer)
        )
        date_tabled = api_date(value["dateTabled"], "dateTabled")
        if date_tabled is None:
            raise ValueError("dateTabled is empty")
        return AnswerItem(
            api_id=int(value["id"]),
            uin=str(value["uin"]),
            house=house,
            heading=str(value.get("heading") or "").strip(),
            question_text=html_to_text(str(value.get("questionText") or "")),
            answer_html=answer_html,
            answer_text=html_to_text(answer_html),
            asking_member=member_info(
                value.get("askingMember"), value.get("askingMemberId"), house
            ),
            answering_member=member_info(
                value.get("answeringMember"), value.get("answeringMemberId"), house
            ),
            answering_body_id=value.get("answeringBodyId"),
            answering_body_name=value.get("answeringBodyName"),
            date_tabled=date_tabled,
            date_answered=api_date(value.get("dateAnswered"), "dateAnswered"),
            date_answer_corrected=api_date(value.get("dateAnswerCorrected"), "dateAnswerCorrected"),
            is_holding=bool(value.get("answerIsHolding")),
            is_withdrawn=bool(value.get("isWithdrawn")),
            date_for_answer=api_date(value.get("dateForAnswer"), "dateForAnswer"),
            is_named_day=bool(value.get("isNamedDay")),
            grouped_uins=_grouped(value.get("groupedQuestions")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceInvalid(f"question {value.get('id')!r} has a bad field: {exc}") from exc


def _grouped(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    uins = (str(uin).strip() for uin in value if isinstance(uin, str | int))
    return tuple(uin for uin in uins if uin)


def paragraphs_html(text: str) -> str:
    """Plain text as HTML paragraphs, one per line."""
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n") if p.strip())


class ParliamentApi:
    """A polite client of the Written Questions API: timeouts, paging, bounded concurrency."""

    def __init__(self, settings: ParliamentSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self._detail_slots = asyncio.Semaphore(settings.detail_concurrency)

    async def get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        url = self.settings.base_url.rstrip("/") + path
        response = await http.get(
            self.client, url, params=params, headers={"Accept": "application/json"}
        )
        http.check_status(response)
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise http.answer_error(
                response, f"GET {response.url} returned broken JSON: {exc}"
            ) from exc

    async def list_answers(
        self, params: Mapping[str, str], *, path: str = LIST_PATH
    ) -> list[dict[str, Any]]:
        """Every ``value`` of a listing (questions, or statements by ``path``), paging with
        skip/take until ``totalResults``.

        Raises:
            SourceUnavailable, SourceInvalid: a page failed; nothing partial is returned.
        """
        take = self.settings.page_size
        values: dict[int, dict[str, Any]] = {}
        skip = 0
        while True:
            page = await self.get_json(
                path, {**params, "expandMember": "true", "take": take, "skip": skip}
            )
            total, results = _page_results(page, skip)
            for result in results:
                value = result.get("value") if isinstance(result, Mapping) else None
                if not isinstance(value, dict) or not isinstance(value.get("id"), int):
                    raise SourceInvalid(f"listing page at skip={skip} has an item without a value")
                values[value["id"]] = value
            skip += len(results)
            if skip >= total or not results:
                break
        return list(values.values())

    async def fetch_detail(self, api_id: int) -> dict[str, Any]:
        """The full record of one question (untruncated texts, answer as HTML)."""
        async with self._detail_slots:
            body = await self.get_json(f"{LIST_PATH}/{api_id}", {"expandMember": "true"})
        value = body.get("value") if isinstance(body, Mapping) else None
        if not isinstance(value, dict) or value.get("id") != api_id:
            raise SourceInvalid(f"detail of question {api_id} has no matching value")
        return value

    async def answers_between(self, first: date, last: date) -> list[dict[str, Any]]:
        """Summaries of questions answered, or corrected, between two UK dates inclusive."""
        answered = await self.list_answers(
            {"answeredWhenFrom": first.isoformat(), "answeredWhenTo": last.isoformat()}
        )
        corrected = await self.list_answers(
            {"correctedWhenFrom": first.isoformat(), "correctedWhenTo": last.isoformat()}
        )
        merged = {value["id"]: value for value in answered}
        merged.update({value["id"]: value for value in corrected})
        return list(merged.values())

    async def tabled_between(self, first: date, last: date) -> list[dict[str, Any]]:
        """Summaries of questions tabled between two UK dates inclusive (answered or not)."""
        return await self.list_answers(
            {"tabledWhenFrom": first.isoformat(), "tabledWhenTo": last.isoformat()}
        )

    async def full_items(self, summaries: Sequence[Mapping[str, Any]]) -> list[AnswerItem]:
        """Fetch the detail of each summary; keep the summary when the detail is gone (404).

        Raises:
            SourceUnavailable: a detail fetch failed for a reason worth retrying; the items
                fetched before it are lost with it, which is safe: the next poll refetches.
        """
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._detail_or_summary(s)) for s in summaries]
        except ExceptionGroup as failures:
            # The first failure names the URL; TaskGroup has already cancelled the rest.
            raise _first_leaf(failures) from None
        return [parse_item(task.result()) for task in tasks]

    async def _detail_or_summary(self, summary: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            detail = await self.fetch_detail(int(summary["id"]))
        except PermanentError as exc:
            log.warning("using the truncated listing text: %s", exc)
            return summary
        # The detail endpoint's member objects can be missing; the listing's are expanded.
        for key in ("askingMember", "answeringMember"):
            if not detail.get(key) and summary.get(key):
                detail[key] = summary[key]
        return detail


def _first_leaf(group: BaseExceptionGroup[Exception]) -> Exception:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _page_results(page: Any, skip: int) -> tuple[int, list[Any]]:
    if not isinstance(page, Mapping):
        raise SourceInvalid(f"listing page at skip={skip} is not a JSON object")
    total, results = page.get("totalResults"), page.get("results")
    if not isinstance(total, int) or not isinstance(results, list):
        raise SourceInvalid(f"listing page at skip={skip} lacks totalResults or results")
    return total, results


def make_http_client(settings: ParliamentSettings) -> httpx.AsyncClient:
    """The client every source shares: the Parliament settings' User-Agent, timeout and fetch
    bounds."""
    return http.make_client(
        settings.user_agent,
        settings.timeout_s,
        deadline_s=settings.fetch_deadline_s,
        max_bytes=settings.max_response_bytes,
    )
