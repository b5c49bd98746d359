"""The dashboard in real headless Chromium against the simulator: the chart moves.

Uses Debian's chromium (installed by `make system-deps` / .ci/system-deps.sh), never a browser
download. With UPDATE_DOCS_SCREENSHOT=1 it saves docs/dashboard.png for the README; otherwise
the screenshot goes to the test's temp folder, so `make test` leaves the work tree clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Error, Route, ViewportSize, async_playwright

from tesla_smart_charger.cli.demo import story_evening
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import STARTUP_SECS, WAIT_SECS, free_port
from tests.helpers.observe import observed_daemon
from tests.helpers.status import capacity_and_grid_limit

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
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
BROWSER_WAIT_MS = int(WAIT_SECS * 1000)  # a deadline for failures: the page may be slow to draw
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

            await page.wait_for_function(MORE_POINTS, arg=0, timeout=BROWSER_WAIT_MS)
            first = int(await page.evaluate(POINTS))
            await page.wait_for_function(MORE_POINTS, arg=first, timeout=BROWSER_WAIT_MS)
            assert await page.get_attribute("#connection", "data-conn") == "live"
            # "normal", unless the kettle has already put the supply over the limit (read in
            # one look, so both come from the same sample).
            over, state = await page.evaluate(
                "() => [document.getElementById('supply').dataset.over,"
                " document.getElementById('state').dataset.state]"
            )
            assert state == ("overload" if over == "true" else "normal")
            assert "A" in (await page.text_content("#supply") or "")
            legend = await page.text_content("#legend") or ""
            assert "Car (inferred)" in legend  # no meter channel measures the car here
            assert await page.text_content("#car-label") == "Car (inferred)"
            assert "Limit (homeMaxAmps 30 A)" in legend
            # One car: the Cars card lists it with its mode switch on fast.
            await page.wait_for_selector('#cars button[data-mode="fast"][aria-pressed="true"]')
            assert await page.locator("#cars .car-name").count() == 1
            # The title says "Last 15 minutes": so does the axis, however short the history.
            assert await page.get_attribute("#chart", "data-span-secs") == "900"

            # Wait for the kettle and the car's first reduction, so the picture tells the story.
            try:
                await page.wait_for_selector("#commands td.result-ok", timeout=BROWSER_WAIT_MS)
            except Error:
                pytest.fail(
                    f"no command shown on the dashboard; status: {await run.get('/status')}"
                )
            shown = int(await page.evaluate(POINTS))
            await page.wait_for_function(MORE_POINTS, arg=shown + 4, timeout=BROWSER_WAIT_MS)
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

            # An overload is red at once, never a green "normal" (checked in one look at the
            # page, so both are the same sample). The kettle's overload lasts only until the
            # cut lands, which a loaded machine's page may never draw, so the house is now put
            # over the limit by itself (40 A on a 30 A main), which no cut can end.
            world.house = None
            world.set_house(40.0)
            over = await page.wait_for_function(
                "() => document.getElementById('supply').dataset.over === 'true'"
                " && [document.getElementById('state').dataset.state,"
                " document.getElementById('state').textContent]",
                timeout=BROWSER_WAIT_MS,
            )
            state, text = await over.json_value()
            assert state == "overload"
            assert text.startswith("overload: ")
            assert text.endswith(" A of 30.0 A") or text.endswith(" A of 30 A")

            assert problems == []  # no script error, no CSP violation
            assert other_hosts == []  # works offline: nothing but the daemon is asked
        finally:
            await browser.close()
    assert screenshot.stat().st_size > 10_000


VIN_A = "5YJ3E1EA7KF000001"
VIN_B = "5YJ3E1EA7KF000002"


def _two_cars() -> World:
    a = CarModel(vin=VIN_A, request_amps=16, ramp_delay=0.5, capacity_kwh=None)
    b = CarModel(vin=VIN_B, numeric_id=100022, vehicle_id=99998, request_amps=16)
    return World(cars=(a, b), manual_house=(2.0,))


def _button(vin: str, mode: str) -> str:
    return f'#cars button[data-vin="{vin}"][data-mode="{mode}"]'


@pytest.mark.parametrize("token", [None, "s3cret-dashboard-token"], ids=["open", "apiToken"])
async def test_car_list_and_mode_switch_in_chromium(tmp_path: Path, token: str | None) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    cars = [{"vin": VIN_A, "name": "Ada"}, {"vin": VIN_B}]
    extra: dict[str, Any] = {"apiToken": token} if token else {}
    async with (
        observed_daemon(
            tmp_path, _two_cars(), vehicles=cars, energyMonitorPollSecs=0.2, **extra
        ) as run,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            problems: list[str] = []
            page.on("pageerror", lambda err: problems.append(str(err)))
            posts: list[str] = []
            page.on("request", lambda req: posts.append(req.url) if req.method == "POST" else None)
            await page.goto(run.url + "/", wait_until="load")
            await page.wait_for_selector(_button(VIN_B, "solar"), timeout=BROWSER_WAIT_MS)
            names = await page.locator("#cars .car-name").all_text_contents()
            assert names == ["Ada", VIN_B]
            assert await page.get_attribute(_button(VIN_A, "fast"), "aria-pressed") == "true"
            assert await page.get_attribute(_button(VIN_B, "solar"), "aria-pressed") == "false"

            fleet = run.daemon.fleet
            assert fleet is not None
            if token is not None:
                # The controls wait for the token; the page asks for it instead of explaining.
                assert await page.is_visible("#token-form")
                assert await page.is_disabled(_button(VIN_B, "solar"))
                await page.fill("#token-input", "not-the-token")
                await page.click("#token-save")
                await page.wait_for_selector(
                    _button(VIN_B, "solar") + ":not([disabled])", timeout=BROWSER_WAIT_MS
                )
                await page.click(_button(VIN_B, "solar"))
                await page.wait_for_selector(
                    "#mode-message[data-kind='error']", timeout=BROWSER_WAIT_MS
                )
                assert "apiToken" in (await page.text_content("#mode-message") or "")
                assert fleet.cars[1].service.state.charge_mode == "fast"
                assert await page.is_disabled(_button(VIN_B, "solar"))  # locked again
                await page.fill("#token-input", token)
                await page.click("#token-save")
                assert token not in await page.content()  # kept in sessionStorage only
                stored = await page.evaluate("() => sessionStorage.getItem('tsc-api-token')")
                assert stored == token
                await page.wait_for_selector(
                    _button(VIN_B, "solar") + ":not([disabled])", timeout=BROWSER_WAIT_MS
                )
                posts.clear()
            else:
                assert await page.is_hidden("#token-form")
            await page.click(_button(VIN_B, "solar"))
            await page.wait_for_function(
                "() => document.getElementById('mode-message').dataset.kind === 'ok'",
                timeout=BROWSER_WAIT_MS,
            )
            assert posts == [f"{run.url}/vehicles/{VIN_B}/mode"]
            # The daemon took it, and the next panel from the server shows it.
            deadline = asyncio.get_running_loop().time() + WAIT_SECS
            while fleet.cars[1].service.state.charge_mode != "solar":
                assert asyncio.get_running_loop().time() < deadline, "mode never applied"
                await asyncio.sleep(0.05)
            # ... and the page's list, redrawn from the server's next panel, agrees.
            await page.wait_for_function(
                "(sel) => document.querySelector(sel).getAttribute('aria-pressed') === 'true'",
                arg=_button(VIN_B, "solar"),
                timeout=BROWSER_WAIT_MS,
            )
            assert await page.get_attribute(_button(VIN_B, "fast"), "aria-pressed") == "false"
            assert fleet.cars[0].service.state.charge_mode == "fast"
            assert problems == []
        finally:
            await browser.close()


# --- the demos: several cars, the sun, a restart ---------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@contextlib.asynccontextmanager
async def demo(
    scenario: str, port: int = 0
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`tesla-smart-charger demo --scenario …` as a process; the dashboard URL it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tesla_smart_charger", "demo", "--scenario", scenario,
        "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(STARTUP_SECS):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    pytest.fail("the demo ended before printing its URL:\n" + "".join(seen))
                seen.append(line)
                if "dashboard: " in line:
                    url = line.split("dashboard: ", 1)[1].strip().rstrip("/")
                    break
        drain = asyncio.create_task(_drain(proc.stdout))
        yield url, proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(STARTUP_SECS):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if "drain" in locals():
            drain.cancel()


async def _drain(stream: asyncio.StreamReader) -> None:
    """Keep reading the demo's live line so its pipe never fills."""
    while await stream.readline():
        pass


