"""The dashboard: a self-contained page, its static files, /events and /api/history."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tesla_smart_charger.const import SHUTDOWN_TIMEOUT
from tesla_smart_charger.httpapi.dashboard import MIN_SEND_INTERVAL
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, WAIT_SECS, world_and_daemon
from tests.helpers.observe import Running, observed_daemon, read_events

FAST: dict[str, Any] = {"energyMonitorPollSecs": 0.2}
VIN_A = "5YJ3E1EA7KF000001"
VIN_B = "5YJ3E1EA7KF000002"


class _Links(HTMLParser):
    """Every src/href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]


async def wait_until_no_streams(run: Running) -> None:
    """Wait (≤ 5 s) until the dashboard has no open stream, checked after every event."""
    done = asyncio.Event()

    def check() -> None:
        if run.dashboard.open_streams == 0:
            done.set()

    run.daemon.service.add_listener(check)
    check()
    async with asyncio.timeout(WAIT_SECS):
        await done.wait()


async def test_page_is_self_contained_and_its_assets_load(tmp_path: Path) -> None:
    async with observed_daemon(tmp_path, World(), **FAST) as run:
        async with run.session.get(run.url + "/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            page = await r.text()
        assert "default-src 'none'" in csp
        assert "connect-src 'self'" in csp
        parser = _Links()
        parser.feed(page)
        assert "web/app.js" in parser.links
        assert "web/style.css" in parser.links
        for link in parser.links:
            assert not link.startswith(("http://", "https://", "//")), link
            code, body = await run.get("/" + link)
            assert code == 200, link
            assert body
        assert '<canvas id="chart" data-points="0"' in page
        assert '<meter id="breaker-gauge"' in page  # the main breaker's heat gauge
        for asset in ("/web/app.js", "/web/style.css"):
            code, text = await run.get(asset)
            assert code == 200
            assert "http://" not in text
            assert "https://" not in text
        app_js = (await run.get("/web/app.js"))[1]
        assert "new EventSource(" in app_js
        assert "showBreaker(p.breaker)" in app_js


TRAVERSALS = [
    "/web/../daemon.py",
    "/web/..%2Fdaemon.py",
    "/web/%2e%2e%2fdaemon.py",
    "/web/..%2F..%2Fpyproject.toml",
    "/web/index.html/../../daemon.py",
    "/web/%2e%2e/%2e%2e/config.py",
    "/web/nope.js",
    "/web/",
    "/web/%0d%0aX-Injected:%201",
]


async def test_static_files_refuse_anything_but_their_own(tmp_path: Path) -> None:
    async with observed_daemon(tmp_path, World(), **FAST) as run:
        for raw_path in TRAVERSALS:
            url = URL(run.url + raw_path, encoded=True)  # sent as written, not normalised
            async with run.session.get(url) as r:
                assert r.status == 404, raw_path
                assert r.content_type == "application/json", raw_path
                assert "X-Injected" not in r.headers
                body = await r.json()
            assert body["status"] == 404
            assert "import" not in str(body)


async def test_events_send_init_then_coalesced_samples(tmp_path: Path) -> None:
    world = World(car=CarModel(charging_state="Stopped"), manual_house=(7.5,))
    async with observed_daemon(tmp_path, world, **FAST) as run:
        timeout = aiohttp.ClientTimeout(total=10)
        async with run.session.get(run.url + "/events", timeout=timeout) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["Cache-Control"] == "no-cache"
            (name, init), *_ = await read_events(r, 1)
            assert name == "init"
            assert init["config"]["homeMaxAmps"] == 30.0
            assert init["config"]["phases"] == 1
            assert init["config"]["mode"] == "measured"
            assert isinstance(init["history"], list)
            assert init["commands"] == []
            assert init["api_calls"]["command"] == 0

            samples: list[dict[str, Any]] = []
            while len(samples) < 4:
                [(name, data)] = await read_events(r, 1)
                if name == "sample":
                    samples.append(data)
        for sample in samples:
            assert set(sample) >= {"t", "supply", "car", "setpoint", "target", "reason", "state"}
            assert sample["supply"] == [pytest.approx(7.5, abs=0.01)]
            assert sample["state"] == "normal"
            # 7.5 A on a 30 A main: (7.5 / 30)² of the conservative trip heat 1.13²
            assert sample["breaker"] == [pytest.approx(100 * 0.0625 / 1.13**2, abs=0.1)]
        # The meter is read every 0.1 s, but a stream carries at most ~2 samples a second. Told
        # by the samples' own times, not by when they arrived (a busy test reads them in bursts):
        # each sample is newer than the one sent before it, and sends are 0.5 s apart, so four
        # samples span more than two intervals; ten readings a second would span 0.3 s.
        span = samples[-1]["t"] - samples[0]["t"]
        assert span > (len(samples) - 2) * MIN_SEND_INTERVAL - 0.01, [s["t"] for s in samples]
        await wait_until_no_streams(run)


async def test_history_keeps_one_sample_per_second(tmp_path: Path) -> None:
    world = World(car=CarModel(charging_state="Stopped"), manual_house=(5.0,))
    async with observed_daemon(tmp_path, world, **FAST) as run:
        done = asyncio.Event()
        run.daemon.service.add_listener(
            lambda: done.set() if len(run.dashboard.history) >= 2 else None
        )
        async with asyncio.timeout(WAIT_SECS):
            await done.wait()
        code, body = await run.get("/api/history")
        assert code == 200
        seconds = [int(p["t"]) for p in body["history"]]
        assert len(seconds) >= 2
        assert seconds == sorted(set(seconds))  # ascending, one per second
        assert body["config"]["homeMaxAmps"] == 30.0
        assert body["history"][-1]["supply"] == [pytest.approx(5.0, abs=0.01)]


async def test_streams_end_when_the_controller_stops(tmp_path: Path) -> None:
    async with observed_daemon(tmp_path, World(), **FAST) as run:
        async with run.session.get(run.url + "/events") as r:
            await read_events(r, 1)
            assert run.dashboard.open_streams == 1
            run.daemon.tasks["controller"].cancel()  # what SIGTERM does first
            async with asyncio.timeout(WAIT_SECS):
                rest = await r.content.read()
            assert b"event: init" not in rest
        assert run.dashboard.open_streams == 0


async def test_a_client_that_goes_away_is_forgotten(tmp_path: Path) -> None:
    async with observed_daemon(tmp_path, World(), **FAST) as run:
        async with run.session.get(run.url + "/events") as r:
            await read_events(r, 1)
            assert run.dashboard.open_streams == 1
            r.close()
        await wait_until_no_streams(run)


@pytest.mark.slow
async def test_sigterm_with_an_open_event_stream_exits_promptly(tmp_path: Path) -> None:
    """The real process (routes wired in daemon.py): SIGTERM ends the stream and exits 0."""
    async with world_and_daemon(tmp_path, World(), "--monitor", **FAST) as (_, daemon):
        async with aiohttp.ClientSession() as s, s.get(daemon.url + "/events") as r:
            assert r.status == 200
            [(name, _)] = await read_events(r, 1)
            assert name == "init"
            code, took = await daemon.terminate()
        assert code == 0, daemon.log()  # by itself: terminate() kills after a deadline
        assert took < SHUTDOWN_TIMEOUT * LOADED


async def test_a_quiet_stream_gets_heartbeats(tmp_path: Path) -> None:
    """Push mode with no /overload: no samples, but comments keep proxies from closing it."""
    async with (
        observed_daemon(tmp_path, World(), monitor=False, heartbeat=0.2) as run,
        run.session.get(run.url + "/events") as r,
    ):
        [(name, init)] = await read_events(r, 1)
        assert name == "init"
        assert init["config"]["mode"] == "push"
        lines: list[str] = []
        async with asyncio.timeout(WAIT_SECS):
            while len(lines) < 2:
                line = (await r.content.readline()).decode()
                if line.strip():
                    lines.append(line.strip())
        assert lines == [": heartbeat", ": heartbeat"]


async def test_no_secret_reaches_the_observe_endpoints(tmp_path: Path) -> None:
    secrets = {"apiToken": "observe-api-token-SECRET", "energyMonitorPassword": "meter-pw-SECRET"}
    world = World(meter_password=secrets["energyMonitorPassword"])
    async with observed_daemon(tmp_path, world, apiToken=secrets["apiToken"], **FAST) as run:
        access = run.daemon.loaded.settings.tesla_access_token
        assert access is not None
        forbidden = [*secrets.values(), access.get_secret_value()]
        bodies = [str((await run.get(path))[1]) for path in ("/", "/metrics", "/api/history")]
        bodies.append(str((await run.get("/openapi.json"))[1]))
        async with run.session.get(run.url + "/events") as r:
            bodies.append(str(await read_events(r, 2)))
        for body in bodies:
            for secret in forbidden:
                assert secret not in body


# --- the car line and the config summary (pure, no server) -----------------------------------


def _fake_daemon(state: Any, cfg: Any) -> Any:
    from types import SimpleNamespace  # noqa: PLC0415

    service = SimpleNamespace(state=state, cfg=cfg, add_listener=lambda _listener: None)
    loaded = SimpleNamespace(settings=SimpleNamespace(api_token=None))
    return SimpleNamespace(
        service=service,
        fleet=SimpleNamespace(
            cars=[SimpleNamespace(label=None, name=None, vin="V1", service=service)],
            last_reading=state.reading,  # the fleet keeps the real reading, one car too
        ),
        loaded=loaded,
    )


@pytest.mark.parametrize(
    ("since_command", "car_channel", "expected"),
    [
        (2.0, None, 16.0),  # settling: the car cannot have followed yet, keep the old value
        (9.0, None, 7.0),  # after carSettleSecs: the inferred car is at its new setpoint
        (2.0, 7.4, 7.4),  # a meter channel measures the car: always the measurement
    ],
)
def test_inferred_car_line_follows_only_after_the_settle_time(
    since_command: float, car_channel: float | None, expected: float
) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from tesla_smart_charger import control as core  # noqa: PLC0415
    from tesla_smart_charger.control.models import (  # noqa: PLC0415
        ChargeState,
        MeterReading,
        VehicleSnapshot,
        VehicleState,
    )
    from tesla_smart_charger.httpapi.dashboard import Dashboard  # noqa: PLC0415

    now = 1000.0
    charge = ChargeState("Charging", 16, 16, 16, 1, 230)
    reading = MeterReading((20.0,), (230.0,), car_channel, True, now)
    state = replace(
        core.initial_state(now - 100),
        vehicle=VehicleSnapshot(VehicleState.ONLINE, charge, now - 50),
        reading=reading,
        setpoint=7,
        command_from=16,
        commanded_at=now - since_command,
    )
    cfg = core.ControlConfig(
        mode="measured",
        home_max_amps=30.0,
        charger_min_amps=6,
        charger_max_amps=16,
        down_step=0.5,
        up_step=0.25,
        sleep_secs=20,
        settle_secs=8.0,
        charger_measured=car_channel is not None,
    )
    board = Dashboard(_fake_daemon(state, cfg), clock=lambda: now, store=False)
    assert board.car_line() == expected
    assert board.summary()["carMeasured"] is (car_channel is not None)


async def test_the_panel_lists_each_car_and_follows_a_mode_switch(tmp_path: Path) -> None:
    a = CarModel(vin=VIN_A, request_amps=16, ramp_delay=0.5, capacity_kwh=None)
    b = CarModel(vin=VIN_B, numeric_id=100022, vehicle_id=99998, request_amps=16)
    world = World(cars=(a, b), manual_house=(2.0,))
    cars = [{"vin": VIN_A, "name": "Ada"}, {"vin": VIN_B}]
    async with observed_daemon(tmp_path, world, vehicles=cars, **FAST) as run:
        code, snap = await run.get("/api/history")
        assert code == 200
        assert snap["config"]["chargeModes"] == ["fast", "solar", "minsolar"]
        shown = {c["vin"]: c for c in snap["vehicles"]}
        assert set(shown) == {VIN_A, VIN_B}
        assert shown[VIN_A]["name"] == "Ada"
        assert shown[VIN_B]["mode"] == "fast"
        assert set(shown[VIN_A]) == {
            "vin", "name", "mode", "state", "charging_state", "setpoint_amps", "target_amps",
            "status",
        }  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=10)
        async with run.session.get(run.url + "/events", timeout=timeout) as r:
            (name, _), *_ = await read_events(r, 1)
            assert name == "init"
            async with run.session.post(run.url + f"/vehicles/{VIN_B}/mode?mode=minsolar") as p:
                assert p.status == 200
            # The second car's own controller wakes the stream: a panel with its new mode.
            while True:
                [(name, data)] = await read_events(r, 1)
                if name == "panel":
                    modes = {c["vin"]: c["mode"] for c in data["vehicles"]}
                    if modes[VIN_B] == "minsolar":
                        break
            assert modes[VIN_A] == "fast"
        await wait_until_no_streams(run)
