"""The controller's state, its events and actions, and the helpers every policy shares.

Pure data and pure functions: no I/O, no clock (the time is always passed in).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from tesla_smart_charger.control.events import (
    AuthLost,
    CarLinkBack,
    DriverLimit,
    GridLimitChanged,
    MeterFailed,
    ModeChange,
    Overload,
    Reading,
    TokenRefreshed,
)
from tesla_smart_charger.control.grid_limit import car_phase_count, ceiling_amps, phase_volts
from tesla_smart_charger.control.models import MeterReading, VehicleSnapshot, VehicleState

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
    # An overload the car cannot resolve at its minimum pauses it (the breaker comes first);
    # False only when the configuration opts out explicitly.
    pause_when_overloaded: bool = True
    pause_after_secs: float = 120.0
    supply_phases: int = 1  # 0: as many as the meter reports (supplyPhases auto)
    charger_phase: int = 1
    charger_measured: bool = False
    # solar modes: the car's mode itself is in the state (changeable at runtime)
    solar_tolerance: float = 1.0
    solar_start_secs: float = 60.0
    solar_stop_secs: float = 300.0
    # Billed (cloud) commands per hour for raises and solar start/stop; None: no budget (BLE).
    cloud_budget: int | None = None
    # Volts to turn the grid operator's kW limit into amps where the meter measures none.
    mains_voltage: float = 230.0

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
    | ModeChange
    | GridLimitChanged
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
    # The conservative breaker replica's heat per phase of the real supply (`breaker.advance_heat`)
    # and the reading time it was advanced to: a pause comes before its warning, whatever the
    # overload began from.
    supply_heat: tuple[float, ...] = ()
    heat_at: float | None = None
    paused: bool = False
    giving_turn: bool = False  # several cars: the share asks it to let one of equal priority charge
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
    limit_asked: bool = False  # a ceiling arrived during the call: its cut goes when it is back
    # How the car charges: "fast" (as the breaker allows), "solar" (only the export
    # surplus), "minsolar" (chargerMinAmps plus the surplus). The breaker limit wins over all.
    charge_mode: str = "fast"
    solar_since: float | None = None  # surplus enough to start since (solar, not charging)
    solar_short_since: float | None = None  # importing beyond the tolerance since (solar)
    solar_stopped: bool = False  # we stopped the charge for lack of sun: we may start it again
    sent_at: tuple[float, ...] = ()  # when commands went out in the last hour (the budget)
    # The grid operator's limit: this car's share in W while it is on (None: off).
    grid_watts: float | None = None
    # Capacity tariff: the house's import (W) the current window allows from now on (None: no
    # guard), whether it holds the car below what the breaker allows, and since when even the
    # car's minimum has not fitted under it.
    import_ceiling_w: float | None = None
    capacity_bound: bool = False
    capacity_short_since: float | None = None
    # randomStartDelaySecs: no start or raise before this (a boundary was crossed); cuts go.
    raise_hold_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The new state and what to do now."""

    state: ControllerState
    actions: tuple[Action, ...] = field(default_factory=tuple)


_STATE_FIELDS = tuple(f.name for f in fields(ControllerState))
_state_values = operator.attrgetter(*_STATE_FIELDS)


