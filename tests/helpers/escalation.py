"""The escalation scenarios' car, their escalateAfterSecs, and polls against the daemon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tesla_smart_charger.simulator.car import CarModel
from tests.helpers.e2e import DaemonProcess

ESCALATE = 5.0  # escalateAfterSecs in these tests (its minimum)


def charging_car(**kwargs: object) -> CarModel:
    return CarModel(
        request_amps=16,
        charging_state="Charging",
        ramp_delay=0.5,
        capacity_kwh=None,
        **kwargs,  # type: ignore[arg-type]
    )


async def meter_valid(daemon: DaemonProcess) -> None:
    await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])


async def poll(predicate: Callable[[], bool], timeout: float, daemon: DaemonProcess) -> None:
    """Re-check `predicate` every 50 ms until it holds; fail with the daemon's log if not."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s:\n{daemon.log()[-4000:]}")
        await asyncio.sleep(0.05)
