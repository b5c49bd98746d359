"""The escalation in the controller's loop, decided by the pure core: no car, no relay, no clock.

Each test drives `supervisor.react` with the outcomes a shell would report and checks the
effects it asks for, in order, and what it writes into the controller's state.
"""

from __future__ import annotations

from dataclasses import replace

from tesla_smart_charger import control as core
from tesla_smart_charger.control import escalation as esc
from tesla_smart_charger.control import supervisor as sup
from tesla_smart_charger.control.events import Reading
from tesla_smart_charger.control.models import (
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)

CFG = esc.EscalationConfig(home_max_amps=30, charger_min_amps=6, escalate_after_secs=5)
RELAY = replace(CFG, relay_configured=True)


def _reading(worst: float, at: float = 0.0) -> sup.Handled:
    return sup.Handled(Reading(MeterReading((worst,), (230.0,), None, True, at)))


def _controller(
    setpoint: int, before: int | None, vehicle: VehicleSnapshot | None = None
) -> core.ControllerState:
    return replace(
        core.initial_state(0.0),
        setpoint=setpoint,
        target=setpoint,
        command_from=before,
        vehicle=vehicle,
        first_look_done=vehicle is not None,
    )


def _drive(
    sv: sup.Supervision,
    ctl: core.ControllerState,
    first: sup.SupervisorEvent,
    now: float,
    results: dict[type, sup.SupervisorEvent],
    *,
    cfg: esc.EscalationConfig = CFG,
) -> tuple[sup.Supervision, core.ControllerState, list[sup.Effect]]:
    """React to `first`, answer each effect from `results` (by its type; alerts: Done)."""
    reaction = sup.react(sv, ctl, first, now, cfg)
    effects: list[sup.Effect] = []
    while reaction.effect is not None:
        effects.append(reaction.effect)
        result = results.get(type(reaction.effect), sup.Done())
        reaction = sup.react(reaction.supervision, reaction.controller, result, now, cfg)
    return reaction.supervision, reaction.controller, effects


def test_an_ignored_cut_is_retried_on_the_other_road_and_becomes_the_controllers_setpoint() -> None:
    """The controller cut 16 -> 9 A over BLE; 9 s later the meter still shows the overload: the
    core asks for the cut on the cloud, then the alert, and the retried 9 A is the controller's
    setpoint (one writer), with no I/O of its own."""
    ctl = _controller(9, 16)
    sv = sup.react(
        sup.Supervision(),
        ctl,
        sup.CommandAnswered(
            core.SetAmps(9, "cut"), core.CommandDone("set_charging_amps", 9), "ble"
        ),
        0.0,
        CFG,
    ).supervision
    assert sv.noted == (esc.RoadStatus(up=True), esc.CutAccepted("ble", 16.0, 9.0))
    sv, ctl, effects = _drive(sv, ctl, _reading(36.0), 0.0, {})
    assert effects == []
    assert sv.escalation.pending is not None
    ok: dict[type, sup.SupervisorEvent] = {sup.SendCut: sup.CommandResult("ok")}
    sv, after, effects = _drive(sv, ctl, _reading(36.0, 9.0), 9.0, ok)
    assert [type(e) for e in effects] == [sup.SendCut, sup.SendAlert]
    assert effects[0] == sup.SendCut("cloud", 9)
    alert = effects[1]
    assert isinstance(alert, sup.SendAlert)
    assert (alert.event, alert.severity, alert.house_amps) == ("cut_failed", "warning", (36.0,))
    assert sv.escalation.cut_failed
    assert (after.setpoint, after.target, after.command_from, after.commanded_at) == (9, 9, 9, 9.0)
    # The retry was accepted: a pending cut on the cloud waits for the meter again.
    assert sv.escalation.pending is not None
    assert sv.escalation.pending.road == "cloud"
    assert not sv.todo
    assert not sv.agenda
    assert sv.doing is None


def test_a_failed_controller_call_marks_the_road_down_until_its_policy_allows() -> None:
    ctl = _controller(6, 16)
    down = core.VehicleUnavailable("transient", "HTTP 500", retry_after=8.0, command=True)
    sv = sup.react(
        sup.Supervision(), ctl, sup.CommandAnswered(core.SetAmps(6, "cut"), down, "cloud"), 2.0, CFG
    ).supervision
    assert sv.noted == (
        esc.RoadStatus(up=False, retry_at=10.0),
        esc.CutErrored("cloud", 6.0, "HTTP 500"),
    )
    # A look that finds the car asleep proves nothing about the road; a refusal proves it up.
    asleep = core.VehicleUpdate(VehicleSnapshot(VehicleState.ASLEEP, None, 0.0))
    look = sup.CommandAnswered(core.RefreshVehicle("look"), asleep, "cloud")
    assert sup.react(sup.Supervision(), ctl, look, 0.0, CFG).supervision.noted == ()
    refused = core.VehicleUnavailable("refused", "no", command=True)
    raise_ = sup.CommandAnswered(core.SetAmps(20, "room"), refused, "cloud")
    assert sup.react(sup.Supervision(), ctl, raise_, 0.0, CFG).supervision.noted == (
        esc.RoadStatus(up=True),
    )


