"""The charging decision: a pure function of (state, event, now). No I/O, no clock.

`decide()` takes the controller's state, one event and the current monotonic time, and returns the
new state plus the actions to carry out (commands, vehicle refreshes). The imperative shell in
`service.py` executes the actions and feeds their outcomes back in as events, so the same code runs
in the daemon, in tests and in the benchmark's virtual time.

Safety is asymmetric: a lower setpoint is sent on the first event that needs it; a higher one only
after the room has lasted `sleep_secs`. When the meter goes silent the car drops to the minimum.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from tesla_smart_charger.config import Settings
from tesla_smart_charger.events import (
    AuthLost,
    CarLinkBack,
    DriverLimit,
    MeterFailed,
    Overload,
    Reading,
    TokenRefreshed,
)
from tesla_smart_charger.models import MeterReading, VehicleSnapshot, VehicleState

Mode = Literal["push", "measured"]

# How long a look at the car counts as current for push-mode decisions (a burst of /overload
# calls must not become a burst of billed vehicle_data calls).
VEHICLE_FRESH_SECS = 15.0
# An overload with the car not known to be charging triggers a look at the car at most this often,
# and only when the supply has risen by JUMP_AMPS since the last look (the car may have started).
UNEXPLAINED_MIN_INTERVAL = 10.0
JUMP_AMPS = 4.0
# After a command the car is looked at once (to confirm it followed) at most this often, and
# only when the meter does not already confirm it: the house estimate with the car at its new
# setpoint must match the one taken when the command went out to within this many amps.
VERIFY_INTERVAL = 1800.0
VERIFY_TOLERANCE = 2.0
# A cut to the driver's ceiling that did not land is tried again this long after the last one.
LIMIT_RETRY_SECS = 5.0

# When the meter cannot vouch for a command at once (the house changed meanwhile, e.g. an
# appliance's inrush that triggered the cut), the billed look waits this long once: a later
# command the meter vouches for shows the car follows us, and makes the look unnecessary.
VERIFY_RETRY_SECS = 60.0
# In fail-safe the meter cannot tell us the car started charging: look at it this often.
FAILSAFE_LOOK_SECS = 300.0


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The settings the decision needs, copied out so the core does not depend on I/O types."""

    mode: Mode
    home_max_amps: float
    charger_min_amps: int
    charger_max_amps: int
    down_step: float
    up_step: float
    sleep_secs: float
    safety_margin: float = 1.0
    stale_secs: float = 10.0
    settle_secs: float = 8.0
    vehicle_check_secs: float = 3600.0
    pause_when_overloaded: bool = False
    pause_after_secs: float = 120.0
    supply_phases: int = 1  # 0: as many as the meter reports (supplyPhases auto)
    charger_phase: int = 1
    charger_measured: bool = False

    @classmethod
    def from_settings(cls, s: Settings, *, measured: bool) -> ControlConfig:
        """Build from validated settings; amps become whole numbers the car accepts."""
        return cls(
            mode="measured" if measured else "push",
            home_max_amps=s.home_max_amps,
            charger_min_amps=math.ceil(s.charger_min_amps),
            charger_max_amps=math.floor(s.charger_max_amps),
            down_step=s.down_step_percentage,
            up_step=s.up_step_percentage,
            sleep_secs=s.sleep_time_secs,
            safety_margin=s.safety_margin_amps,
            stale_secs=s.energy_monitor_stale_secs,
            settle_secs=s.car_settle_secs,
            vehicle_check_secs=s.vehicle_check_secs,
            pause_when_overloaded=s.pause_when_overloaded,
            pause_after_secs=s.pause_after_secs,
            supply_phases=0 if s.supply_phases == "auto" else s.supply_phases,
            charger_phase=s.charger_phase,
            charger_measured=s.energy_monitor_charger_channel is not None,
        )

    @property
    def limit(self) -> float:
        """The most the worst phase may carry in measured mode."""
        return self.home_max_amps - self.safety_margin


# Timers compare float seconds; a deadline met to within this counts as met.
EPS = 1e-6
# Meters report to about 0.01 A; an excess smaller than that is noise, not a reason to cut.
METER_RESOLUTION = 0.01


# --- events produced by the shell (the queue's own events live in events.py) ---------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: the shell wakes the controller at `next_deadline()`."""


@dataclass(frozen=True, slots=True)
class VehicleUpdate:
    """A look at the car succeeded."""

    snapshot: VehicleSnapshot


@dataclass(frozen=True, slots=True)
class VehicleUnavailable:
    """A look at the car or a command failed; `kind` says how."""

    kind: Literal["asleep", "rate_limited", "auth", "token", "transient", "refused", "error"]
    detail: str
    retry_after: float = 0.0  # when the failing dependency may be tried again (its policy)
    command: bool = False  # the failure came from a command, not from a look at the car


@dataclass(frozen=True, slots=True)
class CommandDone:
    """The car accepted a command."""

    command: Literal["set_charging_amps", "charge_start", "charge_stop"]
    amps: int | None = None


ControllerEvent = (
    Overload
    | Reading
    | MeterFailed
    | TokenRefreshed
    | AuthLost
    | CarLinkBack
    | Tick
    | VehicleUpdate
    | VehicleUnavailable
    | CommandDone
    | DriverLimit
)


# --- actions for the shell ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetAmps:
    """Send `set_charging_amps`."""

    amps: int
    reason: str


@dataclass(frozen=True, slots=True)
class RefreshVehicle:
    """Look at the car (state, then charge_state if online). Never wakes it."""

    reason: str
    known_online: bool = False  # a command just succeeded: skip the state call


@dataclass(frozen=True, slots=True)
class StartCharging:
    """Send `charge_start` (only ever to a car that is online)."""

    reason: str


@dataclass(frozen=True, slots=True)
class StopCharging:
    """Send `charge_stop`."""

    reason: str


