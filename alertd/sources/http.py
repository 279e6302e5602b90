"""HTTP for sources: one way to build the client and one mapping of failures to errors."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from alertd.errors import SourceGone, SourceInvalid, SourceUnavailable


def make_client(
    user_agent: str, timeout_s: float, *, accept: str = "*/*", follow_redirects: bool = True
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        headers={"User-Agent": user_agent, "Accept": accept},
        follow_redirects=follow_redirects,
    )


async def get(
    client: httpx.AsyncClient,
    url: str,
    *,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool = True,
) -> httpx.Response:
    """GET ``url``; the response whatever its status (see ``check_status``).

    Raises:
        SourceUnavailable: a timeout or a connection error.
    """
    try:
        return await client.get(
            url, params=params, headers=headers, follow_redirects=follow_redirects
        )
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(f"GET {url} timed out") from exc
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"GET {url} failed: {exc!r}") from exc


def check_status(response: httpx.Response, *, ok: tuple[int, ...] = (200,)) -> None:
    """Accept the statuses in ``ok``; map any other to its error.

    Raises:
        SourceUnavailable: 429 or 5xx (worth retrying later).
        SourceGone: 410.
        SourceInvalid: any other status.
    """
    status = response.status_code
    if status in ok:
        return
    shown = f"GET {response.url} answered HTTP {status}"
    if status == 429 or status >= 500:
        raise SourceUnavailable(shown)
    if status == 410:
        raise SourceGone(f"{shown} (Gone)")
    raise SourceInvalid(shown)
