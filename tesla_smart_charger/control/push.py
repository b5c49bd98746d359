"""Push mode: the seed's /overload behaviour done right (cut on a call, raise after quiet)."""

from __future__ import annotations

import math
from dataclasses import replace

from tesla_smart_charger.control.events import (
    Overload,
)
from tesla_smart_charger.control.models import VehicleState
from tesla_smart_charger.control.state import (
    BUDGET_REASON,
    EPS,
    VEHICLE_FRESH_SECS,
    ControlConfig,
    ControllerEvent,
    ControllerState,
    Decision,
    RefreshVehicle,
    Tick,
    VehicleUpdate,
    _observe_vehicle,
    _set,
    _vehicle_reason,
    budget_left,
    grid_binds,
)
from tesla_smart_charger.control.state import ceiling as car_ceiling


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
    if not budget_left(state, now, cfg):
        return Decision(replace(state, reason=BUDGET_REASON))
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
    ceiling = min(cfg.charger_max_amps, state.driver_amps, car_ceiling(state, cfg))
    if state.setpoint >= ceiling:
        if grid_binds(state, cfg):
            return Decision(state)  # held by the grid limit: the driver's setting comes after
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
