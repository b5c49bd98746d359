"""A car call in flight never stalls the controller: core and shell.

The shell runs the one car call as a task; events keep being decided meanwhile, and an action
they want waits for the call's outcome. These tests use a car whose command hangs until the
test releases it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.control.events import Overload, Reading
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)
from tesla_smart_charger.runtime.queue import EventQueue
from tesla_smart_charger.runtime.service import ChargeService
from tesla_smart_charger.runtime.status import controller_view
from tests.helpers.control import MEASURED, PUSH, charging, reading
from tests.helpers.e2e import WAIT_SECS

# Real clock, short stale time: the fail-safe must come while the call still hangs.
FAST = replace(MEASURED, stale_secs=0.6)


class HangingCar:
    """A charging car; `set_charging_amps` waits until `release` is set (a hung proxy)."""

    def __init__(self, request: int = 16) -> None:
        self.request = request
        self.started: list[int] = []  # commands that reached the car link
        self.sent: list[int] = []  # commands that landed
        self.release = asyncio.Event()
        self.error: BaseException | None = None

    async def snapshot(
        self, *, with_charge_state: bool = True, known_online: bool = False
    ) -> VehicleSnapshot:
        charge = ChargeState("Charging", self.request, 32, self.request, 1, 230)
        return VehicleSnapshot(VehicleState.ONLINE, charge, time.monotonic())

    async def set_charging_amps(self, amps: int) -> None:
        self.started.append(amps)
        if self.error is not None:
            raise self.error
        await self.release.wait()
        self.sent.append(amps)
        self.request = amps

    async def charge_start(self) -> None:
        raise AssertionError("not expected")

    async def charge_stop(self) -> None:
        raise AssertionError("not expected")


def live(amps: float) -> Reading:
    return Reading(MeterReading((amps,), (230.0,), None, True, time.monotonic()))


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> float:
    """Seconds until `predicate()` holds; AssertionError at the deadline (no fixed sleeps)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def start(
    car: HangingCar, cfg: core.ControlConfig = FAST
) -> tuple[ChargeService, asyncio.Task[None]]:
    service = ChargeService(cfg, car, EventQueue())
    task = asyncio.create_task(service.run())
    service.queue.put_nowait(live(10 + 16))  # first look: charging at 16 A
    await until(lambda: service.state.vehicle is not None and service.in_flight is None)
    return service, task


async def test_readings_and_failsafe_are_handled_while_a_cut_hangs() -> None:
    car = HangingCar()
    service, task = await start(car)
    try:
        service.queue.put_nowait(live(20 + 16))  # the oven: cut to 9 A, and the proxy hangs
        await until(lambda: isinstance(service.in_flight, core.SetAmps))
        assert car.started == [9]
        assert controller_view(service, "none").command_in_flight is True

        # The kettle too: the reading is decided now, against the 16 A the car really has.
        service.queue.put_nowait(live(23 + 16))
        await until(lambda: service.state.target == 6)
        assert "waiting for the car call in flight" in service.state.reason
        assert car.started == [9]  # still one call in flight, not a second one

        # The meter goes silent: the fail-safe comes although the call still hangs (it hangs
        # until released, so the fail-safe cannot be waiting for it). When it is due on the
        # clock is pinned by the pure test of next_deadline below, not by this wall clock.
        await until(lambda: service.state.failsafe)
        service.queue.put_nowait(live(23 + 16))
        await until(lambda: not service.state.failsafe)

        car.release.set()  # the proxy answers: the cut lands, then the one wanted meanwhile
        await until(lambda: car.sent == [9, 6])
        await until(lambda: service.in_flight is None)
        assert service.state.setpoint == 6
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_unexpected_error_in_a_car_call_ends_the_loop() -> None:
    car = HangingCar()
    service, task = await start(car)
    car.error = RuntimeError("bug in the car link")
    service.queue.put_nowait(live(20 + 16))
    with pytest.raises(RuntimeError, match="bug in the car link"):
        async with asyncio.timeout(WAIT_SECS):
            await task
    assert service.alive is False


