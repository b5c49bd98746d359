"""Every car of `vehicles` is protected alike: each has its own failed-cut escalation.

Each car escalates on its own; the one relay is shared; each car's own charger channel is that
car's measured amps; a cut followed by an overload is judged by that car's own word.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.app.daemon import build_daemon
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.control import escalation as esc
from tesla_smart_charger.control import supervisor as sup
from tesla_smart_charger.control.events import Event, Reading
from tesla_smart_charger.control.models import MeterReading, VehicleSnapshot
from tesla_smart_charger.errors import BleUnavailable
from tesla_smart_charger.runtime.fleet import Fleet, FleetCar
from tesla_smart_charger.runtime.safety import CarRelay, Escalator, SharedRelay
from tesla_smart_charger.runtime.service import ChargeService
from tesla_smart_charger.shelly.build import compose_reading, create_meter
from tesla_smart_charger.shelly.meter import ChannelSample, ShellyMeter
from tests.helpers.control import MEASURED, charging
from tests.helpers.service import Car

CFG = esc.EscalationConfig(home_max_amps=30, charger_min_amps=6, escalate_after_secs=5)
VIN_A, VIN_B = "5YJ3E1EA7KF000001", "5YJ3E1EA7KF000002"


# --- the pure escalation: whose cut did not land? -------------------------------------------------

FLEET = replace(CFG, judge_by_look=True)


def _settled_cut(worst_after: float, car: float | None = None) -> esc.Step:
    """A 16 -> 6 A cut accepted at 0.1 s; a reading after carSettleSecs (8 s)."""
    state, _ = esc.step(esc.EscalationState(), esc.Measured(42.0), 0.0, FLEET)
    state, _ = esc.step(state, esc.CutAccepted("cloud", 16.0, 6.0), 0.1, FLEET)
    return esc.step(state, esc.Measured(worst_after, car), 9.0, FLEET)


def test_several_cars_a_settled_cut_still_over_asks_the_car() -> None:
    # 42 -> 34 A: more than half the 10 A cut, which one car alone would call "followed";
    # with several cars another car's cut may be the drop.
    state, actions = _settled_cut(34.0)
    assert actions == (esc.LookAtCar(),)
    assert state.pending is not None
    assert state.pending.looking
    again, actions = esc.step(state, esc.Measured(34.0), 9.5, FLEET)
    assert actions == ()  # asked once per cut
    # It says it still draws 16 A: a failed cut of its own, retried on the other road.
    failed, actions = esc.step(again, esc.CarReported(16.0), 9.6, FLEET)
    assert failed.cut_failed
    assert esc.RetryCut("ble", 6.0) in actions
    alert = next(a for a in actions if isinstance(a, esc.Alert))
    assert "still draws 16 A" in alert.message
    # It says 6.5 A: it followed; the overload is not its doing.
    calm, actions = esc.step(again, esc.CarReported(6.5), 9.6, FLEET)
    assert not calm.cut_failed
    assert calm.pending is None
    assert actions == ()
    # The look failed: the cut cannot be confirmed, which counts as failed.
    unknown, _ = esc.step(again, esc.CarReported(None, "car link down"), 9.6, FLEET)
    assert unknown.cut_failed


def test_several_cars_no_look_when_within_the_limit_or_measured() -> None:
    state, actions = _settled_cut(29.0)
    assert actions == ()
    assert state.pending is None  # within the limit: nothing to escalate
    state, actions = _settled_cut(34.0, car=16.0)  # its own channel says it
    assert state.cut_failed
    assert not any(isinstance(a, esc.LookAtCar) for a in actions)
    # one car alone is judged on the meter, as before
    state, _ = esc.step(esc.EscalationState(), esc.Measured(42.0), 0.0, CFG)
    state, _ = esc.step(state, esc.CutAccepted("cloud", 16.0, 6.0), 0.1, CFG)
    _, actions = esc.step(state, esc.Measured(41.0), 9.0, CFG)
    assert esc.RetryCut("ble", 6.0) in actions


def test_a_report_without_a_look_pending_changes_nothing() -> None:
    state, _ = esc.step(esc.EscalationState(), esc.Measured(42.0), 0.0, FLEET)
    assert esc.step(state, esc.CarReported(16.0), 1.0, FLEET) == (state, ())


def test_a_stopped_car_resumes_once_its_minimum_fits_beside_the_others() -> None:
    # charge_stop in force; the other car has taken the room (supply 26 A of 30 A).
    stopped = replace(esc.EscalationState(), level="charge_stop", stop_at=0.0, first_failed_at=0.0)
    alone, _ = esc.step(stopped, esc.Measured(26.0), 1.0, FLEET)
    alone, actions = esc.step(alone, esc.Measured(26.0), 70.0, FLEET)
    assert alone.level == "charge_stop"  # 4 A of real room: it would wait for ever
    assert actions == ()
    # House 10 A + the other car's 6 A minimum: room for its own 6 A minimum.
    shared, _ = esc.step(stopped, esc.Measured(26.0, None, 16.0), 1.0, FLEET)
    shared, _ = esc.step(shared, esc.Tick(), 30.0, FLEET)
    assert shared.room_since == 1.0
    assert shared.last_room == 16.0  # a tick judges on the last reading's basis
    shared, actions = esc.step(shared, esc.Measured(26.0, None, 16.0), 61.0, FLEET)
    assert shared.level == "none"
    assert esc.Resume(restart_charging=True) in actions


class LookedCar(Car):
    def __init__(self, snap: VehicleSnapshot | Exception) -> None:
        super().__init__()
        self.snap = snap
        self.looks: list[tuple[bool, bool]] = []

    async def snapshot(self, **kwargs: Any) -> VehicleSnapshot:
        self.looks.append((kwargs["with_charge_state"], kwargs["known_online"]))
        if isinstance(self.snap, Exception):
            raise self.snap
        return self.snap


async def test_the_look_reports_what_the_car_draws() -> None:
    car = LookedCar(charging(6, actual=16))
    escalator = Escalator(FLEET, car)
    seen = await escalator._carry_out(sup.AskCar())
    assert isinstance(seen, sup.CarSeen)
    assert sup.car_reported(seen) == esc.CarReported(16.0)
    assert car.looks == [(True, True)]  # the car just took a command: no state call first
    stopped = LookedCar(charging(6, state="Stopped", actual=0))
    seen = await Escalator(FLEET, stopped)._carry_out(sup.AskCar())
    assert isinstance(seen, sup.CarSeen)
    assert sup.car_reported(seen) == esc.CarReported(0.0)
    failing = LookedCar(BleUnavailable("bridge down"))
    seen = await Escalator(FLEET, failing)._carry_out(sup.AskCar())
    assert isinstance(seen, sup.CarSeen)
    outcome = sup.car_reported(seen)
    assert outcome.amps is None
    assert "bridge down" in outcome.error


# --- one relay, several cars ---------------------------------------------------------------------


class Relay:
    def __init__(self) -> None:
        self.on = True
        self.switches: list[bool] = []

    @property
    def name(self) -> str:
        return "relay"

    async def is_on(self) -> bool:
        return self.on

    async def switch(self, on: bool) -> None:
        self.on = on
        self.switches.append(on)


async def test_shared_relay_is_on_only_when_every_car_that_held_it_lets_go() -> None:
    device = Relay()
    shared = SharedRelay(device)
    a, b = shared.for_car("A"), shared.for_car("B")
    await a.switch(False)
    await b.switch(False)
    assert not device.on
    with pytest.raises(Exception, match="stays off until B has room too"):
        await a.switch(True)
    assert not device.on  # B's episode still needs it off
    await b.switch(True)
    assert device.on
    assert device.switches == [False, False, True]
    assert await a.is_on()
    assert a.name == "relay"


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, event: str, message: str, **_: Any) -> None:
        self.sent.append((event, message))


async def test_a_held_relay_is_no_fault_and_the_alert_names_the_car() -> None:
    device = Relay()
    shared = SharedRelay(device)
    sender = Sender()
    escalator = Escalator(
        CFG,
        Car(),
        relay=shared.for_car("Red"),
        alerts=sender,  # type: ignore[arg-type]
        label="Red",
    )
    await shared.for_car("Blue").switch(False)
    result = await escalator._carry_out(sup.SetRelay(on=True))
    assert result == sup.RelayResult(
        "held", "the charger circuit stays off until Blue has room too"
    )
    # Not a relay failure (asked again after RELAY_RETRY_SECS): the relay_on alert after it
    # says why the circuit stays off.
    state = core.initial_state(0.0)
    doing = replace(
        escalator.guard,
        doing=esc.SwitchRelay(on=True),
        todo=(esc.Alert("relay_on", "charger circuit on"),),
    )
    reaction = sup.react(doing, state, result, 0.0, CFG)
    assert reaction.supervision.outcomes == ()
    alert = reaction.effect
    assert isinstance(alert, sup.SendAlert)
    await escalator._carry_out(alert)
    ((event, message),) = sender.sent
    assert event == "relay_on"
    assert message.startswith("Red: ")
    assert "stays off until Blue has room too" in message
    cut = sup.SendAlert("cut_failed", "the car did not take the cut", "warning", (), 30.0)
    await escalator._carry_out(cut)
    assert sender.sent[-1] == ("cut_failed", "Red: the car did not take the cut")


# --- the fleet: each car's reading, its own channel, its follow signal ---------------------------


def _service(setpoint: int, *, command_from: int | None = None) -> ChargeService:
    service = ChargeService(MEASURED, Car(), asyncio.Queue())
    service.state = replace(
        core.initial_state(0.0),
        vehicle=charging(setpoint),
        setpoint=setpoint,
        target=setpoint,
        command_from=command_from,
        commanded_at=-100.0 if command_from is not None else None,
        first_look_done=True,
    )
    return service


def _route(fleet: Fleet, reading: MeterReading) -> list[Reading]:
    fleet.route(Reading(reading))
    out = []
    for car in fleet.cars:
        event = car.service.queue.get_nowait()
        assert isinstance(event, Reading)
        out.append(event)
    return out


def _headroom(event: Reading, car: FleetCar) -> float:
    """What the car's own controller sees: limit minus the supply without the car (measured by
    its channel, else its setpoint)."""
    own = event.reading.car_amps
    if own is None:
        own = float(car.service.state.setpoint or 0)
    return MEASURED.limit - (event.reading.phase_amps[0] - own)


def test_each_car_gets_its_own_channel_and_its_share_as_headroom() -> None:
    a = FleetCar(VIN_A, "A", 1, _service(16))
    b = FleetCar(VIN_B, "B", 0, _service(16), channel=1)
    fleet = Fleet(asyncio.Queue[Event](), [a, b], limit=MEASURED.limit, pause_when_overloaded=False)
    real = MeterReading((42.0,), (230.0,), None, True, 5.0, car_channel_amps=((1, 16.0),))
    ra, rb = _route(fleet, real)
    shares = {s.vin: s.amps for s in fleet.shares}
    assert ra.whole is real
    assert rb.whole is real
    assert rb.reading.car_amps == 16.0  # its own channel
    assert ra.reading.car_amps is None  # no channel of its own
    assert _headroom(ra, a) == shares[VIN_A]
    assert _headroom(rb, b) == shares[VIN_B]


def test_a_car_that_ignores_its_cut_is_held_there_and_the_others_make_room() -> None:
    a = FleetCar(VIN_A, "A", 1, _service(16))
    b = FleetCar(VIN_B, "B", 0, _service(6, command_from=16), channel=1)  # cut long ago
    fleet = Fleet(asyncio.Queue[Event](), [a, b], limit=MEASURED.limit, pause_when_overloaded=False)
    # House 10 A, A 16 A, B still 16 A although set to 6 A.
    real = MeterReading((42.0,), (230.0,), None, True, 5.0, car_channel_amps=((1, 16.0),))
    _ra, rb = _route(fleet, real)
    shares = {s.vin: s.amps for s in fleet.shares}
    assert shares[VIN_A] < 16  # B's excess counts as house load: the breaker comes first
    # B's controller is not invited to raise: given up (its minimum does not fit beside A's),
    # it is shown the real overload, less room than its minimum
    assert shares[VIN_B] == 6
    assert _headroom(rb, b) < 6
    assert rb.reading.car_amps == 16.0  # its escalation sees it did not follow


def test_each_car_resumes_against_the_house_and_the_others_minimums() -> None:
    a = FleetCar(VIN_A, "A", 1, _service(16))
    b_service = _service(6)
    b_service.state = replace(
        b_service.state, vehicle=charging(6, state="Stopped", actual=0), paused=False
    )
    b = FleetCar(VIN_B, "B", 0, b_service)
    fleet = Fleet(asyncio.Queue[Event](), [a, b], limit=MEASURED.limit, pause_when_overloaded=False)
    ra, rb = _route(fleet, MeterReading((26.0,), (230.0,), None, True, 5.0))
    assert rb.room_worst == 16.0  # house 10 A + A's 6 A minimum
    assert ra.room_worst == 10.0  # B draws nothing and claims nothing


def test_a_car_drawing_less_than_told_does_not_hide_the_house() -> None:
    a = FleetCar(VIN_A, "A", 1, _service(10))
    b = FleetCar(VIN_B, "B", 0, _service(16), channel=1)
    fleet = Fleet(asyncio.Queue[Event](), [a, b], limit=MEASURED.limit, pause_when_overloaded=False)
    # B is set to 16 A but its charger takes 8 A: house 10 A, supply 28 A. Taking B at its
    # setpoint would make the house 2 A and hand out 27 A of room that is not there.
    real = MeterReading((28.0,), (230.0,), None, True, 5.0, car_channel_amps=((1, 8.0),))
    _route(fleet, real)
    assert sum(s.amps for s in fleet.shares) == 19  # 29 - the real 10 A house


# --- the meter: each car's charger channel ---------------------------------------------------------


def test_car_channels_are_not_supply_and_are_reported_per_channel() -> None:
    channels = [
        ChannelSample(30.0, 230.0, True, None),
        ChannelSample(-12.0, 230.0, True, None),  # a CT the wrong way round
        ChannelSample(6.0, 230.0, False, "is_valid is false"),
    ]
    reading = compose_reading(
        channels, supply_channels=None, charger_channel=None, supply_phases=1, at=0.0,
        car_channels=(1, 2),
    )  # fmt: skip
    assert reading.phase_amps == (30.0,)  # neither car's channel is summed as supply
    assert reading.valid  # an invalid car channel only loses that car's amps
    assert reading.car_channel_amps == ((1, 12.0),)
    assert reading.car_amps is None


async def test_create_meter_reads_each_cars_channel(write_config: Any) -> None:
    two = [{"vin": VIN_A, "meterChargerChannel": 1}, {"vin": VIN_B, "meterChargerChannel": 2}]
    async with aiohttp.ClientSession() as session:
        s = load_config(write_config(vehicles=two, teslaVehicleId=...)).settings
        meter = create_meter(s, session)
        assert isinstance(meter, ShellyMeter)
        assert (meter._charger_channel, meter._car_channels) == (None, (1, 2))
        one = [{"vin": VIN_A, "meterChargerChannel": 1}]
        meter = create_meter(load_config(write_config(vehicles=one)).settings, session)
        assert isinstance(meter, ShellyMeter)
        assert (meter._charger_channel, meter._car_channels) == (1, ())  # the one car's


# --- the daemon's wiring -------------------------------------------------------------------------


async def test_every_car_has_its_own_escalation_and_status_names_it(
    write_config: Any, tmp_path: Path
) -> None:
    cars = [
        {"vin": VIN_A, "name": "Red", "priority": 1, "chargerMinAmps": 8},
        {"vin": VIN_B, "teslaBleProxy": "http://127.0.0.1:9"},
    ]
    path = write_config(
        vehicles=cars,
        teslaVehicleId=...,
        energyMonitorIp="127.0.0.1:9",
        safetyRelayIp="127.0.0.1:9",
        alertWebhook="http://127.0.0.1:9/hook",
        tokenFile=str(tmp_path / "tokens.json"),
    )
    loaded = load_config(path)
    async with aiohttp.ClientSession() as session:
        daemon = await build_daemon(loaded, session, monitor=True)
    assert daemon.fleet is not None
    labels = [label for label, _ in daemon.escalations()]
    assert labels == ["Red", VIN_B]
    # each car's controller names it in its log lines
    assert [c.service.label for c in daemon.fleet.cars] == ["Red", VIN_B]
    (_, red), (_, other) = daemon.escalations()
    assert red is not other
    assert red is daemon.escalator  # the first car's, as before
    assert isinstance(red.relay, CarRelay)
    assert isinstance(other.relay, CarRelay)
    assert red.relay.shared is other.relay.shared  # one relay
    # the alerts watch each car's own roads (only B has a BLE bridge), named after the car
    assert daemon.alert_watch is not None
    assert [car for car, _ in daemon.alert_watch.car_roads] == [VIN_B]
    # while it holds the chargers' circuit off, the fleet counts no car as drawing
    assert not daemon.fleet.circuit_off()
    red.relay.shared.holders.add(VIN_B)
    assert daemon.fleet.circuit_off()
    red.relay.shared.holders.clear()
    assert (red.label, other.label) == ("Red", VIN_B)
    assert red.cfg.judge_by_look  # one meter for two cars: a cut is judged by a look
    assert (red.cfg.charger_min_amps, other.cfg.charger_min_amps) == (8.0, 6.0)  # its own

    other.state = replace(other.state, level="charge_stop")
    status = daemon.status()
    assert [v.escalation for v in status.vehicles] == ["none", "charge_stop"]
    assert status.controller.escalation == "charge_stop"  # the worst car's
    problems = daemon.health()
    assert any(f"escalation charge_stop: {VIN_B} did not follow a cut" in p for p in problems)
    red.state = replace(red.state, level="relay_off")
    assert daemon.status().controller.escalation == "relay_off"


async def test_one_car_logs_as_it_always_did(write_config: Any, tmp_path: Path) -> None:
    for cars in ([{"vin": VIN_A, "name": "Red"}], None):
        extra: dict[str, Any] = {"vehicles": cars, "teslaVehicleId": ...} if cars else {}
        loaded = load_config(write_config(tokenFile=str(tmp_path / "tokens.json"), **extra))
        async with aiohttp.ClientSession() as session:
            daemon = await build_daemon(loaded, session, monitor=False)
        assert len(daemon.fleet.cars) == 1  # a fleet of one
        assert daemon.service.label is None  # no name in its log lines


def test_push_overloads_go_to_the_lowest_priority_and_then_the_car_set_highest() -> None:
    """Push mode has no meter to share by: an /overload cuts one car. Among equal priorities
    it is the one set highest, so repeated overloads fall evenly rather than on one VIN."""
    from types import SimpleNamespace  # noqa: PLC0415

    from tesla_smart_charger.control.events import Overload  # noqa: PLC0415
    from tesla_smart_charger.runtime.fleet import Fleet, FleetCar  # noqa: PLC0415
    from tests.helpers.control import PUSH, charging  # noqa: PLC0415

    def car(vin: str, priority: int, setpoint: int) -> FleetCar:
        state = replace(core.initial_state(0.0), vehicle=charging(setpoint), setpoint=setpoint)
        service = SimpleNamespace(state=state, cfg=PUSH, queue=asyncio.Queue())
        return FleetCar(vin, None, priority, service)  # type: ignore[arg-type]

    a, b, high = car("A", 0, 10), car("B", 0, 16), car("H", 1, 16)
    fleet = Fleet(asyncio.Queue(), [a, b, high], limit=30.0, pause_when_overloaded=False)
    fleet.route(Overload(at=0.0, source="shelly"))
    assert [c.service.queue.qsize() for c in (a, b, high)] == [0, 1, 0]  # B: set highest
    b.service.state = replace(b.service.state, setpoint=8)  # B was cut
    fleet.route(Overload(at=1.0, source="shelly"))
    assert [c.service.queue.qsize() for c in (a, b, high)] == [1, 1, 0]  # now A


async def test_status_roads_and_the_ble_dependency_are_the_first_cars_own(
    write_config: Any, tmp_path: Path
) -> None:
    """With several cars, /status `roads`, the ble_bridge dependency and /health's 'car link
    down' check described a road no car used (built from the top-level keys): its bridge never
    failed, so a real bridge outage never showed."""
    cars = [{"vin": VIN_A, "teslaBleProxy": "http://127.0.0.1:9"}, {"vin": VIN_B}]
    path = write_config(
        vehicles=cars,
        teslaVehicleId=...,
        energyMonitorIp="127.0.0.1:9",
        tokenFile=str(tmp_path / "tokens.json"),
    )
    async with aiohttp.ClientSession() as session:
        daemon = await build_daemon(load_config(path), session, monitor=True)
    assert daemon.roads is not None
    assert daemon.roads is daemon.cars[0].roads  # the first car's own failover
    assert daemon.ble_policy is not None
    assert daemon.ble_policy is daemon.cars[0].ble_policy
    assert daemon.cars[1].ble_policy is None  # B has no bridge
    daemon.ble_policy.failure("transient", "nothing listens on 127.0.0.1:9")
    assert daemon.dependencies()["ble_bridge"].failures == 1
