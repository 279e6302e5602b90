"""The Oral Questions and Motions API's shapes: its paging, its Members, its enumerations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from alertd.errors import SourceInvalid
from alertd.kinds.kind import JsonApi, MemberRef, PollSettings

if TYPE_CHECKING:
    from alertd.config import Settings

# The most records the API returns in one page, whatever is asked.
MAX_TAKE = 100


def _page(body: Any, skip: int) -> tuple[int, list[Mapping[str, Any]]]:
    """``{PagingInfo: {Total, ...}, Success, Errors, Response: [...]}`` -> (total, records)."""
    if not isinstance(body, Mapping):
        raise SourceInvalid(f"Oral Questions and Motions page at skip={skip} is not a JSON object")
    if body.get("Success") is False:
        errors = "; ".join(str(error) for error in body.get("Errors") or ()) or "no reason given"
        raise SourceInvalid(f"Oral Questions and Motions API refused page at skip={skip}: {errors}")
    paging, records = body.get("PagingInfo"), body.get("Response")
    total = paging.get("Total") if isinstance(paging, Mapping) else None
    if not isinstance(total, int) or not isinstance(records, list):
        raise SourceInvalid(
            f"Oral Questions and Motions page at skip={skip} lacks PagingInfo.Total or Response"
        )
    for record in records:
        if not isinstance(record, Mapping) or not _is_id(record.get("Id")):
            raise SourceInvalid(
                f"Oral Questions and Motions page at skip={skip} has a record without an Id"
            )
    return total, records


def _detail(body: Any) -> Mapping[str, Any] | None:
    record = body.get("Response") if isinstance(body, Mapping) else None
    return record if isinstance(record, Mapping) and _is_id(record.get("Id")) else None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _base_url(settings: Settings) -> str:
    return settings.oral_questions.base_url


ORAL_QUESTIONS_MOTIONS = JsonApi(
    name="Oral Questions and Motions API",
    base_url=_base_url,
    page_params=lambda skip, take: {
        "parameters.skip": skip,
        "parameters.take": min(take, MAX_TAKE),
    },
    detail_params={},
    page=_page,
    record_id=lambda record: int(record["Id"]),
    detail=_detail,
)


def member_for_date(raw: Any, fallback_id: Any, role: str) -> MemberRef | None:
    """A Member as the API gives one (``MemberForDate``: MnisId, Name, Party, Constituency),
    else by the bare id (named later through the Members API); None without either."""
    if isinstance(raw, Mapping) and _is_id(raw.get("MnisId")) and raw["MnisId"] > 0:
        return MemberRef(
            role=role,
            id=raw["MnisId"],
            name=str(raw.get("Name") or raw.get("ListAs") or "").strip() or None,
            party=raw.get("Party") or None,
            constituency=raw.get("Constituency") or None,
        )
    if _is_id(fallback_id) and fallback_id > 0:
        return MemberRef(role=role, id=fallback_id, name=None)
    return None


def enum_name(value: Any, names: Sequence[str], field: str, *, first: int) -> str:
    """An enumeration's name: the API sends the number although its Swagger declares the
    name; both are taken. ``first``: the number of ``names[0]`` (the API counts some of its
    enumerations from 0, some from 1).

    Raises:
        ValueError: neither a known name nor a number in range.
    """
    if isinstance(value, str) and value in names:
        return value
    if _is_id(value) and 0 <= value - first < len(names):
        name: str = names[value - first]
        return name
    raise ValueError(f"{field} {value!r} is not one of {', '.join(names)}")


def oral_questions_polled(settings: Settings) -> PollSettings | None:
    """How each kind of this API is polled (oral_questions); None when it is switched off."""
    if not settings.as_parliament(settings.oral_questions.enabled):
        return None
    return PollSettings(
        settings.oral_questions.poll_interval_minutes, settings.parliament.lookback_days
    )
