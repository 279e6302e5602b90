"""The Questions and Statements API client: listings paged to the end, details a few at a time."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from alertd.config import ParliamentSettings
from alertd.errors import PermanentError, SourceInvalid
from alertd.kinds.kind import ApiKind, Listing
from alertd.sources import http

log = logging.getLogger("alertd.sources.parliament")

# A record to parse: the detail with the listing's record it came from, or the listing's
# record alone (its detail is gone) with None.
Fetched = tuple[Mapping[str, Any], Mapping[str, Any] | None]


class ParliamentApi:
    """A polite client of the Questions and Statements API (written questions, written
    statements): timeouts, paging, bounded concurrency."""

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

    async def list_all(self, listing: Listing) -> list[dict[str, Any]]:
        """Every ``value`` of a listing, paging with skip/take until ``totalResults``.

        Raises:
            SourceUnavailable, SourceInvalid: a page failed; nothing partial is returned.
        """
        take = self.settings.page_size
        values: dict[int, dict[str, Any]] = {}
        skip = 0
        while True:
            page = await self.get_json(
                listing.path,
                {**listing.params, "expandMember": "true", "take": take, "skip": skip},
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

    async def listed(self, listings: Sequence[Listing]) -> list[dict[str, Any]]:
        """The records of several listings, one per id: a later listing's record wins."""
        merged: dict[int, dict[str, Any]] = {}
        for listing in listings:
            merged.update((value["id"], value) for value in await self.list_all(listing))
        return list(merged.values())

    async def detail(self, kind: ApiKind, listed: Mapping[str, Any]) -> dict[str, Any]:
        """The full record of a listed one (untruncated texts, HTML)."""
        api_id = listed["id"]
        async with self._detail_slots:
            body = await self.get_json(kind.detail_path(listed), {"expandMember": "true"})
        value = body.get("value") if isinstance(body, Mapping) else None
        if not isinstance(value, dict) or value.get("id") != api_id:
            noun = kind.type_name or kind.name
            raise SourceInvalid(f"detail of {noun} {api_id} has no matching value")
        return value

    async def details(self, kind: ApiKind, listed: Sequence[Mapping[str, Any]]) -> list[Fetched]:
        """The detail of each listed record; the listed record alone when its detail is
        gone (404).

        Raises:
            SourceUnavailable: a detail fetch failed for a reason worth retrying; the records
                fetched before it are lost with it, which is safe: the next poll refetches.
        """
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._detail_or_listed(kind, r)) for r in listed]
        except ExceptionGroup as failures:
            # The first failure names the URL; TaskGroup has already cancelled the rest.
            raise _first_leaf(failures) from None
        return [task.result() for task in tasks]

    async def _detail_or_listed(self, kind: ApiKind, listed: Mapping[str, Any]) -> Fetched:
        try:
            return await self.detail(kind, listed), listed
        except PermanentError as exc:
            log.warning("using the truncated listing text: %s", exc)
            return listed, None


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
