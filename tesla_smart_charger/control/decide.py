"""The charging decision: a pure function of (state, event, now). No I/O, no clock.

`decide()` takes the controller's state, one event and the current monotonic time, and returns the
new state plus the actions to carry out (commands, vehicle refreshes). The imperative shell in
`service.py` executes the actions and feeds their outcomes back in as events, so the same code runs
in the daemon, in tests and in the benchmark's virtual time.

Safety is asymmetric: a lower setpoint is sent on the first event that needs it; a higher one only
after the room has lasted `sleep_secs`. When the meter goes silent the car drops to the minimum.
"""

from __future__ import annotations

from dataclasses import replace

from tesla_smart_charger.control.events import (
    AuthLost,
    CarLinkBack,
    DriverLimit,
    GridLimitChanged,
    ModeChange,
    Overload,
    Reading,
    TokenRefreshed,
)
from tesla_smart_charger.control.measured import _control, _decide_measured, _failsafe
from tesla_smart_charger.control.models import VehicleSnapshot, VehicleState
from tesla_smart_charger.control.push import _decide_push
from tesla_smart_charger.control.state import (
    FAILSAFE_LOOK_SECS,
    LIMIT_RETRY_SECS,
    VERIFY_INTERVAL,
    VERIFY_RETRY_SECS,
    Action,
    CommandDone,
    ControlConfig,
    ControllerEvent,
    ControllerState,
    Decision,
    RefreshVehicle,
    SetAmps,
    StartCharging,
    Tick,
    VehicleUnavailable,
    VehicleUpdate,
    _charging,
    _limit,
    _over_limit,
    _set,
    budget_free_at,
    grid_amps,
    grid_binds,
)


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
            and not (grid_binds(state, cfg) and state.setpoint >= _limit(state, cfg))
        ):
            quiet_from = max(
                t
                for t in (state.last_overload_at, state.last_change_at, state.started_at)
                if t is not None
            )
            deadlines.append(
                max(quiet_from + cfg.sleep_secs, state.blocked_until, budget_free_at(state, cfg))
            )
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
        # a cut to a ceiling held back by a wait, or retried after a failure
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
        asked = state.limit_asked
        state = replace(state, call_in_flight="", act_after_call=False, limit_asked=False)
        decision = _decide(state, event, now, cfg)
        if asked and not decision.actions:
            # A ceiling set while the call was out: its cut goes now, not after a retry wait.
            decision = _enforce_limit(decision, now, cfg, asked=True)
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
    if isinstance(event, DriverLimit | GridLimitChanged):
        # A new ceiling is news to keep (its cut follows the call's outcome): the driver's
        # setting, the grid limit, and push mode's setting to restore afterwards.
        return replace(
            state,
            driver_amps=wanted.driver_amps,
            driver_pinned=wanted.driver_pinned,
            grid_watts=wanted.grid_watts,
            raise_since=wanted.raise_since,
            raise_floor=wanted.raise_floor,
            act_after_call=True,
            limit_asked=True,
            reason=f"{wanted.reason}: sending it once the car call in flight is back",
        )
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
        # the capacity window's newest ceiling and a boundary's random delay
        import_ceiling_w=wanted.import_ceiling_w,
        raise_hold_until=wanted.raise_hold_until,
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
    if isinstance(event, ModeChange):
        return _on_mode(state, event, now, cfg)
    if isinstance(event, GridLimitChanged):
        return _enforce_limit(_on_grid_limit(state, event, cfg), now, cfg, asked=True)
    decision = _common(state, event, now, cfg)
    if decision is None:
        decision = (
            _decide_push(state, event, now, cfg)
            if cfg.mode == "push"
            else _decide_measured(state, event, now, cfg)
        )
    if decision.state.driver_pinned or decision.state.grid_watts is not None:
        decision = _enforce_limit(decision, now, cfg)
    if cfg.mode == "measured" and not isinstance(event, Reading | VehicleUpdate):
        # In measured mode readings decide: the meter may confirm the command for free.
        return decision
    return _maybe_verify(decision, now)


def _on_mode(state: ControllerState, event: ModeChange, now: float, cfg: ControlConfig) -> Decision:
    """A new charging mode: judged at once on the newest reading (a lowering goes out now).

    Leaving solar for fast restarts a charge that solar stopped (the car must be online);
    push mode has no meter to see the sun, so it keeps charging fast whatever the mode says.
    """
    if event.mode == state.charge_mode:
        return Decision(state)
    s = replace(
        state,
        charge_mode=event.mode,
        solar_since=None,
        solar_short_since=None,
        raise_since=None,
        raise_floor=None,
        reason=f"mode set to {event.mode}",
    )
    if cfg.mode == "push":
        note = "" if event.mode == "fast" else " (solar needs the meter: --monitor; charging fast)"
        return Decision(replace(s, reason=s.reason + note))
    online = s.vehicle is not None and s.vehicle.state is VehicleState.ONLINE
    if event.mode == "fast" and s.solar_stopped and online and not _charging(s):
        reason = "mode set to fast: starting the charge solar mode stopped"
        if now >= s.blocked_until:
            return Decision(
                replace(s, solar_stopped=False, reason=reason), (StartCharging(reason),)
            )
    if s.failsafe or s.reading is None or not s.reading.valid:
        return Decision(s)
    decision = _control(s, s.reading, now, cfg)
    if not decision.actions:
        decision = Decision(
            replace(decision.state, reason=f"mode set to {event.mode}: " + decision.state.reason)
        )
    return decision


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


def _on_grid_limit(state: ControllerState, event: GridLimitChanged, cfg: ControlConfig) -> Decision:
    """The grid operator's limit came on or ended; lowering follows at once (`_enforce_limit`).

    Push mode keeps the setting the car had as the one to restore (it only restores a setting
    it remembers); raising after the limit ends follows the mode's deliberate raise rules.
    """
    if event.car_watts is None:
        if state.grid_watts is None:
            return Decision(state)
        return Decision(
            replace(state, grid_watts=None, reason="grid operator's limit ended: raising as usual")
        )
    s = replace(state, grid_watts=event.car_watts, raise_since=None, raise_floor=None)
    if cfg.mode == "push" and s.driver_amps is None and s.setpoint is not None:
        s = replace(s, driver_amps=s.setpoint)
    amps = grid_amps(s, cfg)
    return Decision(
        replace(
            s,
            reason=f"grid operator's limit: {event.car_watts / 1000:.2f} kW ({amps} A) for this car",
        )
    )


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
    whose = "grid operator's limit" if grid_binds(s, cfg) else "driver's ceiling"
    if now < s.blocked_until:
        reason = f"need {limit} A ({whose}) but {s.blocked_reason or 'car calls wait'}: sending it when the wait ends"
        return Decision(replace(s, reason=reason))
    lowered = _set(s, limit, f"{whose}: lowering {s.setpoint} -> {limit} A", now)
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