def initial_state(
    now: float,
    *,
    setpoint: int | None = None,
    driver_amps: int | None = None,
    driver_pinned: bool = False,
    charge_mode: str = "fast",
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
        charge_mode=charge_mode,
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


BUDGET_WINDOW = 3600.0
BUDGET_REASON = (
    "cloud command budget for this hour used (cloudCommandsPerHour): raising later; cuts still go"
)


def spent(state: ControllerState, now: float) -> tuple[float, ...]:
    """The command times of the last hour, plus one now."""
    return (*(t for t in state.sent_at if now - t < BUDGET_WINDOW), now)


def _is_raise(state: ControllerState, amps: int) -> bool:
    """A setpoint command that is not a cut (the first one, unknown from, counts as a raise)."""
    return state.setpoint is None or amps > state.setpoint


def budget_left(state: ControllerState, now: float, cfg: ControlConfig) -> bool:
    """A raise or a solar start/stop may go: the cloud budget for this hour is not used up.

    Cuts the breaker needs are never held back by it, nor counted: raises, solar starts/stops
    and the lowerings the sun asks for use it up.
    """
    if cfg.cloud_budget is None:
        return True
    return sum(1 for t in state.sent_at if now - t < BUDGET_WINDOW) < cfg.cloud_budget


def budget_free_at(state: ControllerState, cfg: ControlConfig) -> float:
    """When the next budgeted command may go (0.0: now, as far as the budget goes)."""
    if cfg.cloud_budget is None or len(state.sent_at) < cfg.cloud_budget:
        return 0.0
    return sorted(state.sent_at)[-cfg.cloud_budget] + BUDGET_WINDOW


def _set(
    state: ControllerState, amps: int, reason: str, now: float, *, chosen: bool = False
) -> Decision:
    """Record and emit a setpoint command.

    `chosen`: a lowering we choose rather than the breaker needs (the sun went behind a
    cloud); it goes at once but uses the cloud budget up like a raise.
    """
    new = replace(
        state,
        # The budget is for the commands we choose to send: a cut the breaker needs neither
        # waits for it nor uses it up (counting those cost 8 % of the car's energy on the busy
        # evenings of docs/benchmarks.md for $0.002 a day saved).
        sent_at=spent(state, now) if chosen or _is_raise(state, amps) else state.sent_at,
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


# --- the driver's ceiling set through the API or Home Assistant ---------------------------


def grid_amps(state: ControllerState, cfg: ControlConfig) -> int | None:
    """The amps the grid operator's limit leaves this car (None while the limit is off).

    Converted with the volts the meter measures (else mainsVoltage) and the phases the car
    draws on (unknown: all the supply's), so an uncertain case gives fewer amps, never more.
    """
    if state.grid_watts is None:
        return None
    reading = state.reading
    charge = state.vehicle.charge if state.vehicle is not None else None
    phases = car_phase_count(
        cfg.supply_phases,
        len(reading.phase_amps) if reading is not None and reading.phase_amps else None,
        charge.charger_phases if charge is not None else None,
    )
    volts = phase_volts(reading.phase_volts if reading is not None else (), cfg.mains_voltage)
    return ceiling_amps(state.grid_watts, volts=volts, phases=phases)


def ceiling(state: ControllerState, cfg: ControlConfig) -> int:
    """The most the car may be set to: chargerMaxAmps, the driver's ceiling, the grid limit.

    The lowest wins; the breaker's own limit is applied on top by the mode's policy.
    """
    top = cfg.charger_max_amps
    if state.driver_amps is not None:
        top = min(top, state.driver_amps)
    grid = grid_amps(state, cfg)
    return top if grid is None else min(top, grid)


def grid_binds(state: ControllerState, cfg: ControlConfig) -> bool:
    """The grid limit, not the driver or the car, is what holds the car down now."""
    grid = grid_amps(state, cfg)
    driver = state.driver_amps if state.driver_amps is not None else cfg.charger_max_amps
    return grid is not None and grid < min(cfg.charger_max_amps, driver)


def _limit(state: ControllerState, cfg: ControlConfig) -> int:
    """The driver's ceiling (and the grid limit) as the car may be set to it."""
    return max(cfg.charger_min_amps, ceiling(state, cfg))


def _over_limit(state: ControllerState, cfg: ControlConfig) -> bool:
    """A ceiling (DriverLimit, grid limit) below the car's setting is still to be sent."""
    return (
        (state.driver_pinned or state.grid_watts is not None)
        and state.setpoint is not None
        and state.setpoint > _limit(state, cfg)
        and state.vehicle is not None
        and state.vehicle.state is VehicleState.ONLINE
    )


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
