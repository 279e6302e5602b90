"""A real browser (headless Chromium) signs up, follows the confirmation mail, manages alerts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from alertd.config import Settings
from alertd.db import open_database
from alertd.items import add_items
from alertd.kinds import written_question
from alertd.links import Links
from alertd.subscriptions.lifecycle import subscribe
from alertd.web import serve_web
from alertd.web.service import link_secret_of

from smtp_server import SmtpSink
from standin_api import StandinApi, load_2021_answered

NOW = datetime(2021, 2, 10, 12, 0, tzinfo=UTC)  # nine days after the recorded answers
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() and os.environ.get("CI") != "true",
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@contextlib.asynccontextmanager
async def _chromium_page() -> AsyncIterator[Page]:
    """A new page in headless Chromium, closed with the browser afterwards."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_sign_up_confirm_and_manage_in_a_browser(
    make_settings: Callable[..., Settings],
    smtp_sink: SmtpSink,
    standin_api: StandinApi,
    tmp_path: Path,
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(
        mail={"delivery": "smtp"},
        smtp={"host": smtp_sink.host, "port": smtp_sink.port},
        members={"base_url": standin_api.base_url},
        web={"base_url": base},
    )
    engine = open_database(settings.database)
    items = [written_question.parse(record) for record in load_2021_answered()]
    stored = NOW - timedelta(days=9)
    add_items(
        engine, written_question.SOURCE, items, now=stored, today=stored.date(), never_alert=True
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve_web(settings, engine, stop, sock=sock, clock=lambda: NOW))
    try:
        async with _chromium_page() as page:
            await page.goto(f"{base}/")
            await page.get_by_label("Your email address").fill("browser@example.org")
            await page.get_by_label("A Member of Parliament").check()
            await page.get_by_label("Member's name").fill("navendu")
            await page.get_by_label("How often").select_option("weekly")
            await page.get_by_role("button", name="Preview matches").click()
            await expect(page.locator("#preview")).to_contain_text("would have found 12 answers")
            await expect(page.get_by_text("Following: Navendu Mishra")).to_be_visible()
            await page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
            await page.get_by_role("button", name="Subscribe").click()
            await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

            [mail] = await asyncio.to_thread(smtp_sink.wait_for_messages, 1)
            assert mail.rcpt_tos == ["browser@example.org"]
            text = mail.message.get_body(("plain",))
            assert text is not None
            link = re.search(rf"{re.escape(base)}/confirm/\S+", text.get_content())
            assert link, text.get_content()

            await page.goto(link.group(0))
            await page.get_by_role("button", name="Confirm my alert").click()
            await expect(page.get_by_role("heading", name="Your alerts")).to_be_visible()
            shot = tmp_path / "manage.png"
            await page.screenshot(path=str(shot), full_page=True)
            main = await page.locator("main").inner_text()
            assert "Your alert is confirmed" in main
            assert "Alerts for browser@example.org" in main
            assert "Navendu Mishra" in main and "Active" in main
            assert await page.get_by_label("Frequency of Navendu Mishra").input_value() == (
                "weekly"
            )
            assert shot.stat().st_size > 10_000

            await page.get_by_role("button", name="Pause Navendu Mishra").click()
            await expect(page.get_by_role("status")).to_contain_text("The alert is paused")
            await expect(page.locator("main")).to_contain_text("Paused")
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.close()
        engine.dispose()


