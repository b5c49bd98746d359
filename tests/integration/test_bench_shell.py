"""The benchmark's `ours` rows run the daemon's own shell, so a regression there shows in them."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.bench import common, evening
from tesla_smart_charger.car.fleet_api import ApiCallCounter
from tesla_smart_charger.control.models import VehicleState
from tesla_smart_charger.errors import RateLimited, VehicleAsleep
from tesla_smart_charger.runtime import service
from tesla_smart_charger.simulator import virtual_time
from tesla_smart_charger.simulator.car import CarModel, envelope
from tesla_smart_charger.simulator.inprocess import InProcessFleet, SimulatedTeslaClient


def test_ours_is_the_charge_service_of_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = common.build_trace("winter-evening", quick=True)
    actions: Counter[str] = Counter()
    execute = service.ChargeService._execute

    async def counted(self: service.ChargeService, action: core.Action) -> core.ControllerEvent:
        actions[type(action).__name__] += 1
        return await execute(self, action)

    monkeypatch.setattr(service.ChargeService, "_execute", counted)
    r = evening.run_policy(trace, "ours")
    assert actions["SetAmps"] > 0
    # every command the simulated car received was a car call of ChargeService
    assert r.commands == actions["SetAmps"] + actions["StartCharging"] + actions["StopCharging"]
    assert r.trips == 0
    assert r.wakes == 0


def test_a_shell_that_drops_its_cuts_shows_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = common.build_trace("winter-evening", quick=True)
    good = evening.run_policy(trace, "ours")

    async def lost(self: service.ChargeService, action: core.Action) -> core.ControllerEvent:
        # a shell bug: it reports the command done without sending it
        if isinstance(action, core.SetAmps):
            return core.CommandDone("set_charging_amps", action.amps)
        return await execute(self, action)

    execute = service.ChargeService._execute
    monkeypatch.setattr(service.ChargeService, "_execute", lost)
    bad = evening.run_policy(trace, "ours")
    # Only the escalation's own charge_stop reaches the car: the cuts were "done" unsent, the
    # meter showed them missing, and the escalation stopped the car (the daemon's safety net).
    assert bad.commands < good.commands
    assert bad.energy_kwh < 0.8 * good.energy_kwh, (bad, good)
    assert bad.longest_overload > good.longest_overload
    assert bad != good


def test_the_simulated_client_parses_the_proxy_replies_as_the_daemon_does() -> None:
    async def main() -> tuple[VehicleState, str, float, int, int]:
        loop = asyncio.get_running_loop()
        car = CarModel(state="asleep", plugged=True, charging_state="Stopped")
        api = InProcessFleet([car])
        client = SimulatedTeslaClient(api, car.vin, clock=loop.time, wall_clock=loop.time)
        snapshot = await client.snapshot()  # the state call: asleep, never woken
        try:
            await client.set_charging_amps(10)
        except VehicleAsleep:
            asleep = "asleep"
        else:
            asleep = "sent"
        api.inject = lambda _m, _p, _now: (429, envelope(None, "rate limit exceeded"))
        await asyncio.sleep(120.0)  # past any backoff of the car link
        try:
            await client.snapshot()
        except RateLimited as err:
            wait = err.retry_after
        else:
            wait = -1.0
        return snapshot.state, asleep, wait, car.wakes, api.billing.data

    state, asleep, wait, wakes, billed = virtual_time.run(main())
    assert state is VehicleState.ASLEEP
    assert asleep == "asleep"
    assert wait >= 1.0  # the 429's Retry-After paces the next call
    assert wakes == 0
    assert billed == 2  # the state call and the 429 (Tesla bills both)


def test_the_api_counter_of_the_simulated_client_runs_on_the_virtual_wall() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        car = CarModel()
        client = SimulatedTeslaClient(
            InProcessFleet([car]), car.vin, clock=loop.time, wall_clock=lambda: 1e9 + loop.time()
        )
        await client.charge_stop()
        return loop.time()

    assert virtual_time.run(main()) == pytest.approx(1.0, abs=1e-3)  # the command latency
    assert isinstance(ApiCallCounter(), ApiCallCounter)
