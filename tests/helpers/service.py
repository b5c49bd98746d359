"""Fake cars (the Vehicle protocol, no I/O) and a ChargeService around one, for the shell."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tesla_smart_charger.control.events import Event
from tesla_smart_charger.control.models import ChargeState, VehicleSnapshot, VehicleState
from tesla_smart_charger.errors import BleUnavailable
from tesla_smart_charger.runtime.service import ChargeService
from tests.helpers.control import MEASURED

CFG = MEASURED


class FakeCar:
    """Answers like the Tesla client: a charging car whose request follows our commands."""

    def __init__(self, request: int = 16) -> None:
        self.request = request
        self.sent: list[int] = []
        self.fail_next: Exception | None = None

    async def snapshot(
        self, *, with_charge_state: bool = True, known_online: bool = False
    ) -> VehicleSnapshot:
        charge = ChargeState("Charging", self.request, 32, self.request, 1, 230)
        return VehicleSnapshot(VehicleState.ONLINE, charge, 0.0)

    async def set_charging_amps(self, amps: int) -> None:
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err
        self.sent.append(amps)
        self.request = amps

    async def charge_start(self) -> None:
        raise AssertionError("not expected")

    async def charge_stop(self) -> None:
        raise AssertionError("not expected")


def make(car: FakeCar, state_file: Path | None, clock: list[float]) -> ChargeService:
    queue: asyncio.Queue[Event] = asyncio.Queue()
    return ChargeService(CFG, car, queue, clock=lambda: clock[0], state_file=state_file)


class Car:
    """A `Vehicle` that records commands; `fail` makes every call raise."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.commands: list[tuple[str, int | None]] = []

    async def snapshot(self, **_: Any) -> VehicleSnapshot:
        raise AssertionError("not used")

    async def set_charging_amps(self, amps: int) -> None:
        self._go("set_charging_amps", amps)

    async def charge_start(self) -> None:
        self._go("charge_start", None)

    async def charge_stop(self) -> None:
        self._go("charge_stop", None)

    def _go(self, name: str, amps: int | None) -> None:
        if self.fail:
            raise BleUnavailable(f"{name}: bridge down")
        self.commands.append((name, amps))