async def test_manage_on_a_phone_asks_before_deleting(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(web={"base_url": base})
    engine = open_database(settings.database)
    long_query = "school funding OR " + " OR ".join(f"academy{n}" for n in range(12))
    for query in ('"special educational needs"', long_query):
        alert = subscribe(engine, "phone@example.org", query, "weekly", confirmed=True, now=NOW)
    manage = Links.for_settings(settings).url(
        Links.for_settings(settings).manage_path(
            alert.subscriber_id, link_secret_of(engine, "manage", alert.subscriber_id) or ""
        )
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve_web(settings, engine, stop, sock=sock, clock=lambda: NOW))
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page(viewport={"width": 390, "height": 844})
                await page.goto(manage)
                await expect(page.get_by_role("heading", name="Your alerts")).to_be_visible()
                await page.screenshot(path=str(tmp_path / "manage-390.png"), full_page=True)
                # Nothing wider than the phone: no sideways scrolling to reach the buttons.
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
                delete = page.get_by_role(
                    "button", name=re.compile("^Delete .?special educational needs")
                )
                box = await delete.bounding_box()
                assert box is not None and box["x"] + box["width"] <= 390

                await delete.click()
                await expect(page.get_by_role("heading", name="Delete this alert?")).to_be_visible()
                await page.get_by_role("link", name="No, keep it").click()
                await expect(page.locator("main")).to_contain_text("2 alerts")

                await page.get_by_role("button", name="Delete all my alerts").click()
                await expect(
                    page.get_by_role("heading", name="Delete all your alerts?")
                ).to_be_visible()
                await page.get_by_role("button", name="Delete all 2 alerts").click()
                await expect(page.get_by_role("status")).to_contain_text(
                    "All your alerts are deleted"
                )

                await page.get_by_role("link", name="Add an alert").click()
                assert await page.get_by_label("Your email address").input_value() == (
                    "phone@example.org"
                )
            finally:
                await browser.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.close()
        engine.dispose()


async def test_a_form_on_another_site_cannot_post_to_alertd(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # A page on another origin auto-submits a sign-up form at alertd (the CSRF attack): the
    # browser posts it with the other site's Origin, and alertd refuses it and saves nothing.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(web={"base_url": base})
    engine = open_database(settings.database)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_web(settings, engine, stop, sock=sock))
    attack = (
        f'<form id="f" method="post" action="{base}/signup">'
        '<input name="email" value="victim@example.org"><input name="query" value="visas">'
        '<input name="follow" value="topic"><input name="step" value="subscribe"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    try:
        async with _chromium_page() as page:
            await page.route(
                "http://evil.test/",
                lambda route: route.fulfill(body=attack, content_type="text/html"),
            )
            async with page.expect_response(f"{base}/signup") as answer:
                await page.goto("http://evil.test/")
            response = await answer.value
            assert response.status == 403
            await expect(page.get_by_role("heading")).to_have_text("Sent from another site")
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.close()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM alert").scalar() == 0
    engine.dispose()


async def test_resend_confirmation_from_the_manage_page_on_a_phone(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(
        mail={"delivery": "smtp"},
        smtp={"host": smtp_sink.host, "port": smtp_sink.port},
        web={"base_url": base},
    )
    engine = open_database(settings.database)
    # Made with `alertd subscribe` (its confirmation lost, say): the manage page resends it.
    alert = subscribe(engine, "phone@example.org", "school funding", "daily",
                             confirmed=False, now=NOW)  # fmt: skip
    links = Links.for_settings(settings)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_web(settings, engine, stop, sock=sock, clock=lambda: NOW))
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page(viewport={"width": 390, "height": 844})
                await page.goto(
                    links.url(
                        links.manage_path(
                            alert.subscriber_id,
                            link_secret_of(engine, "manage", alert.subscriber_id) or "",
                        )
                    )
                )
                await expect(page.locator("main")).to_contain_text("Waiting for confirmation")
                button = page.get_by_role(
                    "button", name="Resend the confirmation email of school funding"
                )
                await button.click()
                await expect(page.get_by_role("status")).to_contain_text(
                    "We have sent the confirmation email again"
                )
                await page.screenshot(path=str(tmp_path / "resend.png"), full_page=True)
                [mail] = await asyncio.to_thread(smtp_sink.wait_for_messages, 1)
                assert mail.rcpt_tos == ["phone@example.org"]
                text = mail.message.get_body(("plain",))
                assert text is not None
                link = re.search(rf"{re.escape(base)}/confirm/\S+", text.get_content())
                assert link, text.get_content()
                await page.goto(link.group(0))
                await page.get_by_role("button", name="Confirm my alert").click()
                await expect(page.get_by_role("status")).to_contain_text("Your alert is confirmed")
            finally:
                await browser.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.close()
        engine.dispose()