Action = SetAmps | RefreshVehicle | StartCharging | StopCharging


# --- state --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Everything the decision remembers between events."""

    started_at: float
    vehicle: VehicleSnapshot | None = None
    refresh_pending: bool = False
    overload_pending: bool = False
    setpoint: int | None = None  # amps the car is set to, as far as we know
    driver_amps: int | None = None  # the driver's own setting, restored when room allows
    # driver_amps was set by a DriverLimit (API, Home Assistant): kept until the driver
    # changes the setting in the app (the last writer wins), also in push mode
    driver_pinned: bool = False
    commanded_at: float | None = None
    command_from: int | None = None  # setpoint before the last command (settling estimate)
    house_at_command: tuple[float, ...] | None = None
    verify_at: float | None = None  # look at the car once the command has settled
    last_verify_at: float | None = None
    verify_look: bool = True  # False: only the meter checks this command (no billed look due)
    verify_retry: bool = False  # the billed look may wait VERIFY_RETRY_SECS once for the meter
    target: int | None = None
    reason: str = "starting"
    blocked_until: float = 0.0  # no car call before this (the failing dependency's policy)
    blocked_reason: str = ""  # why, in words: a rate limit, the car link, the token endpoint
    blocked_kind: str = ""  # the VehicleUnavailable kind that set blocked_until
    auth_ok: bool = True
    # push mode
    last_overload_at: float | None = None
    last_reduction_at: float | None = None
    last_change_at: float | None = None
    restore_pending: bool = False
    # measured mode
    reading: MeterReading | None = None
    last_valid_at: float | None = None
    failsafe: bool = False
    raise_since: float | None = None
    raise_floor: int | None = None
    unresolvable_since: float | None = None
    paused: bool = False
    room_since: float | None = None
    last_look_at: float | None = None
    supply_at_look: float | None = None
    last_unexplained_at: float | None = None
    first_look_done: bool = False
    # The one car call the shell is awaiting ("" when none): "look", "set_charging_amps",
    # "charge_start" or "charge_stop". While it runs, events are still decided but no further
    # action is emitted; `act_after_call` says one was wanted, so the outcome re-decides.
    call_in_flight: str = ""
    act_after_call: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The new state and what to do now."""

    state: ControllerState
    actions: tuple[Action, ...] = field(default_factory=tuple)


_STATE_FIELDS = tuple(f.name for f in fields(ControllerState))
_state_values = operator.attrgetter(*_STATE_FIELDS)


def _evolve(state: ControllerState, changes: dict[str, Any]) -> ControllerState:
    """`dataclasses.replace` for the once-a-second path, about twice as fast.

    Same result (unknown names still raise TypeError); it skips replace's per-field checks,
    which cost more than the copy itself on a ~30-field state.
    """
    values = dict(zip(_STATE_FIELDS, _state_values(state), strict=True))
    values.update(changes)
    return ControllerState(**values)


def initial_state(
    now: float,
    *,
    setpoint: int | None = None,
    driver_amps: int | None = None,
    driver_pinned: bool = False,
) -> ControllerState:
    """State at start-up: fail-safe timer running from now.

    `setpoint` and `driver_amps` come from the state file of the previous run, so a restart
    while the car is throttled does not mistake our throttled value for the driver's setting.
    """
    return ControllerState(
        started_at=now,
        setpoint=setpoint,
        driver_amps=driver_amps,
        driver_pinned=driver_pinned and driver_amps is not None,
    )


# --- helpers ------------------------------------------------------------------------------


def _charging(state: ControllerState) -> bool:
    return state.vehicle is not None and state.vehicle.charging


def _settling(state: ControllerState, cfg: ControlConfig, now: float) -> bool:
    # A set_charging_amps still in flight has not landed: the car is somewhere between the
    # old and the new value, so readings are judged as during a ramp (never as already done).
    return state.commanded_at is not None and (
        state.call_in_flight == "set_charging_amps" or now - state.commanded_at < cfg.settle_secs
    )


def _vehicle_reason(vehicle: VehicleSnapshot) -> str:
    if vehicle.state is not VehicleState.ONLINE:
        return f"car {vehicle.state.value}: nothing sent (never woken)"
    charging_state = vehicle.charge.charging_state if vehicle.charge else "unknown"
    return f"car not charging ({charging_state}): nothing sent"


def _set(state: ControllerState, amps: int, reason: str, now: float) -> Decision:
    """Record and emit a setpoint command."""
    new = replace(
        state,
        command_from=state.setpoint,
        setpoint=amps,
        commanded_at=now,
        last_change_at=now,
        target=amps,
        reason=reason,
        raise_since=None,
        raise_floor=None,
    )
    return Decision(new, (SetAmps(amps, reason),))


def next_deadline(state: ControllerState, cfg: ControlConfig) -> float | None:
    """When the controller wants a Tick even if no event arrives."""
    if state.call_in_flight:
        # Nothing can be sent until the call's outcome arrives (which wakes the shell);
        # only the fail-safe transition is due on time.
        if cfg.mode == "push" or state.failsafe:
            return None
        last = state.last_valid_at if state.last_valid_at is not None else state.started_at
        return last + cfg.stale_secs
    deadlines: list[float] = []
    asleep = state.vehicle is not None and state.vehicle.state is not VehicleState.ONLINE
    if cfg.mode == "push":
        if (
            state.driver_amps is not None
            and state.setpoint is not None
            and not asleep
            and not (state.driver_pinned and state.setpoint >= _limit(state, cfg))
        ):
            quiet_from = max(
                t
                for t in (state.last_overload_at, state.last_change_at, state.started_at)
                if t is not None
            )
            deadlines.append(max(quiet_from + cfg.sleep_secs, state.blocked_until))
        if state.overload_pending and not state.refresh_pending:
            deadlines.append(state.blocked_until)
    else:
        last = state.last_valid_at if state.last_valid_at is not None else state.started_at
        if not state.failsafe:
            deadlines.append(last + cfg.stale_secs)
        if _charging(state) and state.last_look_at is not None and not state.refresh_pending:
            deadlines.append(state.last_look_at + cfg.vehicle_check_secs)
        if state.failsafe and state.vehicle is not None and not state.refresh_pending:
            deadlines.append(state.vehicle.at + FAILSAFE_LOOK_SECS)
    if state.verify_at is not None and not state.refresh_pending and cfg.mode == "push":
        deadlines.append(state.verify_at)
    if _over_limit(state, cfg) and not state.refresh_pending:
        # a cut to the driver's ceiling held back by a wait, or retried after a failure
        deadlines.append(max(state.blocked_until, (state.last_change_at or 0.0) + LIMIT_RETRY_SECS))
    if not deadlines:
        return None
    # Nothing can be sent while rate limited, so there is no point waking before that ends.
    return max(min(deadlines), state.blocked_until)


# --- the decision -------------------------------------------------------------------------


_OUTCOMES = (VehicleUpdate, VehicleUnavailable, CommandDone)


def decide(
    state: ControllerState, event: ControllerEvent, now: float, cfg: ControlConfig
) -> Decision:
    """Return the new state and the actions for one event at monotonic time `now`.

    At most one car call is in flight: the shell runs it while events keep coming and marks it
    with `call_started()`. Until its outcome (VehicleUpdate, VehicleUnavailable, CommandDone)
    arrives, an event is still decided (readings, fail-safe, overloads are noted) but an action
    it wants is held back; the outcome then decides again on the newest state, so nothing is
    lost.
    """
    if isinstance(event, _OUTCOMES):
        wanted = state.act_after_call
        state = replace(state, call_in_flight="", act_after_call=False)
        decision = _decide(state, event, now, cfg)
        if wanted and not decision.actions:
            decision = _after_call(decision.state, now, cfg)
    elif state.call_in_flight:
        decision = _decide(state, event, now, cfg)
        if decision.actions:
            decision = Decision(_hold_actions(state, decision.state, event, cfg))
    else:
        decision = _decide(state, event, now, cfg)
    return decision


def call_started(state: ControllerState, action: Action) -> ControllerState:
    """The shell started `action` as the one car call in flight; its outcome event ends it."""
    call = (
        "look"
        if isinstance(action, RefreshVehicle)
        else "set_charging_amps"
        if isinstance(action, SetAmps)
        else "charge_start"
        if isinstance(action, StartCharging)
        else "charge_stop"
    )
    return replace(state, call_in_flight=call)


def _hold_actions(
    state: ControllerState, wanted: ControllerState, event: ControllerEvent, cfg: ControlConfig
) -> ControllerState:
    """A call is in flight and this event wants another: keep what the event told us, act later.

    The setpoint, the command bookkeeping and the pending look stay as they were (the call in
    flight has not landed); the reading, the fail-safe and a push-mode overload are kept.
    """
    if wanted.failsafe and not state.failsafe:
        reason = wanted.reason
    elif wanted.target is not None and wanted.target != state.setpoint:
        reason = f"need {wanted.target} A: waiting for the car call in flight"
    else:
        reason = "waiting for the car call in flight"
    return replace(
        state,
        reading=wanted.reading,
        last_valid_at=wanted.last_valid_at,
        failsafe=wanted.failsafe,
        target=wanted.target,
        last_overload_at=wanted.last_overload_at,
        unresolvable_since=wanted.unresolvable_since,
        overload_pending=state.overload_pending
        or (cfg.mode == "push" and isinstance(event, Overload)),
        act_after_call=True,
        reason=reason,
    )


def _after_call(state: ControllerState, now: float, cfg: ControlConfig) -> Decision:
    """The call landed and an event meanwhile wanted to act: decide again on the newest state."""
    if cfg.mode == "push":
        return _decide_push(state, Tick(), now, cfg)
    if state.failsafe:
        return _failsafe(state, now, cfg)
    if state.reading is not None and state.reading.valid:
        return _control(state, state.reading, now, cfg)
    return Decision(state)


def _decide(
    state: ControllerState, event: ControllerEvent, now: float, cfg: ControlConfig
) -> Decision:
    if isinstance(event, DriverLimit):
        return _enforce_limit(_on_driver_limit(state, event, now), now, cfg, asked=True)
    decision = _common(state, event, now, cfg)
    if decision is None:
        decision = (
            _decide_push(state, event, now, cfg)
            if cfg.mode == "push"
            else _decide_measured(state, event, now, cfg)
        )
    if decision.state.driver_pinned:
        decision = _enforce_limit(decision, now, cfg)
    if cfg.mode == "measured" and not isinstance(event, Reading | VehicleUpdate):
        # In measured mode readings decide: the meter may confirm the command for free.
        return decision
    return _maybe_verify(decision, now)


# --- the driver's ceiling set through the API or Home Assistant ---------------------------


def _limit(state: ControllerState, cfg: ControlConfig) -> int:
    """The driver's ceiling as the car may be set to it."""
    driver = state.driver_amps if state.driver_amps is not None else cfg.charger_max_amps
    return max(cfg.charger_min_amps, min(cfg.charger_max_amps, driver))


