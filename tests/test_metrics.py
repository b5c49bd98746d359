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

from tesla_smart_charger.breaker import BreakerMonitor
from tesla_smart_charger.controller import ControllerState
from tesla_smart_charger.daemon import Daemon
from tesla_smart_charger.httpapi.metrics import CONTROLLER_STATES, car_amps
from tesla_smart_charger.models import ChargeState, MeterReading, VehicleSnapshot, VehicleState
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.e2e import world_and_daemon
from tests.observe import Running, charging_car, observed_daemon

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
    async with asyncio.timeout(5):
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
