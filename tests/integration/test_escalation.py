"""The escalation state machine, table-driven: (time, input) scripts and the actions they give."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, replace

import aiohttp
import pytest
from pydantic import SecretStr
from tenacity import wait_none

from tesla_smart_charger.car.ble import BleVehicle
from tesla_smart_charger.car.failover import FailoverVehicle
from tesla_smart_charger.car.fleet_api import ApiCallCounter, StaticTokenSource, TeslaClient
from tesla_smart_charger.control.escalation import (
    RELAY_RETRY_SECS,
    RESUME_AFTER_SECS,
    Action,
    Alert,
    AmpsOutcome,
    ChargeStop,
    ControllerTarget,
    CutAccepted,
    CutErrored,
    EscalationConfig,
    EscalationState,
    Input,
    Measured,
    RelayOutcome,
    Resume,
    RetryCut,
    RoadStatus,
    SetAmps,
    StopOutcome,
    SwitchRelay,
    Tick,
    next_deadline,
    step,
)
from tesla_smart_charger.errors import ChargerError, RelayError
from tesla_smart_charger.runtime.alerts import AlertSender
from tesla_smart_charger.shelly.relay import ShellyRelay
from tesla_smart_charger.simulator.ble import SimulatedBleBridge
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.proxy import SimulatedProxy
from tesla_smart_charger.simulator.relay import SimulatedRelay
from tests.helpers.e2e import WAIT_SECS
from tests.helpers.webhook import Receiver

CFG = EscalationConfig(
    home_max_amps=30,
    charger_min_amps=6,
    car_settle_secs=8,
    escalate_after_secs=20,
    relay_configured=True,
)
NO_RELAY = replace(CFG, relay_configured=False)


def label(action: Action) -> str:
    """A short, readable name for an action in the tables below."""
    match action:
        case RetryCut(road=road, amps=amps):
            return f"retry:{road}:{amps:g}"
        case ChargeStop():
            return "charge_stop"
        case SwitchRelay(on=on):
            return f"relay:{'on' if on else 'off'}"
        case SetAmps(amps=amps):
            return f"set:{amps:g}"
        case Resume(restart_charging=restart):
            return f"resume:{restart}"
        case Alert(event=event):
            return f"alert:{event}"
    raise AssertionError(action)  # pragma: no cover


Script = list[tuple[float, Input]]


def run(
    script: Script, cfg: EscalationConfig = CFG, state: EscalationState | None = None
) -> tuple[EscalationState, list[tuple[float, list[str]]]]:
    """Feed the script; return the final state and every non-empty action list with its time."""
    state = state or EscalationState()
    out: list[tuple[float, list[str]]] = []
    for now, event in script:
        state, actions = step(state, event, now, cfg)
        if actions:
            out.append((now, [label(a) for a in actions]))
    return state, out


def over(
    t0: float, t1: float, every: float = 1.0, worst: float = 36.0, car: float | None = 16.0
) -> Script:
    """Readings from t0 to t1 inclusive."""
    n = round((t1 - t0) / every)
    return [(t0 + i * every, Measured(worst, car)) for i in range(n + 1)]


IGNORED_CUT: Script = [
    (0, Measured(36, 16)),
    (0, CutAccepted("ble", 16, 10)),
    *over(1, 8),
    (8, CutAccepted("cloud", 16, 10)),
    *over(9, 28),
    (28, StopOutcome(ok=True)),
    *over(29, 48),
    (48, RelayOutcome(on=False, ok=True)),
    *over(49, 49 + RESUME_AFTER_SECS, worst=20, car=0),
    (109, AmpsOutcome(ok=True)),
    (109, RelayOutcome(on=True, ok=True)),
]


@pytest.mark.parametrize(
    ("name", "script", "cfg", "expected", "level"),
    [
        (
            "car accepts and ignores every cut: other road, charge_stop, relay, back on",
            IGNORED_CUT,
            CFG,
            [
                (8, ["retry:cloud:10", "alert:cut_failed"]),
                (28, ["charge_stop", "alert:charge_stop"]),
                (48, ["relay:off", "alert:relay_off"]),
                (109, ["set:6"]),  # the safe current first; once it landed, the relay
                (109, ["relay:on", "alert:relay_on"]),
                (109, ["resume:True", "alert:resolved"]),
            ],
            "none",
        ),
        (
            "no relay: charge_stop is asked again, then resume once room lasts",
            [
                (0, Measured(36, 16)),
                (0, CutErrored("ble", 10, "BleUnavailable")),
                (0, CutErrored("cloud", 10, "TeslaTransientError")),
                *over(1, 40),
                *over(41, 41 + RESUME_AFTER_SECS, worst=22, car=0),
            ],
            NO_RELAY,
            [
                (0, ["retry:cloud:10", "alert:cut_failed"]),
                (20, ["charge_stop", "alert:charge_stop"]),
                (40, ["charge_stop"]),
                (101, ["set:6", "resume:True", "alert:resolved"]),
            ],
            "none",
        ),
        (
            "the retry on the other road lands: the episode ends, nothing escalates",
            [
                (0, Measured(36, 16)),
                (0, CutErrored("ble", 10, "BleUnavailable")),
                (0, CutAccepted("cloud", 16, 10)),
                *over(1, 60, car=10, worst=31),
            ],
            CFG,
            [(0, ["retry:cloud:10", "alert:cut_failed"])],
            "none",
        ),
        (
            "meter only: the expected drop does not show, a failed cut",
            [
                (0, Measured(36)),
                (0, CutAccepted("ble", 16, 10)),
                *over(1, 20, worst=35.5, car=None),
            ],
            CFG,
            [(8, ["retry:cloud:10", "alert:cut_failed"])],
            "none",
        ),
        (
            "meter only: the drop shows, the cut landed",
            [
                (0, Measured(36)),
                (0, CutAccepted("ble", 16, 10)),
                *over(1, 40, worst=32, car=None),
            ],
            CFG,
            [],
            "none",
        ),
        (
            "a failed cut with no overload ends by itself",
            [
                (0, Measured(29, 16)),
                (0, CutAccepted("ble", 16, 14)),
                *over(1, 40, worst=29, car=16),
            ],
            CFG,
            [(8, ["retry:cloud:14", "alert:cut_failed"])],
            "none",
        ),
        (
            "a raise is not a cut",
            [(0, Measured(36, 10)), (0, CutAccepted("ble", 10, 16)), *over(1, 40, car=10)],
            CFG,
            [],
            "none",
        ),
        (
            "the meter falls silent: deadlines still fire on the last reading",
            [
                (0, Measured(36, 16)),
                (0, CutErrored("ble", 10, "timeout")),
                (0, CutErrored("cloud", 10, "timeout")),
                (19, Tick()),
                (20, Tick()),
                (40, Tick()),
            ],
            CFG,
            [
                (0, ["retry:cloud:10", "alert:cut_failed"]),
                (20, ["charge_stop", "alert:charge_stop"]),
                (40, ["relay:off", "alert:relay_off"]),
            ],
            "relay_off",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_escalation_table(
    name: str,
    script: Script,
    cfg: EscalationConfig,
    expected: list[tuple[float, list[str]]],
    level: str,
) -> None:
    state, actions = run(script, cfg)
    assert actions == expected, name
    assert state.level == level


def test_relay_that_does_not_switch_is_asked_again_and_health_stays_bad() -> None:
    state, _ = run(IGNORED_CUT[: IGNORED_CUT.index((48, RelayOutcome(on=False, ok=True)))])
    assert state.level == "relay_off"
    assert state.active
    state, actions = step(state, RelayOutcome(on=False, ok=False, error="timeout"), 48.5, CFG)
    assert [label(a) for a in actions] == ["alert:relay_failed"]
    state, actions = step(state, Measured(36, 16), 52, CFG)
    assert actions == ()
    state, actions = step(state, Measured(36, 16), 53, CFG)
    assert [label(a) for a in actions] == ["relay:off"]
    assert next_deadline(state, CFG) == 53 + 5


def test_room_must_last_a_full_minute_before_the_relay_goes_on() -> None:
    state, _ = run(IGNORED_CUT[: IGNORED_CUT.index((48, RelayOutcome(on=False, ok=True))) + 1])
    script: Script = [
        *over(49, 90, worst=20, car=0),
        (91, Measured(29, 0)),  # no room for 6 A: the minute starts again
        *over(92, 92 + RESUME_AFTER_SECS - 1, worst=20, car=0),
    ]
    state, timeline = run(script, state=state)
    assert timeline == []
    state, actions = step(state, Measured(20, 0), 92 + RESUME_AFTER_SECS, CFG)
    assert [label(a) for a in actions] == ["set:6"]
    state, actions = step(state, AmpsOutcome(ok=True), 92 + RESUME_AFTER_SECS, CFG)
    assert [label(a) for a in actions] == ["relay:on", "alert:relay_on"]


def test_no_road_keeps_the_relay_off_until_the_safe_current_lands() -> None:
    """Room for chargerMinAmps alone does not power a car no road can reach: it would come back
    at its old 16 A and overload the house again (the relay went on and off every minute)."""
    state, _ = run(IGNORED_CUT[: IGNORED_CUT.index((48, RelayOutcome(on=False, ok=True))) + 1])
    state, _ = step(state, RoadStatus(up=False, retry_at=48.0), 48.5, CFG)
    # The old code switched the relay on at 109; it must stay off for as long as no road works.
    state, timeline = run(over(49, 109, worst=20, car=0), state=state)
    assert timeline == [(109, ["set:6"])]  # the safe current, asked once room has lasted
    state, actions = step(state, AmpsOutcome(ok=False, error="HTTP 500", retry_at=125), 109, CFG)
    assert actions == ()
    assert state.level == "relay_off"
    # Asked again when the road's policy allows it (125 s), never switched on meanwhile.
    state, timeline = run(over(110, 125, worst=20, car=0), state=state)
    assert timeline == [(125, ["set:6"])]
    state, _ = step(state, AmpsOutcome(ok=False, error="HTTP 500", retry_at=250), 125, CFG)
    state, timeline = run(over(126, 249, worst=20, car=0), state=state)
    assert timeline == []
    assert state.level == "relay_off"
    assert state.active
    state, timeline = run(over(250, 250, worst=20, car=0), state=state)
    assert timeline == [(250, ["set:6"])]
    # The road is back: the car takes its minimum current first, then the circuit is powered.
    state, actions = step(state, AmpsOutcome(ok=True), 250.5, CFG)
    assert [label(a) for a in actions] == ["relay:on", "alert:relay_on"]
    state, actions = step(state, RelayOutcome(on=True, ok=True), 251, CFG)
    assert [label(a) for a in actions] == ["resume:True", "alert:resolved"]
    assert not state.active
    assert state.road_up


def test_no_road_but_the_house_leaves_room_for_the_cars_last_draw() -> None:
    """The house alone leaves room for what the car drew last: the relay goes on without a road
    (the car cannot overload the house even at its old current), asked again until it switches."""
    state, _ = run(IGNORED_CUT[: IGNORED_CUT.index((48, RelayOutcome(on=False, ok=True))) + 1])
    assert state.draw == 16  # the charger channel, while the circuit was powered
    state, _ = step(state, RoadStatus(up=False, retry_at=1e9), 48.5, CFG)
    state, timeline = run(over(49, 120, worst=20, car=0), state=state)
    assert timeline == []  # room for 6 A, not for the 16 A the car drew
    state, timeline = run(over(121, 121 + RESUME_AFTER_SECS, worst=14, car=0), state=state)
    assert timeline == [(181, ["relay:on", "alert:relay_on"])]  # room for 16 A, for a minute
    state, actions = step(state, RelayOutcome(on=True, ok=False, error="unreachable"), 181.5, CFG)
    assert [label(a) for a in actions] == ["alert:relay_failed"]
    state, actions = step(state, Measured(14, 0), 181 + RELAY_RETRY_SECS, CFG)
    assert [label(a) for a in actions] == ["relay:on"]  # asked again, no second alert
    state, actions = step(state, RelayOutcome(on=True, ok=True), 187, CFG)
    assert [label(a) for a in actions] == ["resume:True", "alert:resolved"]
    assert not state.active
    assert not state.road_up


def test_meter_only_the_cars_draw_is_the_drop_the_relay_showed() -> None:
    """No charger channel: the car's last draw is what the supply lost when the relay cut it,
    taken from the lowest reading of the first seconds (one read before the switch shows none)."""
    script: Script = [
        (0, RoadStatus(up=False, retry_at=1e9)),
        *over(0, 5, worst=36, car=None),
        (5, RelayOutcome(on=False, ok=True)),
        (6, Measured(36, None)),  # read just before the contact opened
        *over(7, 12, worst=20, car=None),
    ]
    cfg = replace(CFG, escalate_after_secs=5)
    state, timeline = run(script, cfg)
    assert timeline == [(5, ["relay:off", "alert:relay_off"])]
    assert state.draw == 16
    # Past car_settle_secs the house drops to 18 A: room for 12 A, not for 16 A.
    state, timeline = run(over(14, 200, worst=18, car=None), cfg, state=state)
    assert timeline == []
    assert state.draw == 16
    # At 14 A the house leaves room for 16 A: the circuit goes on once that has lasted.
    state, timeline = run(over(201, 261, worst=14, car=None), cfg, state=state)
    assert timeline == [(261, ["relay:on", "alert:relay_on"])]


def test_overload_with_no_road_from_the_start_is_a_failed_cut() -> None:
    """Proxy refused, answering 500, or the token endpoint failing from start-up: the controller
    never sends a cut, yet the overload goes to the relay after escalateAfterSecs."""
    script: Script = [
        (0, Measured(20, None)),
        (1, RoadStatus(up=False, retry_at=2)),  # the first look at the car failed
        *over(2, 30, worst=36, car=None),
    ]
    state, timeline = run([*script[:23], (22.5, RelayOutcome(on=False, ok=True)), *script[23:]])
    assert timeline == [(22, ["relay:off", "alert:relay_off"])]  # no charge_stop: no road
    assert state.level == "relay_off"
    # Without a relay nothing can stop the car: said once, no charge_stop (it would stop the car
    # once a road is back, where the controller's cut is enough), no deadline left to spin on.
    state, timeline = run(script, NO_RELAY)
    assert timeline == [(22, ["alert:cut_failed"])]
    assert state.level == "none"
    assert next_deadline(state, NO_RELAY) is None
    state, _ = step(state, RoadStatus(up=True), 31, NO_RELAY)
    assert not state.cut_failed  # the road is back: the controller's cut is judged as any


def test_a_short_overload_without_a_road_ends_by_itself() -> None:
    script: Script = [
        (0, RoadStatus(up=False)),
        *over(1, 10, worst=36, car=None),
        *over(11, 40, worst=25, car=None),
    ]
    state, timeline = run(script)
    assert timeline == []
    assert not state.cut_failed


def test_a_road_back_hands_a_no_road_overload_to_the_controller() -> None:
    state, _ = run([(0, RoadStatus(up=False)), *over(1, 10, worst=36, car=None)])
    assert state.cut_failed
    state, _ = step(state, RoadStatus(up=True), 10.5, CFG)
    assert not state.cut_failed
    # Its cut is then judged as any other: accepted and followed, nothing escalates.
    state, timeline = run(
        [(11, CutAccepted("cloud", 16, 10)), *over(12, 60, worst=29.5, car=10)], state=state
    )
    assert timeline == []
    assert not state.active


@pytest.mark.parametrize(
    ("outcome", "again_at"),
    [
        (AmpsOutcome(ok=False, error="HTTP 500", retry_at=117), 117),
        (AmpsOutcome(ok=False, error="vehicle unavailable", answer="asleep"), 169),
        (AmpsOutcome(ok=False, error="no", answer="refused"), 169),
    ],
    ids=["road failing: its policy", "car asleep: 1 min", "car refused: 1 min"],
)
def test_the_safe_current_is_asked_again_at_the_pace_of_what_failed(
    outcome: AmpsOutcome, again_at: float
) -> None:
    """A sleeping or refusing car answers at once and its road's policy says "now": asking
    every RELAY_RETRY_SECS would be a command to the car every 5 s while the relay is off."""
    state, _ = run(IGNORED_CUT[: IGNORED_CUT.index((48, RelayOutcome(on=False, ok=True))) + 1])
    state, timeline = run(over(49, 109, worst=20, car=0), state=state)
    assert timeline == [(109, ["set:6"])]
    state, _ = step(state, outcome, 109, CFG)
    state, timeline = run(over(110, again_at, worst=20, car=0), state=state)
    assert timeline == [(again_at, ["set:6"])]
    assert state.level == "relay_off"


def test_a_retry_never_sends_more_than_the_controllers_newest_target() -> None:
    """The controller cut to 9 A, then (its cut still settling) to 6 A: the retry of the 9 A cut
    must not undo the 6 A one (it sent 9 A right after the controller's 6 A)."""
    script: Script = [
        (0, ControllerTarget(9)),
        (0, Measured(36, 16)),
        (0, CutAccepted("cloud", 16, 9)),
        *over(1, 7, worst=36, car=16),
        (8, ControllerTarget(6)),  # the controller's newer cut, decided on the same reading
        (8, Measured(36, 16)),
    ]
    _, timeline = run(script)
    assert timeline == [(8, ["retry:ble:6", "alert:cut_failed"])]
    # An errored cut too, and the safe current before the relay goes on.
    _, timeline = run([(0, ControllerTarget(7)), (0, CutErrored("ble", 10, "timeout"))])
    assert timeline == [(0, ["retry:cloud:7", "alert:cut_failed"])]
    # With no target known (or a higher one) the cut itself is retried.
    _, timeline = run([(0, ControllerTarget(None)), (0, CutErrored("ble", 10, "timeout"))])
    assert timeline == [(0, ["retry:cloud:10", "alert:cut_failed"])]


def test_charge_stop_failure_is_alerted_and_the_relay_follows() -> None:
    state, _ = run(IGNORED_CUT[: IGNORED_CUT.index((28, StopOutcome(ok=True)))])
    state, actions = step(state, StopOutcome(ok=False, error="both roads down"), 28.5, CFG)
    assert [label(a) for a in actions] == ["alert:charge_stop_failed"]
    state, actions = step(state, Measured(36, 16), 48, CFG)
    assert [label(a) for a in actions] == ["relay:off", "alert:relay_off"]


def test_next_deadline_follows_the_episode() -> None:
    state = EscalationState()
    assert next_deadline(state, CFG) is None
    state, _ = step(state, Measured(36, 16), 0, CFG)
    state, _ = step(state, CutErrored("ble", 10, "x"), 3, CFG)
    assert state.cut_failed
    assert next_deadline(state, CFG) == 23
    state, _ = step(state, Measured(36, 16), 23, CFG)
    assert state.level == "charge_stop"
    assert next_deadline(state, CFG) == 43


def test_commands_during_an_escalation_are_not_tracked_as_cuts() -> None:
    state, _ = run(IGNORED_CUT[: IGNORED_CUT.index((28, StopOutcome(ok=True)))])
    assert state.level == "charge_stop"
    after, actions = step(state, CutAccepted("ble", 16, 6), 30, CFG)
    assert after == state
    assert actions == ()
    after, actions = step(state, CutErrored("ble", 6, "x"), 30, CFG)
    assert after == state
    assert actions == ()


# --- the state machine driving real roads, a real relay and a real webhook --------------------


@dataclass
class Shell:
    """A minimal imperative shell, as the charge service will run the escalation's actions."""

    vehicle: FailoverVehicle
    relay: ShellyRelay
    alerts: AlertSender
    worst: float = 0.0
    setpoint: float = 16.0
    resumed: int = 0

    async def execute(self, actions: tuple[Action, ...]) -> list[Input]:
        outcomes: list[Input] = []
        for action in actions:
            match action:
                case RetryCut(road=road, amps=amps):
                    try:
                        await self.vehicle.on_road(road).set_charging_amps(int(amps))
                    except ChargerError as err:
                        outcomes.append(CutErrored(road, amps, str(err)))
                    else:
                        outcomes.append(CutAccepted(road, self.setpoint, amps))
                        self.setpoint = amps
                case ChargeStop():
                    try:
                        await self.vehicle.charge_stop()
                    except ChargerError as err:
                        outcomes.append(StopOutcome(ok=False, error=str(err)))
                    else:
                        outcomes.append(StopOutcome(ok=True))
                case SwitchRelay(on=on):
                    try:
                        await self.relay.switch(on)
                    except RelayError as err:
                        outcomes.append(RelayOutcome(on=on, ok=False, error=str(err)))
                    else:
                        outcomes.append(RelayOutcome(on=on, ok=True))
                case SetAmps(amps=amps):
                    try:
                        await self.vehicle.set_charging_amps(int(amps))
                    except ChargerError as err:
                        outcomes.append(AmpsOutcome(ok=False, error=str(err)))
                    else:
                        self.setpoint = amps
                        outcomes.append(AmpsOutcome(ok=True))
                case Resume():
                    self.resumed += 1
                case Alert(event=event, message=message):
                    self.alerts.send(event, message, house_amps=[self.worst], limit=30)
        return outcomes


async def test_ignored_cut_escalates_over_real_roads_relay_and_webhook(
    session: aiohttp.ClientSession,
) -> None:
    now = [0.0]
    car = CarModel(request_amps=16, ramp_delay=0.0, fault="ignores_commands")
    bridge = SimulatedBleBridge(car, clock=lambda: now[0])
    proxy = SimulatedProxy(car, clock=lambda: now[0])
    relay_sim = SimulatedRelay(2, car=car, clock=lambda: now[0])
    receiver = Receiver()
    ble_url, cloud_url, relay_url = (
        await bridge.start(),
        await proxy.start(),
        await relay_sim.start(),
    )
    await receiver.start()
    alerts = AlertSender(session, receiver.url, retry_wait=wait_none())
    delivery = asyncio.create_task(alerts.run())
    try:
        cloud = TeslaClient(
            session,
            cloud_url,
            car.vin,
            StaticTokenSource(SecretStr("a.b.c")),
            ApiCallCounter(),
            retry_wait=wait_none(),
        )
        vehicle = FailoverVehicle(
            [("ble", BleVehicle(session, ble_url, car.vin)), ("cloud", cloud)]
        )
        shell = Shell(vehicle, ShellyRelay(relay_url, session), alerts)
        state = EscalationState()
        active_at: list[float] = []

        async def feed(event: Input) -> None:
            nonlocal state
            state, actions = step(state, event, now[0], CFG)
            for outcome in await shell.execute(actions):
                await feed(outcome)

        def reading() -> Measured:
            shell.worst = 20.0 + car.current_draw(now[0])  # the house draws 20 A besides the car
            return Measured(shell.worst, car.current_draw(now[0]))

        await feed(reading())  # 36 A on a 30 A supply: the controller cuts to 10 A
        await vehicle.set_charging_amps(10)
        await feed(CutAccepted("ble", 16, 10))
        shell.setpoint = 10
        for second in range(1, 130):
            now[0] = float(second)
            await feed(reading())
            if state.active:
                active_at.append(now[0])
        async with asyncio.timeout(WAIT_SECS):
            await alerts.drain()
    finally:
        delivery.cancel()
        with suppress(asyncio.CancelledError):
            await delivery
        for server in (bridge, proxy, relay_sim, receiver):
            await server.stop()

    assert [c[1:] for c in bridge.commands] == [
        ("set_charging_amps", {"charging_amps": 10}),
        ("charge_stop", {}),
        ("set_charging_amps", {"charging_amps": 6}),
    ]
    assert [c[1:] for c in proxy.commands] == [("set_charging_amps", {"charging_amps": 10})]
    assert relay_sim.switches == [(0, False), (0, True)]
    assert [b["event"] for b in receiver.bodies] == [
        "cut_failed",
        "charge_stop",
        "relay_off",
        "relay_on",
        "resolved",
    ]
    assert active_at[0] == 28  # escalateAfterSecs after the failed cut at 8 s
    assert active_at[-1] == 108  # relay back on once room lasted 60 s (from 49 s)
    assert shell.resumed == 1
    assert car.wakes == 0
    assert bridge.wakeup_requests == 0
    assert proxy.billing.wake == 0


def test_resume_after_charge_stop_without_a_road_skips_setting_amps() -> None:
    script: Script = [
        (0, Measured(36, 16)),
        (0, CutErrored("ble", 10, "BleUnavailable")),
        (0, CutErrored("cloud", 10, "TeslaTransientError")),
        *over(1, 20),
        (20.5, RoadStatus(up=False)),
        *over(21, 21 + RESUME_AFTER_SECS, worst=22, car=0),
    ]
    state, timeline = run(script, NO_RELAY)
    assert timeline[-1] == (81, ["resume:True", "alert:resolved"])
    assert not state.active


def test_overload_after_resuming_without_a_road_is_a_failed_cut_of_its_own() -> None:
    """Relay back on while no road reaches the car: the next overload escalates again.

    The controller sends no cut then (Tesla's cloud calls the charging car "unavailable", so it
    takes it for asleep); without this the overload would run until the road is back.
    """
    state, _ = run(IGNORED_CUT)
    state, _ = step(state, RoadStatus(up=False), 109.5, CFG)  # the road failed again
    assert not state.active
    state, timeline = run(
        [*over(110, 130, worst=36, car=16), (130.5, RelayOutcome(on=False, ok=True))], state=state
    )
    assert timeline == [(130, ["relay:off", "alert:relay_off"])]


def test_a_road_back_after_resuming_leaves_overloads_to_the_controller() -> None:
    state, _ = run(IGNORED_CUT)
    state, _ = step(state, RoadStatus(up=True), 110, CFG)
    state, timeline = run(over(111, 160, worst=36, car=16), state=state)
    assert timeline == []
    assert not state.cut_failed
