"""Bounded preview work, against uvicorn on loopback: a few previews at once, the rest refused
with 503 at once; a client over its preview limit gets 429; other pages stay fast meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alertd.config import DatabaseSettings, Settings
from alertd.db import open_database
from alertd.errors import Busy
from alertd.items import add_items
from alertd.kinds.written_question import parse
from alertd.models import Alert
from alertd.web import api, serve_web
from alertd.web.context import WebContext
from alertd.web.limits import WorkSlots

from standin_api import load_2021_answered
from waiting import wait_until_async

NOW = datetime(2021, 2, 10, 12, 0, tzinfo=UTC)
# Matches every stored answer: its preview costs what the whole window holds, with or
# without an index (the cost of a preview is at least the cost of its matches).
EVERYTHING = "house:commons OR house:lords"
COPIES = 16  # 469 recorded answers x 16: ~7,400 matches in the 30-day preview window
QUICK_S = 1.0
PAGES = ("/healthz", "/", "/manage", "/members")


@pytest.fixture(scope="session")
def big_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of ~5,600 answers of the last 30 days (the recorded ones, copied under
    new ids and dates), made once and copied."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    engine = open_database(DatabaseSettings(url=f"sqlite:///{path}"))
    recorded = [parse(record) for record in load_2021_answered()]
    stored_at = NOW - timedelta(days=1)
    for copy in range(COPIES):
        day = NOW.date() - timedelta(days=1 + copy)
        items = [
            dataclasses.replace(
                item,
                source_id=str(int(item.source_id) + copy * 10_000_000),
                details={
                    **item.details,
                    "uin": f"{item.details['uin']}-{copy}",
                    "date_tabled": (day - timedelta(days=7)).isoformat(),
                },
                day=day,
            )
            for item in recorded
        ]
        add_items(
            engine, "parliament", items, now=stored_at, today=stored_at.date(), never_alert=True
        )
    engine.dispose()
    return path


class Server:
    """The web app served by uvicorn on 127.0.0.1, and a client for it."""

    def __init__(self, port: int, engine: Engine) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.engine = engine
        self.client = httpx.AsyncClient(base_url=self.base, timeout=120)

    async def timed(
        self, method: str, path: str, ip: str = "198.51.100.1", **kwargs: Any
    ) -> tuple[httpx.Response, float]:
        """A response and its wall time; ``ip`` is the client (the proxy header uvicorn
        believes from 127.0.0.1, as behind a reverse proxy)."""
        headers = {"X-Forwarded-For": ip}
        started = time.perf_counter()
        response = await self.client.request(method, path, headers=headers, **kwargs)
        return response, time.perf_counter() - started

    def alerts(self) -> list[Alert]:
        with Session(self.engine) as session:
            return list(session.exec(select(Alert)))


@pytest.fixture
async def serve(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None], Server]] = []

    async def start(history: Path | None, **web: Any) -> Server:
        settings = make_settings(web=web)
        if history is not None:
            shutil.copy(history, tmp_path / "alertd.db")
        engine = open_database(settings.database)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        stop = asyncio.Event()
        task = asyncio.create_task(serve_web(settings, engine, stop, sock=sock, clock=lambda: NOW))
        server = Server(sock.getsockname()[1], engine)
        for _ in range(200):  # until uvicorn answers
            try:
                await server.client.get("/healthz")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        stops.append((stop, task, server))
        return server

    yield start
    for stop, task, server in stops:
        stop.set()
        await task
        await server.client.aclose()
        server.engine.dispose()


def _hold_api_previews(monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> list[str]:
    """/api/preview's work waits for ``release`` (in its slot's thread), then runs for real;
    the list returned gets each preview's query as it reaches its slot."""
    real_preview = api.preview
    arrived: list[str] = []

    def held_preview(ctx: WebContext, query_text: str) -> Any:
        arrived.append(query_text)
        assert release.wait(30), "the test never released the previews"
        return real_preview(ctx, query_text)

    monkeypatch.setattr(api, "preview", held_preview)
    return arrived


def _form(email: str, step: str) -> dict[str, str]:
    return {"email": email, "follow": "topic", "query": EVERYTHING, "frequency": "daily",
            "step": step}  # fmt: skip


