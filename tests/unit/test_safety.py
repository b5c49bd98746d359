"""The escalation's shell: raises held while escalated, cuts noted per road, alerts per episode."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.car.failover import FailoverVehicle
from tesla_smart_charger.control import escalation as esc
from tesla_smart_charger.control.events import Reading
from tesla_smart_charger.control.models import MeterReading, VehicleSnapshot, VehicleState
from tesla_smart_charger.errors import (
    ChargerError,
    CommandRefused,
    TeslaTransientError,
    VehicleAsleep,
)
from tesla_smart_charger.runtime.safety import AlertWatch, Escalator
from tests.helpers.service import Car

CFG = esc.EscalationConfig(home_max_amps=30, charger_min_amps=6, escalate_after_secs=5)


class Sender:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.messages: list[str] = []

    def send(self, event: str, message: str, **_: Any) -> None:
        self.events.append(event)
        self.messages.append(message)


def _reading(worst: float) -> Reading:
    return Reading(MeterReading((worst,), (230.0,), None, True, 0.0))


def controller_state(setpoint: int, before: int | None) -> core.ControllerState:
    return replace(core.initial_state(0.0), setpoint=setpoint, command_from=before)


def test_raises_are_held_only_while_escalated_and_cuts_never() -> None:
    escalator = Escalator(CFG, Car())
    raise_ = core.SetAmps(10, "room")
    cut = core.SetAmps(6, "overload")
    assert escalator.hold(raise_, controller_state(10, 8)) is None
    escalator.state = replace(escalator.state, level="charge_stop")
    held = escalator.hold(raise_, controller_state(10, 8))
    assert isinstance(held, core.VehicleUnavailable)
    assert held.kind == "refused"
    assert held.command
    assert escalator.hold(cut, controller_state(6, 8)) is None
    assert escalator.hold(core.RefreshVehicle("look"), controller_state(6, 8)) is None


async def test_cut_accepted_on_ble_and_not_followed_is_retried_on_the_cloud() -> None:
    ble, cloud = Car(), Car()
    roads = FailoverVehicle([("ble", ble), ("cloud", cloud)])
    await roads.set_charging_amps(9)  # the controller's cut, over BLE
    escalator = Escalator(CFG, roads, roads=roads, clock=lambda: 10.0)
    state = controller_state(9, 16)
    escalator.command_outcome(
        core.SetAmps(9, "cut"), core.CommandDone("set_charging_amps", 9), state
    )
    await escalator.after_event(_reading(36.0), state, 0.0)
    assert escalator.state.pending is not None
    assert escalator.state.pending.road == "ble"
    await escalator.after_event(_reading(36.0), state, 9.0)  # after carSettleSecs (8 s)
    assert cloud.commands == [("set_charging_amps", 9)]
    assert escalator.state.cut_failed


async def test_the_retry_never_sends_more_than_the_controllers_newest_cut() -> None:
    """One writer of the setpoint: the controller cut to 9 A over BLE; on the reading that shows
    the car did not follow, the controller itself cuts to 6 A (that call in flight, the service
    keeps the reading back). The escalation's retry on the cloud must not send 9 A after it."""
    ble, cloud = Car(), Car()
    roads = FailoverVehicle([("ble", ble), ("cloud", cloud)])
    escalator = Escalator(CFG, roads, roads=roads, clock=lambda: 9.0)
    at_nine = replace(controller_state(9, 16), target=9)
    await roads.set_charging_amps(9)
    escalator.command_outcome(
        core.SetAmps(9, "cut"), core.CommandDone("set_charging_amps", 9), at_nine
    )
    await escalator.after_event(_reading(36.0), at_nine, 0.0)
    # 9 s later (carSettleSecs is 8): the controller sends 6 A first, as ChargeService does
    # while the call is in flight; the reading reaches the escalation after the call's outcome.
    at_six = replace(controller_state(6, 9), target=6)
    await roads.set_charging_amps(6)
    outcome = core.CommandDone("set_charging_amps", 6)
    escalator.command_outcome(core.SetAmps(6, "cut"), outcome, at_six)
    state = await escalator.after_event(_reading(36.0), at_six, 9.0)
    state = await escalator.after_event(outcome, state, 9.0)
    sent = [amps for _, amps in ble.commands + cloud.commands]
    assert sent[:2] == [9, 6]
    assert all(amps is not None and amps <= 6 for amps in sent[2:])  # never 9 A again
    assert cloud.commands == [("set_charging_amps", 6)]  # the retry went, at the newest value
    assert state.setpoint == 6
    assert escalator.state.cut_failed


class Relay:
    """An `api.Relay` that records switching."""

    name = "relay"

    def __init__(self) -> None:
        self.switches: list[bool] = []

    async def is_on(self) -> bool:
        return not self.switches or self.switches[-1]

    async def switch(self, on: bool) -> None:
        self.switches.append(on)


class Refusing(Car):
    """A car whose every command raises `error`."""

    def __init__(self, error: ChargerError) -> None:
        super().__init__()
        self.error = error

    def _go(self, name: str, amps: int | None) -> None:
        self.commands.append((name, amps))
        raise self.error


def _transient() -> ChargerError:
    err = TeslaTransientError("HTTP 500")
    err.retry_after = 8.0  # what the car link's policy says
    return err


