"""End-to-end fixtures: a real ``tether serve`` hub, Debian's Chromium through Playwright,
and a TCP proxy that can cut a page's connection the way a network failure would.

Chromium and Playwright are optional: without them the tests skip with the reason shown
(``require`` from tests/conftest.py), and with ``TETHER_REQUIRE_SERVICES=1`` they fail.
Never ``playwright install``: the tests launch ``/usr/bin/chromium`` (``apt-get install
chromium``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from e2e_support import CHROMIUM, CHROMIUM_ARGS, ChatPage, DropProxy, Hub, start_hub, stop_hub


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """The hub in its default (development) mode, shared by a module's tests."""
    running = start_hub()
    yield running
    stop_hub(running)


# --------------------------------------------------------------------- browser


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


# The browser (slow to start here) is shared by a module's tests, so those tests, the
# browser and the proxies run on one event loop per module: test modules set
# ``pytestmark = pytest.mark.asyncio(loop_scope="module")``.


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser).

    ``None`` when Chromium or Playwright is missing: ``open_chat`` then skips (or fails
    under ``TETHER_REQUIRE_SERVICES=1``) through ``require``.
    """
    if missing_browser() is not None:
        yield None
        return
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield instance
        finally:
            await instance.close()


@pytest_asyncio.fixture(loop_scope="module")
async def open_chat(
    browser: Any, require: Callable[..., None]
) -> AsyncIterator[Callable[..., Awaitable[ChatPage]]]:
    """``chat = await open_chat(base_url, room=..., name=...)``: a fresh browser context each.

    The page asks for quick reconnects (``maxReconnectDelay``) so tests wait less; the
    backoff stays exponential with full jitter.
    """
    reason = missing_browser()
    require(reason is None, reason)
    pages: list[ChatPage] = []

    async def open_page(
        base_url: str,
        *,
        room: str,
        name: str,
        viewport: dict[str, int] | None = None,
        **params: object,
    ) -> ChatPage:
        context = await browser.new_context(viewport=viewport)  # None: Playwright's 1280x720
        page = await context.new_page()
        chat = ChatPage(page, [])
        page.on("pageerror", lambda exc: chat.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: chat.console.append(msg.text) if msg.type == "error" else None,
        )
        page.on(
            "response",
            lambda r: chat.console.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        query = {"room": room, "name": name, "minReconnectDelay": 50}
        query |= {"maxReconnectDelay": 400, **params}
        search = "&".join(f"{k}={v}" for k, v in query.items())
        await page.goto(f"{base_url}/?{search}")
        pages.append(chat)
        return chat

    yield open_page
    for chat in pages:
        await chat.page.context.close()
    errors = [e for chat in pages for e in chat.errors]
    assert not errors, f"JavaScript errors in the page: {errors}"


# ----------------------------------------------------------------------- proxy


@pytest_asyncio.fixture(loop_scope="module")
async def drop_proxy() -> AsyncIterator[Callable[[Hub], Awaitable[DropProxy]]]:
    proxies: list[DropProxy] = []

    async def make(target: Hub) -> DropProxy:
        proxy = await DropProxy(target.host, target.port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()