def test_resuming_without_a_road_sends_no_charge_start_but_looks_at_the_car_again() -> None:
    """charge_stop in force, room for a minute, no road: the car is not asked to start (nothing
    could carry it), and a car the controller took for asleep is looked at on the next reading."""
    stopped = replace(
        esc.EscalationState(),
        level="charge_stop",
        first_failed_at=0.0,
        stop_at=0.0,
        room_since=10.0,
        road_up=False,
    )
    ctl = _controller(6, None, vehicle=VehicleSnapshot(VehicleState.ASLEEP, None, 0.0))
    sv, after, effects = _drive(sup.Supervision(escalation=stopped), ctl, _reading(20.0), 70.0, {})
    assert [type(e) for e in effects] == [sup.SendAlert]
    assert not sv.escalation.active
    assert after.vehicle is None
    assert not after.first_look_done
    # With a road the safe current goes first, then the start.
    up = sup.Supervision(escalation=replace(stopped, road_up=True))
    sv, after, effects = _drive(
        up, ctl, _reading(20.0), 70.0, {sup.SendAmps: sup.CommandResult("ok")}
    )
    assert effects[:2] == [sup.SendAmps(6), sup.RestartCharging()]
    assert after.setpoint == 6


def test_the_safe_current_refused_waits_for_the_car_not_the_road() -> None:
    """With the relay off and a minute of room the safe current goes before the relay; a
    refusal is asked again CAR_ANSWER_RETRY_SECS later, and the relay stays off."""
    off = replace(
        esc.EscalationState(),
        level="relay_off",
        relay_off_confirmed=True,
        room_since=0.0,
        road_up=False,
    )
    refused: dict[type, sup.SupervisorEvent] = {sup.SendAmps: sup.CommandResult("refused", "no")}
    sv, ctl, effects = _drive(
        sup.Supervision(escalation=off),
        _controller(16, None),
        _reading(20.0),
        100.0,
        refused,
        cfg=RELAY,
    )
    assert effects == [sup.SendAmps(6)]
    assert sv.escalation.road_retry_at == 100.0 + esc.CAR_ANSWER_RETRY_SECS
    assert ctl.setpoint == 16  # not taken: the controller's setpoint stays
    assert sv.escalation.level == "relay_off"


def test_a_held_relay_is_said_in_the_relay_on_alert() -> None:
    """Another car keeps the shared circuit off: no relay fault, and the alert says why."""
    sv = replace(
        sup.Supervision(),
        doing=esc.SwitchRelay(on=True),
        todo=(esc.Alert("relay_on", "charger circuit on"),),
    )
    held = sup.RelayResult("held", "the charger circuit stays off until Blue has room too")
    reaction = sup.react(sv, _controller(6, None), held, 0.0, RELAY)
    alert = reaction.effect
    assert isinstance(alert, sup.SendAlert)
    assert alert.severity == "info"
    assert alert.message.endswith("but the charger circuit stays off until Blue has room too")
    assert reaction.supervision.outcomes == ()  # no RelayOutcome: not a failure


def test_raises_are_held_while_escalated_and_cuts_never() -> None:
    escalated = sup.Supervision(escalation=replace(esc.EscalationState(), level="relay_off"))
    ctl = _controller(10, 8)
    held = sup.held(escalated, core.SetAmps(12, "room"), ctl)
    assert isinstance(held, core.VehicleUnavailable)
    assert (held.kind, held.command) == ("refused", True)
    assert sup.held(escalated, core.SetAmps(6, "cut"), ctl) is None
    assert sup.held(sup.Supervision(), core.SetAmps(12, "room"), ctl) is None


def test_steps_count_each_level_reached() -> None:
    ctl = _controller(6, 16)
    failed = sup.CommandAnswered(
        core.SetAmps(6, "cut"),
        core.VehicleUnavailable("asleep", "unavailable", command=True),
        "cloud",
    )
    sv = sup.react(sup.Supervision(), ctl, failed, 0.0, CFG).supervision
    sv, ctl, _ = _drive(
        sv, ctl, _reading(36.0), 0.0, {sup.SendCut: sup.CommandResult("error", "x")}
    )
    sv, ctl, effects = _drive(sv, ctl, _reading(36.0), 5.0, {sup.SendStop: sup.CommandResult("ok")})
    assert effects[0] == sup.SendStop()
    assert sv.steps == {"none": 0, "charge_stop": 1, "relay_off": 0}
    sv, ctl, effects = _drive(sv, ctl, _reading(36.0), 6.0, {})
    assert effects == []  # still charge_stop: counted once per episode
    assert sv.steps["charge_stop"] == 1