def _chromium() -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")


async def _shots(page: Any, name: str, tmp_path: Path) -> None:
    """Desktop and phone screenshots: into docs/ with UPDATE_DOCS_SCREENSHOT=1, else tmp_path."""
    update = os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1"
    folder = DOCS if update else tmp_path
    if update:
        # For the docs: a minute and a half of story on the chart, not a sliver.
        shown = int(await page.evaluate(POINTS))
        await page.wait_for_function(MORE_POINTS, arg=shown + 90, timeout=BROWSER_WAIT_MS * 8)
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=str(folder / f"dashboard-{name}.png"), full_page=True)
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=str(folder / f"dashboard-{name}-phone.png"), full_page=True)
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"]  # nothing sticks out sideways on a phone
    await page.set_viewport_size(DESKTOP)
    assert (folder / f"dashboard-{name}.png").stat().st_size > 10_000


async def test_two_cars_demo_shows_each_car_in_chromium(tmp_path: Path) -> None:
    _chromium()
    async with demo("two-cars") as (url, _), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            problems: list[str] = []
            page.on("pageerror", lambda err: problems.append(str(err)))
            await page.goto(url + "/", wait_until="load")
            # The Now card: a row per car, each with its own draw and state.
            await page.wait_for_function(
                "() => document.querySelectorAll('#now-cars li[data-car]').length === 2",
                timeout=BROWSER_WAIT_MS,
            )
            names = await page.locator("#now-cars .car-name").all_text_contents()
            assert len(set(names)) == 2
            assert await page.is_hidden("#car")  # no one figure for both cars
            # The chart: a line per car, named in the legend; never "Car (inferred)" alone.
            await page.wait_for_function(
                "() => document.getElementById('chart').dataset.cars === '2'",
                timeout=BROWSER_WAIT_MS,
            )
            legend = await page.text_content("#legend") or ""
            assert all(n in legend for n in names)
            assert "Car (inferred)" not in legend
            for status in await page.locator("#now-cars .car-status").all_text_contents():
                assert status not in ("", "\u2013")
            # The kettle overloads the house: a cut shows in the journal and in the commands,
            # each naming its car.
            await page.wait_for_selector(
                "#journal tr[data-kind='cut']", timeout=BROWSER_WAIT_MS * 3
            )
            journal = await page.text_content("#journal") or ""
            assert any(f"{n}: cut" in journal for n in names)
            commands = await page.text_content("#commands") or ""
            assert any(f"{n}: set_charging_amps" in commands for n in names)
            await _shots(page, "two-cars", tmp_path)
            assert problems == []
        finally:
            await browser.close()


