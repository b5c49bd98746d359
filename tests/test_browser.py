"""The dashboard in real headless Chromium against the simulator: the chart moves.

Uses Debian's chromium (installed by `make system-deps` / .ci/system-deps.sh), never a browser
download. With UPDATE_DOCS_SCREENSHOT=1 it saves docs/dashboard.png for the README; otherwise
the screenshot goes to the test's temp folder, so `make test` leaves the work tree clean.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Error, Route, async_playwright

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.demo import story_evening
from tesla_smart_charger.simulator.world import World
from tests.observe import observed_daemon

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# A function (not an expression string): the page's CSP forbids eval, and that is tested too.
MORE_POINTS = "(n) => Number(document.getElementById('chart').dataset.points) > n"
POINTS = "() => Number(document.getElementById('chart').dataset.points)"


async def test_dashboard_chart_moves_in_chromium(tmp_path: Path) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    update_docs = os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1"
    screenshot = DOCS_SCREENSHOT if update_docs else tmp_path / "dashboard.png"
    # The demo's story, four times faster: the kettle overloads the house 2.5 s in.
    world = World(
        house=story_evening(), car=CarModel(ramp_delay=1.0), time_scale=4.0, manual_house=(0.0,)
    )
    async with (
        observed_daemon(tmp_path, world, energyMonitorPollSecs=0.2) as run,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            problems: list[str] = []

            def console(msg: ConsoleMessage) -> None:
                if msg.type == "error":
                    problems.append(msg.text)

            def page_error(err: Any) -> None:
                problems.append(str(err))

            page.on("console", console)
            page.on("pageerror", page_error)
            other_hosts: list[str] = []
            page.on(
                "request",
                lambda req: (
                    other_hosts.append(req.url) if not req.url.startswith(run.url) else None
                ),
            )

            # Hold the event stream back: before the first event nothing pretends to be live.
            release = asyncio.Event()

            async def hold(route: Route) -> None:
                await release.wait()
                await route.continue_()

            await page.route("**/events", hold)
            await page.goto(run.url + "/", wait_until="load")
            await page.wait_for_function(
                "() => document.getElementById('chart').dataset.spanSecs === '0'"
            )
            assert await page.get_attribute("#connection", "data-conn") == "connecting"
            assert await page.text_content("#connection") == "connecting…"
            assert "homeMaxAmps" not in (await page.text_content("#legend") or "")
            assert await page.text_content("#limit") == "\u2013"  # the page's "no value" dash
            release.set()

            await page.wait_for_function(MORE_POINTS, arg=0, timeout=10_000)
            first = int(await page.evaluate(POINTS))
            await page.wait_for_function(MORE_POINTS, arg=first, timeout=10_000)
            assert await page.get_attribute("#connection", "data-conn") == "live"
            assert await page.get_attribute("#state", "data-state") == "normal"
            assert "A" in (await page.text_content("#supply") or "")
            legend = await page.text_content("#legend") or ""
            assert "Car (inferred)" in legend  # no meter channel measures the car here
            assert await page.text_content("#car-label") == "Car (inferred)"
            assert "Limit (homeMaxAmps 30 A)" in legend
            # The title says "Last 15 minutes": so does the axis, however short the history.
            assert await page.get_attribute("#chart", "data-span-secs") == "900"

            # Wait for the kettle and the car's first reduction, so the picture tells the story.
            try:
                await page.wait_for_selector("#commands td.result-ok", timeout=15_000)
            except Error:
                pytest.fail(
                    f"no command shown on the dashboard; status: {await run.get('/status')}"
                )
            shown = int(await page.evaluate(POINTS))
            await page.wait_for_function(MORE_POINTS, arg=shown + 4, timeout=15_000)
            screenshot.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(screenshot))

            # On a phone the "Why" column wraps inside the screen instead of disappearing.
            await page.set_viewport_size({"width": 360, "height": 740})
            why = page.locator("#commands td.why").first
            assert await why.is_visible()
            box = await why.bounding_box()
            assert box is not None
            assert box["width"] > 90  # a third of the screen for the reason
            assert box["x"] + box["width"] <= 360 + 1
            width = await page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 360  # nothing sticks out sideways
            await page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)

            assert problems == []  # no script error, no CSP violation
            assert other_hosts == []  # works offline: nothing but the daemon is asked
        finally:
            await browser.close()
    assert screenshot.stat().st_size > 10_000
