"""Helpers of the browser tests: Debian's Chromium driven by Playwright, logging in, axe-core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

import bus
import schemas
from bus import Bus

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PASSWORD = "correct horse battery"
AXE = Path(__file__).parent / "vendor" / "axe-core-4.10.3.min.js"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium (the tests share one: see `browser` in conftest.py)."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        await launched.close()


async def log_in(page: Page, base: str, user: str) -> None:
    """Log in through the form and wait for the app."""
    await page.goto(base + "/")
    await page.fill("#login-user", user)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#app-view:not([hidden])")


async def axe(page: Page) -> list[dict[str, object]]:
    """Violations axe-core finds on the page as it is now (the page's context must bypass the CSP)."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => (await axe.run(document)).violations")
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "nodes": len(v["nodes"]),
            # Which elements, and axe's reason for the first: a failure says what to look at.
            "where": [n["target"] for n in v["nodes"][:4]],
            "why": v["nodes"][0].get("failureSummary", "") if v["nodes"] else "",
        }
        for v in result
    ]


def serious(found: list[dict[str, object]]) -> list[dict[str, object]]:
    """The critical and serious ones."""
    return [v for v in found if v["impact"] in ("critical", "serious")]


async def events_of(nbus: Bus, stream: str, subjects: list[str]) -> list[Any]:
    """Every event on these subjects, from the log, in order."""
    return [schemas.decode_event(m.data) for m in await bus.read_all(nbus.js, stream, subjects)]
