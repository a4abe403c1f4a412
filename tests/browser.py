"""Real headless Chromium for the browser tests: the page helpers they share (the `chromium`
and `browser` fixtures are in `tests/conftest.py`).

Chromium comes from Debian (`/usr/bin/chromium`; never a browser downloaded by Playwright).
Without it the browser tests are skipped, unless `ALIGNLOOP_REQUIRE_BROWSER=1` (set by `.ci/run`).
Screenshots go to `ALIGNLOOP_TEST_ARTIFACTS` (default `test-artifacts/`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
)
from sqlalchemy.orm import Session

from app.db import make_engine

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("ALIGNLOOP_TEST_ARTIFACTS")
    or Path(__file__).resolve().parents[1] / "test-artifacts"
)
# No `is_mobile` for the phone: a mobile viewport zooms out to fit content that is too wide,
# and innerWidth grows with it, which would hide the very overflow the test looks for.
SCREENS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
TIMEOUT_MS = 10_000


@contextmanager
def database(url: str) -> Iterator[Session]:
    """A session of our own on the server's database, to read back what the browser did."""
    engine = make_engine(url)
    try:
        with Session(engine) as db:
            yield db
    finally:
        engine.dispose()


def new_context(
    browser: Browser, base_url: str, viewport: dict[str, int], signed_in: dict | None = None
) -> BrowserContext:
    context = browser.new_context(base_url=base_url, viewport=viewport, storage_state=signed_in)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def record_errors(page: Page) -> list[str]:
    """Uncaught script errors and console errors from now on (a missing favicon is fine)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            errors.append(f"console: {message.text} at {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    return errors


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator(".whoami")).to_contain_text(username)


def save_screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=full_page)