async def test_stop_waits_for_the_call_in_flight_then_returns() -> None:
    car = HangingCar()
    service, task = await start(car)
    service.queue.put_nowait(live(20 + 16))
    await until(lambda: isinstance(service.in_flight, core.SetAmps))
    service.request_stop()
    assert service.reduction_pending
    await asyncio.sleep(0)
    assert not task.done()  # the cut is still on its way
    car.release.set()
    async with asyncio.timeout(WAIT_SECS):
        await task
    assert car.sent == [9]
    assert not service.reduction_pending


async def test_a_cancelled_push_cut_is_persisted(tmp_path: Path) -> None:
    state_file = tmp_path / "charger-state.json"
    car = HangingCar()
    service = ChargeService(PUSH, car, EventQueue(), state_file=state_file)
    task = asyncio.create_task(service.run())
    service.overload("http")
    await until(lambda: isinstance(service.in_flight, core.SetAmps))
    assert not state_file.exists()  # a setpoint not yet landed is not remembered
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.persist_pending()
    assert '"overload_pending": true' in state_file.read_text()
    assert '"setpoint": 16' in state_file.read_text()


# --- the pure core ------------------------------------------------------------------------


def test_a_cut_in_flight_past_the_settle_time_is_judged_against_the_old_setpoint() -> None:
    state = core.decide(
        core.initial_state(0.0), core.VehicleUpdate(charging(16)), 0.0, MEASURED
    ).state
    d = core.decide(state, reading(20 + 16, at=1.0), 1.0, MEASURED)
    assert d.actions == (core.SetAmps(9, "worst phase 36.0 A: lowering 16 -> 9 A"),)
    state = core.call_started(d.state, d.actions[0])
    # 11 s later (settle time 8 s) the car still draws 16 A: that is no new overload.
    d = core.decide(state, reading(20 + 16, at=12.0), 12.0, MEASURED)
    assert d.actions == ()
    assert not d.state.act_after_call
    assert d.state.target == 9
    # Only the fail-safe deadline is due while the call is in flight.
    assert core.next_deadline(d.state, MEASURED) == pytest.approx(12.0 + MEASURED.stale_secs)


def test_an_overload_during_a_look_is_acted_on_when_the_look_lands() -> None:
    state = core.initial_state(0.0)
    d = core.decide(state, Overload(at=1.0), 1.0, PUSH)
    state = core.call_started(d.state, d.actions[0])
    assert core.next_deadline(state, PUSH) is None
    state = core.decide(state, Overload(at=2.0), 2.0, PUSH).state
    d = core.decide(state, core.VehicleUpdate(charging(16, at=3.0)), 3.0, PUSH)
    assert d.actions == (core.SetAmps(8, "overload: 16 A x 0.5 -> 8 A"),)
    assert d.state.call_in_flight == ""


def test_a_failed_cut_in_flight_is_sent_again_when_the_link_allows() -> None:
    state = core.decide(
        core.initial_state(0.0), core.VehicleUpdate(charging(16)), 0.0, MEASURED
    ).state
    d = core.decide(state, reading(20 + 16, at=1.0), 1.0, MEASURED)
    state = core.call_started(d.state, d.actions[0])
    state = core.decide(state, reading(22 + 16, at=2.0), 2.0, MEASURED).state
    assert state.act_after_call
    assert state.setpoint == 9
    d = core.decide(
        state,
        core.VehicleUnavailable("transient", "timeout", retry_after=1.0, command=True),
        13.0,
        MEASURED,
    )
    assert d.actions == ()  # the link waits 1 s; the setpoint is the car's again
    assert d.state.setpoint == 16
    d = core.decide(d.state, reading(22 + 16, at=14.1), 14.1, MEASURED)
    assert d.actions == (core.SetAmps(7, "worst phase 38.0 A: lowering 16 -> 7 A"),)
