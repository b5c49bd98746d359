"""Capacity tariff, black-box: the real daemon keeps every window's average import under
importLimitKw while the car charges, against the simulated meter and car (1-minute windows)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, world_and_daemon

pytestmark = pytest.mark.slow

LIMIT_KW = 3.0
VOLTS = 230.0  # what the simulated meter reports


class Sampler:
    """What the meter shows, ten times a second, integrated per wall-clock minute."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.energy: dict[int, float] = defaultdict(float)  # minute -> joules
        self.covered: dict[int, float] = defaultdict(float)  # minute -> seconds sampled
        self.car_j = 0.0
        self._last: float | None = None
        self.changed = asyncio.Condition()  # notified after every sample

    def sample(self) -> None:
        now = time.time()
        watts = sum(self.world.supply_amps()) * VOLTS
        car_w = sum(self.world.car_amps()) * VOLTS
        if self._last is not None:
            dt = now - self._last
            minute = int(self._last // 60)
            self.energy[minute] += watts * dt
            self.covered[minute] += dt
            self.car_j += car_w * dt
        self._last = now

    async def run(self) -> None:
        while True:
            self.sample()
            async with self.changed:
                self.changed.notify_all()
            await asyncio.sleep(0.1)

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until `predicate()` holds, re-checked after every sample (a failure's deadline)."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)

    def full_minutes(self, after: float) -> list[int]:
        """Minutes that began after `after` and were sampled throughout."""
        return [m for m, secs in self.covered.items() if m * 60 >= after and secs >= 59.0]

    def average_kw(self, minute: int) -> float:
        return self.energy[minute] / 60.0 / 1000.0


async def test_no_window_goes_over_the_import_limit_while_the_car_charges(tmp_path: Path) -> None:
    car = CarModel(request_amps=16, charging_state="Charging", ramp_delay=1.0, capacity_kwh=None)
    world = World(car=car, manual_house=(4.0,))  # 920 W of house, 3.7 kW of car
    async with world_and_daemon(
        tmp_path,
        world,
        "--monitor",
        importLimitKw=LIMIT_KW,
        importWindowMins=1,
        sleepTimeSecs=5,
        energyMonitorPollSecs=0.5,
    ) as (world, daemon):
        sampler = Sampler(world)
        task = asyncio.create_task(sampler.run())
        try:
            # the guard cuts the car at once: 2850 W allowed, 920 W of house -> 8 A
            status = await daemon.wait_status(
                lambda st: (st["controller"]["setpoint_amps"] or 99) <= 8,
                timeout=10 * LOADED,
            )
            cut_at = time.time()
            assert status["capacity"]["limit_kw"] == LIMIT_KW
            assert status["capacity"]["window_mins"] == 1
            assert status["capacity"]["active"] is True
            # wait for the next window plus 20 s, then a surge the car's minimum cannot sit beside
            first = (int(cut_at // 60) + 1) * 60
            await sampler.until(lambda: time.time() >= first + 20, timeout=100)
            world.set_house(8.0)  # 1840 W: the car's 6 A (1380 W) no longer fits
            await daemon.wait_status(lambda st: st["controller"]["paused"], timeout=15 * LOADED)
            world.set_house(4.0)
            await daemon.wait_status(lambda st: not st["controller"]["paused"], timeout=60 * LOADED)
            # two whole windows observed after the cut
            await sampler.until(lambda: len(sampler.full_minutes(cut_at)) >= 2, timeout=200)
            status = await daemon.status()
            code, metrics = await daemon.get("/metrics")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    windows = {m: round(sampler.average_kw(m), 3) for m in sampler.full_minutes(cut_at)}
    print("capacity windows (kW):", windows, "car kWh:", round(sampler.car_j / 3.6e6, 3))
    assert len(windows) >= 2, windows
    assert all(avg <= LIMIT_KW for avg in windows.values()), windows
    # the car charged meanwhile (not a guard that simply stops it): over 1.5 kWh-minutes worth
    assert sampler.car_j > 1000.0 * 60 * len(windows), (sampler.car_j, windows)
    cap = status["capacity"]
    assert 0.0 < cap["month_peak_kw"] <= LIMIT_KW
    assert cap["window_avg_kw"] is not None
    assert cap["projection_kw"] is not None
    assert code == 200
    assert "tesla_smart_charger_capacity_month_peak_kw" in metrics
    assert "tesla_smart_charger_capacity_window_projection_kw" in metrics
    log = daemon.log()
    assert "capacity tariff" in log
    assert "Traceback" not in log