@pytest.mark.parametrize(
    ("error", "wait"),
    [
        (_transient(), 8.0),
        (VehicleAsleep("vehicle unavailable"), 60.0),
        (CommandRefused("set_charging_amps", "no"), 60.0),
    ],
    ids=["road failing", "car asleep", "car refused"],
)
async def test_the_safe_current_is_asked_again_at_the_pace_of_what_failed(
    error: ChargerError, wait: float
) -> None:
    """With the relay off and a minute of room, the safe current goes before the relay; while
    it fails the relay stays off, and it is not asked again before the failing road (or the
    car: a command to a sleeping or refusing car every 5 s would be a storm) allows."""
    car, relay = Refusing(error), Relay()
    cfg = replace(CFG, relay_configured=True)
    escalator = Escalator(cfg, car, relay=relay, clock=lambda: 100.0)
    escalator.state = replace(
        esc.EscalationState(),
        level="relay_off",
        relay_off_confirmed=True,
        room_since=0.0,
        road_up=False,
    )
    state = controller_state(16, None)
    for now in (100.0, 105.0, 100.0 + wait - 0.5):
        await escalator.after_event(_reading(20.0), state, now)
    assert car.commands == [("set_charging_amps", 6)]
    assert escalator.state.road_retry_at == 100.0 + wait
    await escalator.after_event(_reading(20.0), state, 100.0 + wait)
    assert car.commands == [("set_charging_amps", 6)] * 2
    assert relay.switches == []  # never powered while the car could not be set safe
    assert escalator.level == "relay_off"


async def test_a_cut_answered_vehicle_unavailable_opens_an_episode() -> None:
    escalator = Escalator(CFG, Car(fail=True))
    state = controller_state(6, 16)
    outcome = core.VehicleUnavailable("asleep", "vehicle unavailable", command=True)
    escalator.command_outcome(core.SetAmps(6, "cut"), outcome, state)
    await escalator.after_event(_reading(36.0), state, 0.0)
    assert escalator.state.cut_failed
    await escalator.after_event(_reading(36.0), state, 5.0)
    assert escalator.level == "charge_stop"
    assert escalator.steps["charge_stop"] == 1


def test_a_look_that_finds_the_car_asleep_does_not_prove_a_road() -> None:
    escalator = Escalator(CFG, Car())
    state = controller_state(6, 16)
    asleep = core.VehicleUpdate(VehicleSnapshot(VehicleState.ASLEEP, None, 0.0))
    escalator.command_outcome(core.RefreshVehicle("look"), asleep, state)
    assert not escalator.guard.noted
    online = core.VehicleUpdate(VehicleSnapshot(VehicleState.ONLINE, None, 0.0))
    escalator.command_outcome(core.RefreshVehicle("look"), online, state)
    assert escalator.guard.noted == (esc.RoadStatus(up=True),)


def test_alert_watch_sends_one_alert_per_change() -> None:
    sender = Sender()
    flags = {"failsafe": False, "login": False}
    now = [0.0]
    ble = Car(fail=True)
    roads = FailoverVehicle([("ble", ble), ("cloud", Car())], clock=lambda: now[0])
    watch = AlertWatch(
        sender,  # type: ignore[arg-type]
        failsafe=lambda: flags["failsafe"],
        login_required=lambda: flags["login"],
        house_amps=lambda: (20.0,),
        limit=30,
        roads=roads,
        clock=lambda: now[0],
    )
    watch.check()
    assert sender.events == []
    flags["failsafe"] = True
    watch.check()
    watch.check()
    flags["failsafe"] = False
    flags["login"] = True
    watch.check()
    watch.check()
    assert sender.events == ["failsafe", "failsafe_left", "login_required"]


async def test_alert_watch_road_down_for_five_minutes() -> None:
    sender = Sender()
    now = [0.0]
    ble = Car(fail=True)
    roads = FailoverVehicle([("ble", ble), ("cloud", Car())], clock=lambda: now[0])
    watch = AlertWatch(
        sender,  # type: ignore[arg-type]
        failsafe=lambda: False,
        login_required=lambda: False,
        house_amps=lambda: (),
        limit=30,
        roads=roads,
        clock=lambda: now[0],
    )
    await roads.set_charging_amps(10)  # BLE fails, the cloud carries it
    now[0] = 299.0
    watch.check()
    assert sender.events == []
    now[0] = 301.0
    watch.check()
    watch.check()
    assert sender.events == ["road_down"]
    ble.fail = False
    await roads.set_charging_amps(10)
    watch.check()
    assert sender.events == ["road_down", "road_up"]


async def test_alert_watch_names_the_car_whose_road_is_down() -> None:
    """Several cars: each car's own BLE bridge is watched, and the alert says which car."""
    sender = Sender()
    now = [0.0]
    red_ble, blue_ble = Car(fail=True), Car()
    red = FailoverVehicle([("ble", red_ble), ("cloud", Car())], clock=lambda: now[0])
    blue = FailoverVehicle([("ble", blue_ble), ("cloud", Car())], clock=lambda: now[0])
    watch = AlertWatch(
        sender,  # type: ignore[arg-type]
        failsafe=lambda: False,
        login_required=lambda: False,
        house_amps=lambda: (),
        limit=30,
        car_roads=(("Red", red), ("Blue", blue)),
        clock=lambda: now[0],
    )
    await red.set_charging_amps(10)  # Red's bridge fails, its cloud carries it
    await blue.set_charging_amps(10)
    now[0] = 301.0
    watch.check()
    watch.check()
    assert sender.events == ["road_down"]
    assert sender.messages[0].startswith("Red: ")
    red_ble.fail = False
    await red.set_charging_amps(10)
    watch.check()
    assert sender.events == ["road_down", "road_up"]
    assert sender.messages[1].startswith("Red: ")
