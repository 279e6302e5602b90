"""A real browser (headless Chromium) signs up, follows the confirmation mail, manages alerts."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from alertd import alerts
from alertd.config import Settings
from alertd.db import open_database
from alertd.links import Links
from alertd.sources.ingest import store_items
from alertd.sources.parliament import parse_item
from alertd.web import serve_web

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
    items = [parse_item(record) for record in load_2021_answered()]
    store_items(engine, items, now=NOW - timedelta(days=9), alert=False)
    stop = asyncio.Event()
    server = asyncio.create_task(serve_web(settings, engine, stop, sock=sock, clock=lambda: NOW))
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/")
                await page.get_by_label("Your email address").fill("browser@example.org")
                await page.get_by_label("A Member of Parliament").check()
                await page.get_by_label("Member's name").fill("navendu")
                await page.get_by_label("How often").select_option("weekly")
                await page.get_by_role("button", name="Preview matches").click()
                await expect(page.locator("#preview")).to_contain_text(
                    "would have found 12 answers"
                )
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
                await browser.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.close()
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
    alert = alerts.subscribe(engine, "phone@example.org", "school funding", "daily",
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
                await page.goto(links.url(links.manage_path(alert.subscriber_id)))
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