def _over_limit(state: ControllerState, cfg: ControlConfig) -> bool:
    """A DriverLimit below the car's setting is still to be sent to a car that is online."""
    return (
        state.driver_pinned
        and state.setpoint is not None
        and state.setpoint > _limit(state, cfg)
        and state.vehicle is not None
        and state.vehicle.state is VehicleState.ONLINE
    )


def _on_driver_limit(state: ControllerState, event: DriverLimit, now: float) -> Decision:
    """Like the driver changing the setting in the app: a new ceiling, ours until they do.

    Lowering follows at once (`_enforce_limit`); raising waits for the mode's raise rules.
    """
    s = replace(
        state,
        driver_amps=event.amps,
        driver_pinned=True,
        raise_since=None,
        raise_floor=None,
        reason=f"driver's ceiling set to {event.amps} A",
    )
    if state.vehicle is None and not state.refresh_pending and now >= state.blocked_until:
        # Where the car is set is not known yet: one look, then the ceiling applies.
        look = "driver's ceiling changed: looking at the car"
        return Decision(replace(s, refresh_pending=True), (RefreshVehicle(look),))
    return Decision(s)


def _enforce_limit(
    decision: Decision, now: float, cfg: ControlConfig, *, asked: bool = False
) -> Decision:
    """Lower a car set above the driver's ceiling at once (if nothing else is being sent).

    Right when the ceiling is set (`asked`) it goes out at once; otherwise (the car was just
    seen online, a wait ended, the last try failed) not sooner than LIMIT_RETRY_SECS after the
    last command, so a car that refuses it is not asked in a tight loop.
    """
    s = decision.state
    if decision.actions or not _over_limit(s, cfg) or s.refresh_pending:
        return decision
    if not asked and s.last_change_at is not None and now - s.last_change_at < LIMIT_RETRY_SECS:
        return decision
    limit = _limit(s, cfg)
    if now < s.blocked_until:
        reason = f"need {limit} A (driver's ceiling) but {s.blocked_reason or 'car calls wait'}: sending it when the wait ends"
        return Decision(replace(s, reason=reason))
    lowered = _set(s, limit, f"driver's ceiling: lowering {s.setpoint} -> {limit} A", now)
    return Decision(replace(lowered.state, house_at_command=None), lowered.actions)


