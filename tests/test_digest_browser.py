"""The HTML digest opened in headless Chromium at phone and desktop widths, light and dark."""

from __future__ import annotations

import os
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from digest_cases import compose_case

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Set UPDATE_SCREENSHOT=1 to refresh the picture the README shows.
README_SCREENSHOT = Path(__file__).parent.parent / "docs" / "digest.png"
KEY_TEXT = (
    "26 new answers to written questions",
    "Special Educational Needs: Coronavirus",
    "Asked by Caroline Lucas (Green Party, Brighton, Pavilion)",
    "Answered by Vicky Ford",
    "Tabled 22 January 2021 · Answered 1 February 2021 · Commons 141957",
    'Why you got this: your alert "special educational needs" · also matches: pupils',
    "Corrected answer",
    "Why you got this: you follow Nadhim Zahawi",
    "and 15 more for this alert",
    "Unsubscribe from all alerts",
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route


def _unavailable(reason: str) -> None:
    # CI must run this test: there a missing browser is a failure, not a skip.
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install '.[test]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def digest_html(tmp_path_factory: pytest.TempPathFactory) -> str:
    raw = compose_case(tmp_path_factory.mktemp("browser"), "mixed")
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _open(browser: Browser, html: str, width: int, scheme: str) -> tuple[Page, list[str]]:
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        color_scheme="dark" if scheme == "dark" else "light",
        device_scale_factor=2 if width < 500 else 1,
    )
    requests: list[str] = []

    def refuse(route: Route) -> None:
        # A mail must load nothing: no remote images, fonts, styles or tracking pixels.
        requests.append(route.request.url)
        route.abort()

    context.route("**/*", refuse)
    page = context.new_page()
    page.set_content(html, wait_until="load")
    return page, requests


def _background(page: Page, selector: str) -> str:
    colour: str = page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor")
    return colour


@pytest.mark.parametrize(
    ("width", "scheme"), [(375, "light"), (375, "dark"), (1280, "light")], ids=str
)
def test_digest_reads_well_in_chromium(
    browser: Browser, digest_html: str, tmp_path: Path, width: int, scheme: str
) -> None:
    page, requests = _open(browser, digest_html, width, scheme)
    for text in KEY_TEXT:
        assert page.get_by_text(text, exact=False).first.is_visible(), text
    marks = page.locator("mark")
    assert marks.count() >= 3 and marks.first.is_visible()
    assert marks.first.inner_text().lower() == "special educational needs"
    # One column: never wider than the screen, at most 640 px on a desktop.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    column = page.locator(".wrap").bounding_box()
    assert column is not None
    assert column["width"] <= 640 and (width > 640 or column["width"] >= width - 1)
    body_size = page.eval_on_selector(".question", "e => parseFloat(getComputedStyle(e).fontSize)")
    assert body_size >= 16
    dark = scheme == "dark"
    assert (_background(page, "body") == "rgb(23, 20, 27)") is dark
    assert (_background(page, ".card") == "rgb(34, 30, 40)") is dark
    shot = tmp_path / f"digest-{width}-{scheme}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert requests == []
    if width == 1280 and os.environ.get("UPDATE_SCREENSHOT") == "1":
        page.set_viewport_size({"width": 760, "height": 1180})
        page.screenshot(path=str(README_SCREENSHOT))
    page.context.close()
