"""GET /metrics: parses with prometheus-client's own parser, every metric present, values move."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tesla_smart_charger.app.daemon import Daemon
from tesla_smart_charger.control import ControllerState
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)
from tesla_smart_charger.httpapi.metrics import CONTROLLER_STATES, car_amps
from tesla_smart_charger.runtime.breaker_monitor import BreakerMonitor
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import VIN_A, VIN_B, WAIT_SECS, two_cars, world_and_daemon
from tests.helpers.observe import Running, charging_car, observed_daemon

P = "tesla_smart_charger_"
EXPECTED = {
    # family name (as the parser reports it, without _total) -> type
    P + "supply_amps": "gauge",
    P + "car_amps": "gauge",
    P + "setpoint_amps": "gauge",
    P + "target_amps": "gauge",
    P + "headroom_amps": "gauge",
    P + "limit_amps": "gauge",
    P + "overload_seconds": "counter",
    P + "commands": "counter",
    P + "fleet_api_calls": "counter",
    P + "fleet_api_cost_dollars": "counter",
    P + "fleet_api_cost_last_24h_dollars": "gauge",
    P + "meter_reading_age_seconds": "gauge",
    P + "meter_valid": "gauge",
    P + "access_token_expires_in_seconds": "gauge",
    P + "controller_state": "gauge",
    P + "breaker_heat_ratio": "gauge",
    P + "build_info": "gauge",
}
FAST: dict[str, Any] = {"energyMonitorPollSecs": 0.2}


async def scrape(run: Running) -> dict[str, list[Sample]]:
    """/metrics parsed by prometheus-client: family name -> samples."""
    async with run.session.get(run.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in EXPECTED.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, name
    return {name: f.samples for name, f in families.items()}


def value(samples: list[Sample], **labels: str) -> float:
    """The one sample whose labels include `labels`."""
    hits = [s.value for s in samples if labels.items() <= s.labels.items()]
    assert len(hits) == 1, (labels, samples)
    return hits[0]


async def until(daemon: Daemon, predicate: Callable[[ControllerState], bool]) -> None:
    """Wait (≤ 5 s) until the controller's state satisfies `predicate` after an event."""
    done = asyncio.Event()

    def check() -> None:
        if predicate(daemon.service.state):
            done.set()

    daemon.service.add_listener(check)
    check()
    async with asyncio.timeout(WAIT_SECS):
        await done.wait()


def supply_is(*amps: float) -> Callable[[ControllerState], bool]:
    """The controller saw a valid reading with these phase amps."""

    def check(s: ControllerState) -> bool:
        r = s.reading
        return (
            r is not None
            and r.valid
            and len(r.phase_amps) == len(amps)
            and all(abs(a - b) < 0.01 for a, b in zip(r.phase_amps, amps, strict=True))
        )

    return check


async def test_every_metric_is_present_and_supply_follows_the_meter(tmp_path: Path) -> None:
    world = World(car=CarModel(charging_state="Stopped"), manual_house=(12.5,))
    async with observed_daemon(tmp_path, world, **FAST) as run:
        await until(run.daemon, supply_is(12.5))
        m = await scrape(run)
        assert value(m[P + "supply_amps"], phase="1") == pytest.approx(12.5, abs=0.01)
        assert value(m[P + "headroom_amps"]) == pytest.approx(30.0 - 12.5, abs=0.01)
        assert value(m[P + "limit_amps"]) == 30.0
        assert value(m[P + "meter_valid"]) == 1.0
        assert 0.0 <= value(m[P + "meter_reading_age_seconds"]) < 2.0
        assert value(m[P + "controller_state"], state="normal") == 1.0
        assert sum(s.value for s in m[P + "controller_state"]) == 1.0
        assert {s.labels["state"] for s in m[P + "controller_state"]} == set(CONTROLLER_STATES)
        assert 28000 < value(m[P + "access_token_expires_in_seconds"]) <= 28800
        assert value(m[P + "build_info"]) == 1.0
        assert value(m[P + "overload_seconds"]) == 0.0
        # The replica is warm-started at the house's 12.5 A: (12.5 / 30)² of the trip heat 1.13².
        cold = value(m[P + "breaker_heat_ratio"], phase="1")
        assert cold == pytest.approx((12.5 / 30.0) ** 2 / 1.13**2, rel=0.01)
        assert P.encode() not in generate_latest(REGISTRY)  # a private registry per daemon

        run.world.set_house(20.25)
        await until(run.daemon, supply_is(20.25))
        m = await scrape(run)
        assert value(m[P + "supply_amps"], phase="1") == pytest.approx(20.25, abs=0.01)
        assert value(m[P + "headroom_amps"]) == pytest.approx(30.0 - 20.25, abs=0.01)
        # Each reading's current holds until the next one: the replica heats from then on.
        breaker = run.daemon.breaker
        assert breaker is not None
        await until(run.daemon, lambda _s: (breaker.heat_ratio() or [0.0])[0] > cold)
        m = await scrape(run)
        assert value(m[P + "breaker_heat_ratio"], phase="1") > cold