async def test_solar_demo_draws_the_export_below_zero_in_chromium(tmp_path: Path) -> None:
    _chromium()
    async with demo("solar") as (url, _), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            problems: list[str] = []
            page.on("pageerror", lambda err: problems.append(str(err)))
            await page.goto(url + "/", wait_until="load")
            await page.wait_for_function(
                "() => document.getElementById('chart').dataset.export === '1'",
                timeout=BROWSER_WAIT_MS * 3,
            )
            assert float(await page.get_attribute("#chart", "data-bottom") or "0") < 0
            assert await page.get_attribute("#chart", "data-surplus") == "1"
            legend = await page.text_content("#legend") or ""
            assert "Export (below 0 A)" in legend
            assert "Solar surplus" in legend
            supply = await page.text_content("#supply") or ""
            assert "-" in supply  # the meter shows export as negative amps
            # Let the car start on the surplus, so the picture shows it following the sun.
            shown = int(await page.evaluate(POINTS))
            await page.wait_for_function(MORE_POINTS, arg=shown + 20, timeout=BROWSER_WAIT_MS * 3)
            await _shots(page, "solar", tmp_path)
            assert problems == []
        finally:
            await browser.close()


async def test_an_open_tab_reconnects_when_the_demo_restarts(tmp_path: Path) -> None:
    _chromium()
    port = free_port()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            async with demo("evening", port) as (url, proc):
                await page.goto(url + "/", wait_until="load")
                await page.wait_for_selector(
                    "#connection[data-conn='live']", timeout=BROWSER_WAIT_MS
                )
                proc.send_signal(signal.SIGINT)
                await proc.wait()
                await page.wait_for_selector(
                    "#connection[data-conn='reconnecting']", timeout=BROWSER_WAIT_MS
                )
                text = await page.text_content("#connection") or ""
                assert text.startswith("reconnecting")
            async with demo("evening", port) as (url2, _):
                assert url2 == url
                await page.wait_for_selector(
                    "#connection[data-conn='live']", timeout=BROWSER_WAIT_MS * 2
                )
        finally:
            await browser.close()


async def test_capacity_and_grid_limit_show_when_status_has_them_in_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _chromium()
    world = World(car=CarModel(request_amps=16, ramp_delay=0.5), manual_house=(5.0,))
    async with (
        observed_daemon(tmp_path, world, energyMonitorPollSecs=0.2) as run,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport=DESKTOP)
            await page.goto(run.url + "/", wait_until="load")
            await page.wait_for_selector("#connection[data-conn='live']", timeout=BROWSER_WAIT_MS)
            assert await page.is_hidden("#limits")  # nothing configured: nothing shown
            real = run.daemon.status
            capacity, grid = capacity_and_grid_limit()
            monkeypatch.setattr(
                run.daemon,
                "status",
                lambda: real().model_copy(update={"capacity": capacity, "grid_limit": grid}),
            )
            await page.wait_for_selector("#limits:not([hidden])", timeout=BROWSER_WAIT_MS)
            text = await page.text_content("#limits") or ""
            assert "Capacity window: average so far, kW2.1" in text
            assert "Capacity window: limit, kW2.5" in text
            assert "Grid limit: activeyes" in text
            assert "Grid limit: limit, kW4.2" in text
        finally:
            await browser.close()