def _maybe_verify(decision: Decision, now: float) -> Decision:
    """Once a command has settled, look at the car once to confirm it followed."""
    s = decision.state
    if s.verify_at is None or now < s.verify_at or s.refresh_pending or decision.actions:
        return decision
    if not s.verify_look:
        # The meter could not vouch for this command, and a billed look is not due yet.
        return Decision(replace(s, verify_at=None), decision.actions)
    if s.verify_retry and (s.setpoint or 0) >= 5:
        # Give the meter one more chance (a later command it vouches for clears the look).
        return Decision(replace(s, verify_at=now + VERIFY_RETRY_SECS, verify_retry=False))
    if now < s.blocked_until:
        return decision
    s = replace(s, verify_at=None, last_verify_at=now, refresh_pending=True)
    return Decision(
        s, (RefreshVehicle("confirm the car followed the last command", known_online=True),)
    )


def _common(
    state: ControllerState, event: ControllerEvent, now: float, cfg: ControlConfig
) -> Decision | None:
    """Events handled the same way in both modes; None when the mode-specific code should run."""
    if isinstance(event, VehicleUnavailable):
        s = replace(state, refresh_pending=False)
        if event.command and state.commanded_at is not None:
            # The car did not take the command: it is still where it was, and no ramp is under way.
            s = replace(s, setpoint=state.command_from, commanded_at=None, verify_at=None)
        if event.kind == "asleep":
            vehicle = VehicleSnapshot(VehicleState.ASLEEP, None, now)
            s = replace(
                s, vehicle=vehicle, overload_pending=False, last_look_at=now, verify_at=None
            )
            if (
                state.driver_amps is not None
                and state.setpoint is not None
                and state.setpoint < state.driver_amps
            ):
                s = replace(s, restore_pending=True)
            return Decision(replace(s, reason="car asleep: nothing sent (never woken)"))
        if event.kind == "refused":
            return Decision(replace(s, reason=f"car refused the command: {event.detail}"))
        # Every other failure pauses car calls until its dependency's policy allows the next
        # try; the reason names the real cause.
        blocked, reason = {
            "rate_limited": (
                "the Fleet API rate limits us",
                f"Fleet API rate limited: waiting {event.retry_after:.0f} s ({event.detail})",
            ),
            "auth": (
                "Tesla refuses our access token",
                f"Tesla authorization failed: {event.detail}",
            ),
            "token": (
                "the Tesla token endpoint is failing",
                f"Tesla token refresh failing (the car is not the problem): {event.detail}",
            ),
            "transient": ("the car link is down", f"car unreachable: {event.detail}"),
        }.get(event.kind, ("the car link has a fault", f"car link fault: {event.detail}"))
        s = replace(
            s,
            blocked_until=max(s.blocked_until, now + event.retry_after),
            blocked_reason=blocked if event.retry_after > 0 else s.blocked_reason,
            blocked_kind=event.kind if event.retry_after > 0 else s.blocked_kind,
            # The look that was refused is retried as soon as the window ends.
            last_unexplained_at=None,
            reason=reason,
        )
        if event.kind in ("auth", "token"):
            s = replace(s, auth_ok=False)
        return Decision(s)
    if isinstance(event, AuthLost):
        return Decision(
            replace(state, auth_ok=False, reason=f"Tesla login required: {event.reason}")
        )
    if isinstance(event, CarLinkBack):
        if state.blocked_kind != "transient" or now >= state.blocked_until:
            return Decision(state)
        # The proxy accepts connections again: the wait was for it, so act on it now.
        s = replace(
            state,
            blocked_until=now,
            blocked_reason="",
            blocked_kind="",
            reason="the car link is back: acting now",
        )
        return _after_call(s, now, cfg)
    if isinstance(event, TokenRefreshed):
        if state.blocked_kind in ("auth", "token"):
            # The wait was for a token: a car call may go now.
            state = replace(state, blocked_until=0.0, blocked_reason="", blocked_kind="")
        if state.auth_ok:
            return Decision(state)
        return Decision(replace(state, auth_ok=True, reason="Tesla login restored"))
    if isinstance(event, CommandDone):
        s = replace(
            state,
            restore_pending=False if event.amps == state.driver_amps else state.restore_pending,
            auth_ok=True,
        )
        if event.command == "set_charging_amps" and state.commanded_at is not None:
            # The car ramps from when the command landed, not from when it was decided: after
            # a slow call, readings are judged against the setpoint the car really had.
            s = replace(s, commanded_at=now)
        if (
            event.command != "set_charging_amps"
            and state.vehicle is not None
            and state.vehicle.charge is not None
        ):
            # Until the next look, assume the car did what it accepted.
            charging_state = "Charging" if event.command == "charge_start" else "Stopped"
            charge = replace(state.vehicle.charge, charging_state=charging_state)
            s = replace(
                s,
                vehicle=replace(state.vehicle, charge=charge),
                verify_at=now + cfg.settle_secs + 1.0,
                verify_look=True,
                verify_retry=False,
            )
        if (
            event.command == "set_charging_amps"
            and cfg.mode == "measured"
            and not cfg.charger_measured
        ):
            due = (
                state.last_verify_at is None
                or now - state.last_verify_at >= VERIFY_INTERVAL
                or (event.amps or 0) < 5
            )
            # The meter checks every command for free (a command it vouches for counts as a
            # look at the car); a billed look follows only when one is due.
            owed = state.verify_at is not None and state.verify_look  # kept, not waited for again
            s = replace(
                s,
                verify_at=now + cfg.settle_secs + 1.0,
                verify_look=due or owed,
                verify_retry=not owed,
            )
        return Decision(s)
    return None