async def test_overload_counts_commands_api_calls_cost_and_overload_seconds(
    tmp_path: Path,
) -> None:
    world = World(car=charging_car(16), manual_house=(10.0,))
    async with observed_daemon(tmp_path, world, **FAST) as run:
        await until(run.daemon, supply_is(26.0))
        before = await scrape(run)
        assert value(before[P + "commands"], command="set_charging_amps", result="ok") == 0
        assert value(before[P + "fleet_api_cost_dollars"]) >= 0.0

        run.world.set_house(24.0)  # 24 + 16 = 40 A on a 30 A supply: the car must come down
        code, body = await run.get("/overload?source=test")
        assert code == 202
        assert body["accepted"] is True
        await until(run.daemon, lambda s: s.setpoint is not None and s.setpoint < 16)
        # Stays above the limit until the car has ramped down (ramp delay 0.5 s).
        await until(
            run.daemon, lambda s: s.reading is not None and s.reading.worst_phase_amps <= 30
        )
        after = await scrape(run)

        assert value(after[P + "commands"], command="set_charging_amps", result="ok") == 1
        calls = after[P + "fleet_api_calls"]
        assert value(calls, category="command", outcome="ok") == 1
        assert value(calls, category="data", outcome="ok") >= 1
        assert value(after[P + "fleet_api_cost_dollars"]) > value(
            before[P + "fleet_api_cost_dollars"]
        )
        assert value(after[P + "fleet_api_cost_last_24h_dollars"]) > 0
        assert 0.2 < value(after[P + "overload_seconds"]) < 5.0
        setpoint = value(after[P + "setpoint_amps"])
        assert setpoint == run.daemon.service.state.setpoint
        assert value(after[P + "target_amps"]) == run.daemon.service.state.target
        # Measured mode without a charger channel: the car's draw is inferred from its setpoint.
        assert value(after[P + "car_amps"]) == setpoint


async def test_meter_outage_shows_as_invalid_and_failsafe(tmp_path: Path) -> None:
    world = World(car=charging_car(16), manual_house=(10.0,))
    config = {**FAST, "energyMonitorStaleSecs": 2}
    async with observed_daemon(tmp_path, world, **config) as run:
        await until(run.daemon, supply_is(26.0))
        run.world.meter.set_valid(False)
        await until(run.daemon, lambda s: s.failsafe)
        m = await scrape(run)
        assert value(m[P + "meter_valid"]) == 0.0
        assert value(m[P + "controller_state"], state="failsafe") == 1.0
        assert value(m[P + "controller_state"], state="normal") == 0.0
        assert m[P + "supply_amps"] == []  # no stale numbers presented as current


async def test_openmetrics_on_request(tmp_path: Path) -> None:
    async with observed_daemon(tmp_path, World(), **FAST) as run:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with run.session.get(run.url + "/metrics", headers=headers) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            text = await r.text()
        assert text.rstrip().endswith("# EOF")
        assert "tesla_smart_charger_overload_seconds_total" in text


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ControllerState(started_at=0.0), None),
        (
            ControllerState(
                started_at=0.0, vehicle=VehicleSnapshot(VehicleState.ASLEEP, None, 0.0)
            ),
            0.0,
        ),
        (
            ControllerState(
                started_at=0.0,
                setpoint=11,
                vehicle=VehicleSnapshot(
                    VehicleState.ONLINE, ChargeState("Charging", 11, 32, 10, 1, 230), 0.0
                ),
            ),
            11.0,
        ),
        (
            ControllerState(
                started_at=0.0,
                setpoint=11,
                reading=MeterReading((20.0,), (230.0,), 9.5, valid=True, at=0.0),
            ),
            9.5,
        ),
    ],
    ids=["unknown", "asleep", "inferred-from-setpoint", "measured-channel"],
)
def test_car_amps_measured_or_inferred(state: ControllerState, expected: float | None) -> None:
    assert car_amps(state) == expected


