"""The Questions and Statements API's shared shapes: its dates, its Members, its texts."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from alertd.htmltext import html_to_text, looks_like_html, sanitise_html
from alertd.kinds.kind import MemberRef


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