def _observe_vehicle(
    state: ControllerState, snap: VehicleSnapshot, now: float, cfg: ControlConfig
) -> ControllerState:
    """Fold a look at the car into the state: learn the driver's setting and the setpoint.

    Push mode remembers the driver's setting only when it reduces (a throttle session);
    measured mode always knows it, because it caps every target.
    """
    s = replace(state, vehicle=snap, refresh_pending=False, last_look_at=now)
    if state.reading is not None:
        s = replace(s, supply_at_look=state.reading.worst_phase_amps)
    charge = snap.charge
    if charge is None:
        return s
    request = charge.charge_current_request
    learn_driver = cfg.mode == "measured"
    if state.setpoint is None:
        learn = learn_driver and not state.driver_pinned  # a ceiling set before the first look
        return replace(s, setpoint=request, driver_amps=request if learn else state.driver_amps)
    if request != state.setpoint and (
        state.commanded_at is None or now - state.commanded_at > cfg.settle_secs
    ):
        # Someone (the driver, in the app) changed the setting: that is their new wish, and it
        # replaces a ceiling set through the API or Home Assistant (the last writer wins).
        driver = request if learn_driver or state.driver_amps is not None else None
        return replace(
            s, setpoint=request, driver_amps=driver, restore_pending=False, driver_pinned=False
        )
    return s


# --- push mode: the seed's /overload behaviour done right ---------------------------------


def _decide_push(
    state: ControllerState, event: ControllerEvent, now: float, cfg: ControlConfig
) -> Decision:
    if isinstance(event, Overload):
        s = replace(state, last_overload_at=now)
        if state.last_reduction_at is not None and now - state.last_reduction_at < cfg.sleep_secs:
            return Decision(
                replace(s, reason="overload absorbed: the car is settling after the last reduction")
            )
        fresh = state.vehicle is not None and now - state.vehicle.at < VEHICLE_FRESH_SECS
        if fresh:
            return _push_reduce(s, now, cfg)
        if state.refresh_pending:
            return Decision(replace(s, overload_pending=True))
        if now < state.blocked_until:
            # Shelly's URL action fires once per crossing: remember it and act when the window ends.
            reason = f"overload seen while {state.blocked_reason or 'car calls wait'}: acting when the wait ends"
            return Decision(replace(s, overload_pending=True, reason=reason))
        s = replace(
            s, overload_pending=True, refresh_pending=True, reason="overload: checking the car"
        )
        return Decision(s, (RefreshVehicle("overload reported"),))
    if isinstance(event, VehicleUpdate):
        s = _observe_vehicle(state, event.snapshot, now, cfg)
        if state.overload_pending:
            return _push_reduce(replace(s, overload_pending=False), now, cfg)
        if (
            not event.snapshot.charging
            and s.driver_amps is not None
            and s.setpoint is not None
            and s.setpoint < s.driver_amps
        ):
            if event.snapshot.state is VehicleState.ONLINE:
                # Charging ended while throttled: give the driver their setting back.
                done = _set(
                    s,
                    s.driver_amps,
                    f"charging ended: restoring the driver's {s.driver_amps} A",
                    now,
                )
                return Decision(replace(done.state, driver_amps=_released(s)), done.actions)
            return Decision(
                replace(s, restore_pending=True, reason=_vehicle_reason(event.snapshot))
            )
        return Decision(s)
    if isinstance(event, Tick):
        if state.overload_pending and not state.refresh_pending and now >= state.blocked_until:
            held = f" (held back: {state.blocked_reason})" if state.blocked_reason else ""
            s = replace(
                state,
                refresh_pending=True,
                reason=f"overload{held}: checking the car",
            )
            return Decision(s, (RefreshVehicle("overload reported"),))
        return _push_raise(state, now, cfg)
    return Decision(state)


def _push_reduce(state: ControllerState, now: float, cfg: ControlConfig) -> Decision:
    vehicle = state.vehicle
    assert vehicle is not None  # noqa: S101 (callers only come here after a look at the car)
    if not vehicle.charging:
        return Decision(replace(state, reason=_vehicle_reason(vehicle), target=None))
    if now < state.blocked_until:
        reason = (
            f"{state.blocked_reason or 'car calls wait'}: reduction postponed until the wait ends"
        )
        return Decision(replace(state, overload_pending=True, reason=reason))
    amps = (
        state.setpoint
        if state.setpoint is not None
        else vehicle.charge.charge_current_request
        if vehicle.charge
        else cfg.charger_max_amps
    )
    driver = state.driver_amps if state.driver_amps is not None else amps
    new = max(cfg.charger_min_amps, math.floor(amps * cfg.down_step))
    s = replace(state, driver_amps=driver, last_reduction_at=now)
    if new >= amps:
        return Decision(
            replace(
                s,
                target=amps,
                reason=f"overload: already at {amps} A (chargerMinAmps {cfg.charger_min_amps})",
            )
        )
    return _set(s, new, f"overload: {amps} A x {cfg.down_step:g} -> {new} A", now)