@pytest.mark.slow
async def test_the_real_process_serves_metrics(tmp_path: Path) -> None:
    """`curl /metrics` on the daemon process (routes wired in daemon.py) parses, all present."""
    world = World(car=CarModel(charging_state="Stopped"), manual_house=(9.0,))
    async with world_and_daemon(tmp_path, world, "--monitor", **FAST) as (_, daemon):
        status = await daemon.wait_status(lambda s: s["meter"]["valid"])
        assert status["meter"]["amps"] == [pytest.approx(9.0, abs=0.01)]
        code, text = await daemon.get("/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert set(EXPECTED) <= set(families)
        assert value(families[P + "supply_amps"].samples, phase="1") == pytest.approx(9.0, abs=0.01)
        code, page = await daemon.get("/")
        assert code == 200
        assert 'id="chart"' in page
        code, doc = await daemon.get("/openapi.json")
        assert code == 200
        assert "/metrics" in doc["paths"]


async def test_a_hot_breaker_shows_in_status_metrics_and_health(tmp_path: Path) -> None:
    world = World(car=CarModel(charging_state="Stopped"), manual_house=(12.5,))
    async with observed_daemon(tmp_path, world, **FAST) as run:
        await until(run.daemon, supply_is(12.5))
        code, status = await run.get("/status")
        assert status["breaker"]["heat_pct"] == [pytest.approx(13.6, abs=0.2)]
        assert status["breaker"]["calibration"].startswith("conservative")
        code, _ = await run.get("/health")
        assert code == 200
        # 1.5 x homeMaxAmps for 14 s from 0.9 x: 95 % of the conservative trip heat. Fed to a
        # monitor of its own (virtual times), so the live readings do not interfere.
        hot = BreakerMonitor(30.0)
        for t in range(15):
            hot.observe(MeterReading((27.0 if t == 0 else 45.0,), (230.0,), None, True, t))
        run.daemon.breaker = hot
        m = await scrape(run)
        assert value(m[P + "breaker_heat_ratio"], phase="1") > 0.9
        code, health = await run.get("/health")
        assert code == 503
        assert any("main breaker heating up: phase 1" in p for p in health["problems"])


async def test_one_car_has_its_vin_labelled_series_too(tmp_path: Path) -> None:
    world = World(car=charging_car(16), manual_house=(10.0,))
    async with observed_daemon(tmp_path, world, **FAST) as run:
        await until(run.daemon, lambda s: s.setpoint is not None)
        m = await scrape(run)
        vin = run.daemon.vehicles()[0].vin
        assert vin
        assert value(m[P + "vehicle_setpoint_amps"], vin=vin) == run.daemon.service.state.setpoint
        assert value(m[P + "vehicle_mode"], vin=vin, mode="fast") == 1.0
        assert value(m[P + "vehicle_mode"], vin=vin, mode="solar") == 0.0
        assert {s.labels["vin"] for s in m[P + "vehicle_info"]} == {vin}
        # The unlabelled single-car families stay (dashboards depend on them).
        assert value(m[P + "setpoint_amps"]) == value(m[P + "vehicle_setpoint_amps"], vin=vin)


async def test_two_cars_per_car_series_and_the_real_meter(tmp_path: Path) -> None:
    # 2 A of house and two cars capped at 10 A: room is left over, so each car's share view
    # (its own headroom is exactly its share) differs from the real meter.
    cars = [
        {"vin": VIN_A, "chargerMaxAmps": 10},
        {"vin": VIN_B, "name": "Garage B", "priority": 1, "chargerMaxAmps": 10},
    ]
    async with observed_daemon(
        tmp_path, two_cars(house=2.0, ramp_delay=0.5), vehicles=cars, **FAST
    ) as run:
        fleet = run.daemon.fleet
        assert fleet is not None

        def both_set() -> bool:
            real = fleet.last_reading
            return (
                all(c.service.state.setpoint == 10 for c in fleet.cars)
                and real is not None
                and real.valid
                and real.worst_phase_amps < 23  # the cars have followed: 2 + 10 + 10
            )

        deadline = asyncio.get_running_loop().time() + WAIT_SECS
        while not both_set():
            assert asyncio.get_running_loop().time() < deadline, run.daemon.vehicles()
            await asyncio.sleep(0.05)
        # The supply is the real meter's, not the first car's share view: scrape between two
        # readings (retry when a new one arrived during the scrape).
        while True:
            assert asyncio.get_running_loop().time() < deadline + WAIT_SECS
            real = fleet.last_reading
            m = await scrape(run)
            if real is fleet.last_reading and real is not None and real.valid:
                break
        supply = value(m[P + "supply_amps"], phase="1")
        assert supply == pytest.approx(real.phase_amps[0], abs=0.01)
        first = fleet.cars[0].service.state.reading
        assert first is not None
        assert first.phase_amps[0] != pytest.approx(real.phase_amps[0], abs=0.5)  # it matters
        headroom = 30.0 - real.worst_phase_amps
        assert value(m[P + "headroom_amps"]) == pytest.approx(headroom, abs=0.01)
        for car in fleet.cars:
            st = car.service.state
            assert value(m[P + "vehicle_setpoint_amps"], vin=car.vin) == st.setpoint
            assert value(m[P + "vehicle_target_amps"], vin=car.vin) == st.target
            assert value(m[P + "vehicle_mode"], vin=car.vin, mode="fast") == 1.0
            assert value(m[P + "vehicle_charging"], vin=car.vin) in (0.0, 1.0)
        info = {s.labels["vin"]: s.labels for s in m[P + "vehicle_info"]}
        assert set(info) == {VIN_A, VIN_B}
        assert info[VIN_B]["name"] == "Garage B"
        assert info[VIN_A]["state"] == "online"

        async with run.session.post(run.url + f"/vehicles/{VIN_B}/mode?mode=solar") as r:
            assert r.status == 200, await r.text()
        while value((await scrape(run))[P + "vehicle_mode"], vin=VIN_B, mode="solar") != 1.0:
            assert asyncio.get_running_loop().time() < deadline + 2 * WAIT_SECS
            await asyncio.sleep(0.05)
        m = await scrape(run)
        assert value(m[P + "vehicle_mode"], vin=VIN_B, mode="fast") == 0.0
        assert value(m[P + "vehicle_mode"], vin=VIN_A, mode="fast") == 1.0
