"""The client of Parliament's JSON APIs: listings paged to the end, details a few at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import httpx

from alertd.config import ParliamentSettings
from alertd.errors import PermanentError, SourceInvalid
from alertd.kinds.kind import ApiKind, JsonApi, Listing
from alertd.kinds.parliament_json import QUESTIONS_STATEMENTS
from alertd.sources import http

log = logging.getLogger("alertd.sources.parliament")

# A record to parse: the detail with the listing's record it came from, or the listing's
# record alone (its detail is gone) with None.
Fetched = tuple[Mapping[str, Any], Mapping[str, Any] | None]


class ParliamentApi:
    """A polite client of one of Parliament's JSON APIs (by default the Questions and
    Statements API: written questions, written statements): timeouts, paging, bounded
    concurrency."""

    def __init__(
        self,
        settings: ParliamentSettings,
        client: httpx.AsyncClient,
        api: JsonApi = QUESTIONS_STATEMENTS,
        base_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.api = api
        self.base_url = (base_url or settings.base_url).rstrip("/")
        self._detail_slots = asyncio.Semaphore(settings.detail_concurrency)

    async def get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        url = self.base_url + path
        response = await http.get(
            self.client, url, params=params, headers={"Accept": "application/json"}
        )
        http.check_status(response)
        return http.json_body(response)

    async def list_all(self, listing: Listing) -> list[Mapping[str, Any]]:
        """Every record of a listing, paging until the API's total.

        Raises:
            SourceUnavailable, SourceInvalid: a page failed; nothing partial is returned.
        """
        take = self.settings.page_size
        records: dict[Hashable, Mapping[str, Any]] = {}
        skip = 0
        while True:
            page = await self.get_json(
                listing.path, {**listing.params, **self.api.page_params(skip, take)}
            )
            total, results = self.api.page(page, skip)
            records.update((self.api.record_id(record), record) for record in results)
            skip += len(results)
            if skip >= total or not results:
                break
        return list(records.values())

    async def listed(self, listings: Sequence[Listing]) -> list[Mapping[str, Any]]:
        """The records of several listings, one per id: a later listing's record wins."""
        merged: dict[Hashable, Mapping[str, Any]] = {}
        for listing in listings:
            records = await self.list_all(listing)
            merged.update((self.api.record_id(record), record) for record in records)
        return list(merged.values())

    async def detail(self, kind: ApiKind, listed: Mapping[str, Any]) -> Mapping[str, Any]:
        """The full record of a listed one (untruncated texts, HTML)."""
        path = kind.detail_path(listed)
        if path is None:
            return listed
        async with self._detail_slots:
            body = await self.get_json(path, self.api.detail_params)
        value = self.api.detail(body)
        if value is None or self.api.record_id(value) != self.api.record_id(listed):
            noun = kind.type_name or kind.name
            raise SourceInvalid(
                f"detail of {noun} {self.api.record_id(listed)} has no matching value"
            )
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


def make_http_client(settings: ParliamentSettings) -> httpx.AsyncClient:
    """The client every source shares: the Parliament settings' User-Agent, timeout and fetch
    bounds."""
    return http.make_client(
        settings.user_agent,
        settings.timeout_s,
        deadline_s=settings.fetch_deadline_s,
        max_bytes=settings.max_response_bytes,
    )