def _released(state: ControllerState) -> int | None:
    """Push mode forgets the driver's setting once restored, unless it was set as a ceiling."""
    return state.driver_amps if state.driver_pinned else None


def _push_raise(state: ControllerState, now: float, cfg: ControlConfig) -> Decision:
    if state.driver_amps is None or state.setpoint is None:
        return Decision(state)
    quiet_from = max(
        t for t in (state.last_overload_at, state.last_change_at, state.started_at) if t is not None
    )
    if now - quiet_from < cfg.sleep_secs - EPS or now < state.blocked_until:
        return Decision(state)
    if state.vehicle is None:
        # First raise since a restart: the driver may have changed the setting meanwhile.
        if state.refresh_pending:
            return Decision(state)
        reason = "restarted while throttled: looking at the car before raising"
        return Decision(
            replace(state, refresh_pending=True, reason=reason), (RefreshVehicle(reason),)
        )
    if state.vehicle.state is not VehicleState.ONLINE:
        return Decision(state)
    ceiling = min(cfg.charger_max_amps, state.driver_amps)
    if state.setpoint >= ceiling:
        return Decision(replace(state, driver_amps=_released(state)))
    step = max(1, math.floor(state.setpoint * cfg.up_step))
    new = min(ceiling, state.setpoint + step)
    decision = _set(
        state,
        new,
        f"no overload for {cfg.sleep_secs:g} s: raising {state.setpoint} -> {new} A",
        now,
    )
    if new >= state.driver_amps:
        return Decision(
            replace(
                decision.state,
                driver_amps=_released(state),
                reason=f"restored the driver's {new} A",
            ),
            decision.actions,
        )
    return decision


# --- measured mode: closed loop on the meter ----------------------------------------------


def _car_phases(
    state: ControllerState, cfg: ControlConfig, reading: MeterReading
) -> tuple[int, ...]:
    """Indexes of the supply phases the car draws from."""
    phases = cfg.supply_phases or len(reading.phase_amps)
    if phases == 1:
        return (0,)
    charge = state.vehicle.charge if state.vehicle else None
    if charge is not None and charge.charger_phases is not None and charge.charger_phases >= 2:
        return tuple(range(phases))
    return (cfg.charger_phase - 1,)


def _car_estimate(state: ControllerState, reading: MeterReading) -> float:
    """Amps the car draws now: measured when a channel sees it, else what it was told."""
    if reading.car_amps is not None:
        return max(0.0, reading.car_amps)
    if not _charging(state) or state.paused:
        return 0.0
    return float(state.setpoint or 0)


def house_estimate(
    state: ControllerState, reading: MeterReading, now: float, cfg: ControlConfig
) -> tuple[float, ...]:
    """Per-phase house load without the car.

    While a command settles the car is somewhere between the old and the new value; the house is
    then taken as at least what it was when the command went out, so the ramp itself is never
    mistaken for a change in the house (one overload is one command).
    """
    car_phases = _car_phases(state, cfg, reading)
    if (
        reading.car_amps is not None
        or not _settling(state, cfg, now)
        or state.command_from is None
        or not _charging(state)
    ):
        car = _car_estimate(state, reading)
        return tuple(a - car if i in car_phases else a for i, a in enumerate(reading.phase_amps))
    upper = float(max(state.command_from, state.setpoint or 0))
    before = state.house_at_command or ()
    out = []
    for i, a in enumerate(reading.phase_amps):
        now_est = a - upper if i in car_phases else a
        out.append(max(now_est, before[i]) if i < len(before) else now_est)
    return tuple(out)


def _decide_measured(
    state: ControllerState, event: ControllerEvent, now: float, cfg: ControlConfig
) -> Decision:
    if isinstance(event, Reading):
        return _on_reading(state, event.reading, now, cfg)
    if isinstance(event, MeterFailed):
        return _check_stale(state, now, cfg)
    if isinstance(event, VehicleUpdate):
        s = _observe_vehicle(state, event.snapshot, now, cfg)
        if s.failsafe:
            return _failsafe(s, now, cfg)
        snap = event.snapshot
        throttled = (
            s.setpoint is not None and s.driver_amps is not None and s.setpoint < s.driver_amps
        )
        if (
            (s.restore_pending or throttled)
            and not s.paused
            and snap.state is VehicleState.ONLINE
            and not snap.charging
            and s.driver_amps is not None
            and s.setpoint != s.driver_amps
            and now >= s.blocked_until
        ):
            done = _set(
                s, s.driver_amps, f"car not charging: restoring the driver's {s.driver_amps} A", now
            )
            return Decision(replace(done.state, restore_pending=False), done.actions)
        if s.reading is not None and s.reading.valid:
            return _control(s, s.reading, now, cfg)
        return Decision(s)
    if isinstance(event, Overload):
        # The shell also triggers an immediate meter read; the reading decides.
        return Decision(replace(state, last_overload_at=now))
    if isinstance(event, Tick):
        stale = _check_stale(state, now, cfg)
        if stale.actions or stale.state.failsafe:
            return stale
        # Readings drive the control loop; a tick never re-judges an old reading.
        s = stale.state
        if (
            _charging(s)
            and s.last_look_at is not None
            and now - s.last_look_at >= cfg.vehicle_check_secs
            and not s.refresh_pending
            and now >= s.blocked_until
        ):
            # The car is charging, so it is awake: vehicle_data alone (one billed call), and a
            # 408 there says it has gone to sleep after all.
            look = RefreshVehicle("periodic check while charging", known_online=True)
            return Decision(replace(s, refresh_pending=True), (look,))
        return Decision(s)
    return Decision(state)


