"""The Questions and Statements API's shapes: its paging, its dates, its Members, its texts."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from alertd.errors import SourceInvalid
from alertd.htmltext import html_to_text, looks_like_html, sanitise_html
from alertd.kinds.kind import JsonApi, MemberRef

if TYPE_CHECKING:
    from alertd.config import Settings


def api_date(value: Any, field: str) -> date | None:
    """The UK date of an API date-time field; None when it is empty."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a date string")
    # The API sends UK dates as YYYY-MM-DDT00:00:00 with no zone: the date is what counts.
    return datetime.fromisoformat(value).date()


def member_ref(raw: Any, fallback_id: Any, role: str) -> MemberRef | None:
    """A Member from an expanded member object, else from the bare id; None without either."""
    if isinstance(raw, Mapping) and isinstance(raw.get("id"), int):
        return MemberRef(
            role=role,
            id=raw["id"],
            name=str(raw.get("name") or raw.get("listAs") or "") or None,
            party=raw.get("party"),
            constituency=raw.get("memberFrom"),
        )
    if isinstance(fallback_id, int):
        return MemberRef(role=role, id=fallback_id, name=None)
    return None


def paragraphs_html(text: str) -> str:
    """Plain text as HTML paragraphs, one per line."""
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n") if p.strip())


def safe_html(raw: str) -> tuple[str, str]:
    """An API text (HTML, or plain text in the listings) as (safe HTML, plain text)."""
    cleaned = sanitise_html(raw if looks_like_html(raw) else paragraphs_html(raw))
    return cleaned, html_to_text(cleaned)


def _page(body: Any, skip: int) -> tuple[int, list[Mapping[str, Any]]]:
    """``{totalResults, results: [{value: {...}, links}]}`` -> (total, the values)."""
    if not isinstance(body, Mapping):
        raise SourceInvalid(f"listing page at skip={skip} is not a JSON object")
    total, results = body.get("totalResults"), body.get("results")
    if not isinstance(total, int) or not isinstance(results, list):
        raise SourceInvalid(f"listing page at skip={skip} lacks totalResults or results")
    values: list[Mapping[str, Any]] = []
    for result in results:
        value = result.get("value") if isinstance(result, Mapping) else None
        if not isinstance(value, dict) or not isinstance(value.get("id"), int):
            raise SourceInvalid(f"listing page at skip={skip} has an item without a value")
        values.append(value)
    return total, values


def _detail(body: Any) -> Mapping[str, Any] | None:
    value = body.get("value") if isinstance(body, Mapping) else None
    return value if isinstance(value, dict) and isinstance(value.get("id"), int) else None


def _base_url(settings: Settings) -> str:
    return settings.parliament.base_url


QUESTIONS_STATEMENTS = JsonApi(
    name="Questions and Statements API",
    base_url=_base_url,
    page_params=lambda skip, take: {"expandMember": "true", "take": take, "skip": skip},
    detail_params={"expandMember": "true"},
    page=_page,
    record_id=lambda record: int(record["id"]),
    detail=_detail,
)