@pytest.mark.slow
async def test_previews_beyond_the_concurrency_are_refused_at_once(
    serve: Callable[..., Any], big_history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: Server = await serve(big_history, preview_concurrency=2, previews_per_ip_per_minute=100)
    alone, _ = await server.timed("GET", "/api/preview", params={"q": EVERYTHING})
    assert alone.status_code == 200 and alone.json()["count"] > 7000
    # Indexed, a preview takes milliseconds: the served ones are held for a second, so that
    # "at once" is measured against work that is still going on.
    release = threading.Event()
    _hold_api_previews(monkeypatch, release)
    asyncio.get_running_loop().call_later(1.0, release.set)

    # Six at once, from six clients: two are computed, four are refused without waiting.
    burst = await asyncio.gather(
        *(
            server.timed("GET", "/api/preview", ip=f"198.51.100.{n}", params={"q": EVERYTHING})
            for n in range(10, 16)
        )
    )
    served = [seconds for response, seconds in burst if response.status_code == 200]
    refused = [(r, seconds) for r, seconds in burst if r.status_code == 503]
    assert len(served) == 2 and len(refused) == 4, [r.status_code for r, _ in burst]
    for response, seconds in refused:
        # At once: not after a preview's time (one alone took alone_s).
        assert seconds < min(QUICK_S, *served), f"a refusal took {seconds:.2f} s"
        assert int(response.headers["retry-after"]) > 0
        assert "try again" in response.json()["detail"]


@pytest.mark.slow
async def test_while_previews_are_busy_other_pages_stay_fast_and_sign_ups_go_through(
    serve: Callable[..., Any], big_history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Indexed, a preview takes milliseconds, too short to watch: the two API previews hold
    # their slots until the test releases them, then do their real work.
    release = threading.Event()
    arrived = _hold_api_previews(monkeypatch, release)
    server: Server = await serve(big_history, preview_concurrency=2, previews_per_ip_per_minute=100)
    busy = [
        asyncio.create_task(
            server.timed("GET", "/api/preview", ip=f"198.51.100.{n}", params={"q": EVERYTHING})
        )
        for n in (20, 21)
    ]
    await wait_until_async(lambda: len(arrived) == 2, 30, "both requests to reach their slots")

    body = {"email": "api@example.org", "query": "school funding"}
    pages, form, subscribed, api = await asyncio.gather(
        # Pages that compute no preview.
        asyncio.gather(*(server.timed("GET", path, ip="198.51.100.30") for path in PAGES)),
        # The sign-up page's preview.
        server.timed(
            "POST", "/signup", ip="198.51.100.31", data=_form("busy@example.org", "preview")
        ),
        # Subscribing from the form.
        server.timed(
            "POST", "/signup", ip="198.51.100.32", data=_form("busy@example.org", "subscribe")
        ),
        # The JSON API's sign-up.
        server.timed("POST", "/api/alerts", ip="198.51.100.33", json=body),
    )
    # Everything here ran while the two previews were still being computed.
    assert not any(task.done() for task in busy), "the previews ended first"

    for path, (response, seconds) in zip(PAGES, pages, strict=True):
        assert response.status_code == 200 and seconds < QUICK_S, (path, seconds)
    # The form comes back as typed, with a friendly line instead of the preview, and the
    # Subscribe button.
    page, seconds = form
    assert page.status_code == 503 and seconds < QUICK_S
    assert int(page.headers["retry-after"]) > 0
    assert "Previews are busy just now" in page.text
    assert 'value="busy@example.org"' in page.text
    assert 'name="step" value="subscribe"' in page.text
    # Subscribing from the form is not lost: saved (pending), without the breadth estimate.
    done, seconds = subscribed
    assert done.status_code == 200 and seconds < QUICK_S
    assert "Check your email" in done.text
    assert [(a.query, a.confirmed) for a in server.alerts()] == [(EVERYTHING, False)]
    # The JSON API says busy, with Retry-After, and saves nothing: its clients retry.
    refused, seconds = api
    assert refused.status_code == 503 and seconds < QUICK_S
    assert int(refused.headers["retry-after"]) > 0
    assert len(server.alerts()) == 1

    release.set()
    assert [response.status_code for response, _ in await asyncio.gather(*busy)] == [200, 200]
    # Once they are done, a preview is served again.
    again, _ = await server.timed("GET", "/api/preview", params={"q": "visas"})
    assert again.status_code == 200


@pytest.mark.slow
async def test_a_client_over_its_preview_limit_gets_429_and_others_do_not(
    serve: Callable[..., Any],
) -> None:
    server: Server = await serve(None, previews_per_ip_per_minute=2)
    hungry, other = "198.51.100.40", "198.51.100.41"
    for _ in range(2):
        response, _ = await server.timed("GET", "/api/preview", ip=hungry, params={"q": "visas"})
        assert response.status_code == 200
    refused, seconds = await server.timed("GET", "/api/preview", ip=hungry, params={"q": "visas"})
    assert refused.status_code == 429 and seconds < QUICK_S
    assert 0 < int(refused.headers["retry-after"]) <= 60
    # The form's preview is the same work under the same limit: a friendly line instead.
    page, _ = await server.timed(
        "POST", "/signup", ip=hungry, data=_form("me@example.org", "preview")
    )
    assert page.status_code == 429 and "a lot of previews" in page.text
    assert 'name="step" value="subscribe"' in page.text
    # The API's sign-up breadth check too.
    body = {"email": "me@example.org", "query": "visas"}
    api, _ = await server.timed("POST", "/api/alerts", ip=hungry, json=body)
    assert api.status_code == 429 and server.alerts() == []
    # Another client is counted on its own.
    response, _ = await server.timed("GET", "/api/preview", ip=other, params={"q": "visas"})
    assert response.status_code == 200


def test_work_slots_refuse_beyond_their_size_and_free_on_error() -> None:
    slots = WorkSlots(2)
    with slots.hold(), slots.hold():
        with pytest.raises(Busy) as caught:
            with slots.hold():
                pass
        assert caught.value.retry_after_s > 0
    with pytest.raises(ZeroDivisionError):
        with slots.hold():
            1 / 0  # noqa: B018
    with slots.hold(), slots.hold():  # both free again
        pass