def _check_stale(state: ControllerState, now: float, cfg: ControlConfig) -> Decision:
    last = state.last_valid_at if state.last_valid_at is not None else state.started_at
    if state.failsafe or now - last < cfg.stale_secs:
        return Decision(state)
    return _failsafe(replace(state, failsafe=True, raise_since=None, raise_floor=None), now, cfg)


def _failsafe(state: ControllerState, now: float, cfg: ControlConfig) -> Decision:
    """No valid reading: the car goes to the minimum until the meter is back."""
    last = state.last_valid_at if state.last_valid_at is not None else state.started_at
    reason = f"fail-safe: no valid meter reading for {now - last:.0f} s: holding chargerMinAmps ({cfg.charger_min_amps} A)"
    s = replace(state, reason=reason, target=cfg.charger_min_amps)
    if state.refresh_pending or now < state.blocked_until:
        return Decision(s)
    if state.vehicle is None or now - state.vehicle.at >= FAILSAFE_LOOK_SECS:
        return Decision(
            replace(s, refresh_pending=True), (RefreshVehicle("fail-safe: is the car charging?"),)
        )
    if state.vehicle.state is not VehicleState.ONLINE:
        return Decision(s)
    if state.setpoint is not None and state.setpoint <= cfg.charger_min_amps:
        return Decision(s)
    # Online but not charging too: the car keeps the setting, so a charge that starts while the
    # meter is dead starts at the minimum. The driver's setting comes back with the meter.
    decision = _set(s, cfg.charger_min_amps, reason, now)
    restore = state.driver_amps is not None and not _charging(state)
    return Decision(replace(decision.state, restore_pending=restore), decision.actions)


def _on_reading(
    state: ControllerState, reading: MeterReading, now: float, cfg: ControlConfig
) -> Decision:
    if not reading.valid:
        return _check_stale(replace(state, reading=reading), now, cfg)
    if not state.failsafe:
        # The hot path (every reading): the two fields ride along into _control's one replace.
        return _control(state, reading, now, cfg, {"reading": reading, "last_valid_at": now})
    s = replace(
        state,
        reading=reading,
        last_valid_at=now,
        failsafe=False,
        reason="meter readings are back: leaving fail-safe",
    )
    if not _charging(s) and s.restore_pending and not s.refresh_pending and now >= s.blocked_until:
        return Decision(
            replace(s, refresh_pending=True),
            (RefreshVehicle("meter back: restore the driver's setting?"),),
        )
    return _control(s, reading, now, cfg)


def _control(
    state: ControllerState,
    reading: MeterReading,
    now: float,
    cfg: ControlConfig,
    pending: dict[str, object] | None = None,
) -> Decision:
    """One closed-loop step on a valid reading.

    `pending` holds field updates the caller has not applied yet (the reading itself). This
    runs once a second, so every field it changes goes into one `replace` at the end: copying
    the ~30-field state was most of the controller's cost per reading.
    """
    ch: dict[str, Any] = dict(pending) if pending else {}
    house = house_estimate(state, reading, now, cfg)
    state = _confirm_on_meter(state, reading, house, now, cfg)
    car_phases = _car_phases(state, cfg, reading)
    headroom = min(cfg.limit - house[i] for i in car_phases if i < len(house))
    raw = math.floor(headroom + METER_RESOLUTION)
    worst = max(reading.phase_amps[i] for i in car_phases if i < len(reading.phase_amps))

    if state.paused:
        return _maybe_resume(replace(state, **ch, target=None), raw, now, cfg)
    if not _charging(state):
        return _not_charging(state, reading, raw, now, cfg, pending=ch)

    ceiling = min(
        cfg.charger_max_amps,
        state.driver_amps if state.driver_amps is not None else cfg.charger_max_amps,
    )
    target = max(cfg.charger_min_amps, min(ceiling, raw))
    setpoint = state.setpoint if state.setpoint is not None else ceiling
    settling = _settling(state, cfg, now)
    look = _car_stopped_drawing(
        state, reading, house=house, car_phases=car_phases, settling=settling, now=now, pending=ch
    )
    if look is not None:
        return look
    if not settling and reading.car_amps is None and worst > cfg.home_max_amps:
        # The meter says the breaker is over its rating: whatever the estimate says, cut by the excess.
        excess = math.ceil(worst - cfg.limit - METER_RESOLUTION)
        target = max(cfg.charger_min_amps, min(target, setpoint - excess))
    ch["target"] = target

    if raw < cfg.charger_min_amps:
        since = state.unresolvable_since if state.unresolvable_since is not None else now
        ch["unresolvable_since"] = since
        ch["reason"] = (
            f"house alone leaves {max(headroom, 0):.1f} A: the overload cannot be resolved by the car; holding chargerMinAmps ({cfg.charger_min_amps} A)"
        )
        if (
            cfg.pause_when_overloaded
            and setpoint <= cfg.charger_min_amps
            and now - since >= cfg.pause_after_secs
            and now >= state.blocked_until
        ):
            reason = f"house overloaded for {now - since:.0f} s even with the car at the minimum: pausing charging"
            ch.update(paused=True, room_since=None, reason=reason)
            return Decision(_evolve(state, ch), (StopCharging(reason),))
    else:
        ch["unresolvable_since"] = None

    if target < setpoint:
        if now < state.blocked_until:
            ch["reason"] = (
                f"need {target} A but {state.blocked_reason or 'car calls wait'}: "
                "sending it when the wait ends"
            )
            return Decision(_evolve(state, ch))
        why = (
            ch["reason"]
            if raw < cfg.charger_min_amps
            else f"worst phase {worst:.1f} A: lowering {setpoint} -> {target} A"
        )
        return _set(replace(state, **ch, house_at_command=house), target, why, now)

    if target >= setpoint + 1 and not settling:
        since = state.raise_since if state.raise_since is not None else now
        floor = min(state.raise_floor, target) if state.raise_floor is not None else target
        hold = cfg.sleep_secs
        ch.update(
            raise_since=since,
            raise_floor=floor,
            reason=f"room for {floor} A; raising after {hold:.0f} s of room",
        )
        if now - since >= hold - EPS and now >= state.blocked_until:
            s = replace(state, **ch, house_at_command=house)
            return _set(s, floor, f"room for {hold:.0f} s: raising {setpoint} -> {floor} A", now)
        return Decision(_evolve(state, ch))

    if raw >= cfg.charger_min_amps:
        ch.update(
            raise_since=None,
            raise_floor=None,
            reason=f"holding {setpoint} A: worst phase {worst:.1f} A of {cfg.home_max_amps:g} A",
        )
    return Decision(_evolve(state, ch))


def _confirm_on_meter(
    state: ControllerState,
    reading: MeterReading,
    house: tuple[float, ...],
    now: float,
    cfg: ControlConfig,
) -> ControllerState:
    """The meter is the fast sensor: when it shows the car followed, no billed look is needed.

    After the command settled, the house estimate with the car at its new setpoint must match
    the house when the command went out. Sub-5 A commands are always looked at (the car takes
    them only on a repeat), and so is any command the meter cannot vouch for.
    """
    if state.verify_at is None or now < state.verify_at or _settling(state, cfg, now):
        return state
    if state.house_at_command is None or (state.setpoint or 0) < 5 or reading.car_amps is not None:
        return state
    before = state.house_at_command
    if len(before) != len(house):
        return state
    if max(abs(h - b) for h, b in zip(house, before, strict=True)) > VERIFY_TOLERANCE:
        return state
    return replace(state, verify_at=None, last_verify_at=now, last_look_at=now)


def _car_stopped_drawing(
    state: ControllerState,
    reading: MeterReading,
    *,
    house: tuple[float, ...],
    car_phases: tuple[int, ...],
    settling: bool,
    now: float,
    pending: dict[str, Any],
) -> Decision | None:
    """A house load below zero means the car draws much less than we think: look at it.

    That is how the end of a charge (Complete, unplugged) shows on the meter. One look per
    drop: it is only repeated when the supply falls by another JUMP_AMPS.
    """
    if (
        settling
        or reading.car_amps is not None
        or state.refresh_pending
        or now < state.blocked_until
    ):
        return None
    if min(house[i] for i in car_phases if i < len(house)) >= -JUMP_AMPS:
        return None
    worst = reading.worst_phase_amps
    if state.supply_at_look is not None and state.supply_at_look - worst < JUMP_AMPS:
        return None
    if (
        state.last_unexplained_at is not None
        and now - state.last_unexplained_at < UNEXPLAINED_MIN_INTERVAL
    ):
        return None
    reason = "the meter says the car draws much less than it was set to: checking the car"
    s = replace(
        state, **{**pending, "refresh_pending": True, "last_unexplained_at": now, "reason": reason}
    )
    return Decision(s, (RefreshVehicle("car seems to have stopped drawing"),))


def _not_charging(
    state: ControllerState,
    reading: MeterReading,
    raw: int,
    now: float,
    cfg: ControlConfig,
    *,
    pending: dict[str, Any],
) -> Decision:
    """The car is not known to be charging: only an unexplained overload makes us look."""
    worst = reading.worst_phase_amps
    ch: dict[str, Any] = {**pending, "raise_since": None, "raise_floor": None, "target": None}
    ch["reason"] = (
        _vehicle_reason(state.vehicle)
        if state.vehicle is not None
        else "car state unknown: nothing sent"
    )
    if state.refresh_pending or now < state.blocked_until:
        return Decision(_evolve(state, ch))
    if state.vehicle is None and not state.first_look_done:
        # One look at start-up (at most two data calls): /status shows the car, and a car that
        # is already charging is under control before the house gives any reason to ask.
        ch.update(refresh_pending=True, first_look_done=True, reason="first look at the car")
        return Decision(_evolve(state, ch), (RefreshVehicle("first look at the car"),))
    if worst <= cfg.limit:
        return Decision(_evolve(state, ch))
    if (
        state.last_unexplained_at is not None
        and now - state.last_unexplained_at < UNEXPLAINED_MIN_INTERVAL
    ):
        return Decision(_evolve(state, ch))
    jumped = state.supply_at_look is None or worst - state.supply_at_look >= JUMP_AMPS
    if state.vehicle is not None and not jumped:
        return Decision(_evolve(state, ch))
    ch.update(
        refresh_pending=True,
        last_unexplained_at=now,
        reason=f"unexplained overload ({worst:.1f} A): checking whether the car started charging",
    )
    return Decision(_evolve(state, ch), (RefreshVehicle("unexplained overload"),))


def _maybe_resume(state: ControllerState, raw: int, now: float, cfg: ControlConfig) -> Decision:
    """Paused by pauseWhenOverloaded: start again once room for the minimum has lasted."""
    if raw < cfg.charger_min_amps + 1:
        return Decision(
            replace(
                state, room_since=None, reason="charging paused: the house alone is over the limit"
            )
        )
    since = state.room_since if state.room_since is not None else now
    s = replace(state, room_since=since)
    online = state.vehicle is not None and state.vehicle.state is VehicleState.ONLINE
    if now - since >= cfg.sleep_secs and online and now >= state.blocked_until:
        reason = "room has returned: resuming charging"
        return Decision(
            replace(s, paused=False, unresolvable_since=None, reason=reason),
            (StartCharging(reason),),
        )
    return Decision(replace(s, reason="charging paused: waiting for room to last"))
