"""Measured mode: the closed loop on the meter (headroom per phase, fail-safe, pause)."""

from __future__ import annotations

import math
import operator
from dataclasses import replace
from typing import NamedTuple

from tesla_smart_charger.control.breaker import (
    CONSERVATIVE,
    WARN_RATIO,
    advance_heat,
    pause_deadline,
)
from tesla_smart_charger.control.capacity import car_amps_cap
from tesla_smart_charger.control.events import (
    MeterFailed,
    Overload,
    Reading,
)
from tesla_smart_charger.control.models import MeterReading, VehicleState
from tesla_smart_charger.control.state import (
    _STATE_FIELDS,
    BUDGET_REASON,
    EPS,
    FAILSAFE_LOOK_SECS,
    JUMP_AMPS,
    METER_RESOLUTION,
    UNEXPLAINED_MIN_INTERVAL,
    VERIFY_TOLERANCE,
    Action,
    ControlConfig,
    ControllerEvent,
    ControllerState,
    Decision,
    RefreshVehicle,
    SetAmps,
    StartCharging,
    StopCharging,
    Tick,
    VehicleUpdate,
    _charging,
    _observe_vehicle,
    _set,
    _settling,
    _state_values,
    _vehicle_reason,
    budget_left,
    spent,
)
from tesla_smart_charger.control.state import ceiling as car_ceiling


class _Draft(NamedTuple):
    """The fields one closed-loop step may change, carried through it and written into the
    state in one copy at the end (`_apply`): the step runs once a second, and copying the
    ~50-field state at each change was most of its cost. Immutable and typed like the state;
    a named tuple because its `_replace` costs a fifth of `dataclasses.replace`."""

    reading: MeterReading | None
    last_valid_at: float | None
    giving_turn: bool
    supply_heat: tuple[float, ...]
    heat_at: float | None
    target: int | None
    reason: str
    unresolvable_since: float | None
    raise_since: float | None
    raise_floor: int | None
    paused: bool
    room_since: float | None
    solar_since: float | None
    solar_short_since: float | None
    solar_stopped: bool
    sent_at: tuple[float, ...]
    refresh_pending: bool
    last_unexplained_at: float | None
    first_look_done: bool
    import_ceiling_w: float | None
    capacity_bound: bool
    capacity_short_since: float | None


_DRAFT_AT = tuple(_STATE_FIELDS.index(name) for name in _Draft._fields)
_draft_values = operator.attrgetter(*_Draft._fields)


def _draft(state: ControllerState) -> _Draft:
    """The step's fields as they are in `state`."""
    return _Draft._make(_draft_values(state))


def _apply(state: ControllerState, draft: _Draft) -> ControllerState:
    """`state` with every field of `draft` written into it (one copy)."""
    values = list(_state_values(state))
    for at, value in zip(_DRAFT_AT, draft, strict=True):
        values[at] = value
    return ControllerState(*values)


# --- measured mode: closed loop on the meter ----------------------------------------------

# The capacity tariff looks at two readings at most this far apart (a blip is one of them).
CAPACITY_BLIP_SECS = 5.0


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
        if event.hold_raises_until is not None and event.hold_raises_until > state.raise_hold_until:
            state = replace(state, raise_hold_until=event.hold_raises_until)
        return _on_reading(
            state,
            event.reading,
            now,
            cfg,
            turn=event.giving_turn,
            whole=event.whole,
            ceiling_w=event.import_ceiling_w,
        )
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
            and s.setpoint != min(s.driver_amps, car_ceiling(s, cfg))
            and now >= s.blocked_until
        ):
            back = min(s.driver_amps, car_ceiling(s, cfg))
            done = _set(s, back, f"car not charging: restoring the driver's {back} A", now)
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
    state: ControllerState,
    reading: MeterReading,
    now: float,
    cfg: ControlConfig,
    *,
    turn: bool = False,
    whole: MeterReading | None = None,
    ceiling_w: float | None = None,
) -> Decision:
    if not reading.valid:
        return _check_stale(replace(state, reading=reading), now, cfg)
    # The breaker is heated by the real supply (with several cars, not this car's share).
    real = whole if whole is not None and whole.valid else reading
    dt = real.at - state.heat_at if state.heat_at is not None else 0.0
    heat = advance_heat(state.supply_heat, real.phase_amps, dt, cfg.home_max_amps)
    if not state.failsafe:
        # The hot path (every reading): these fields ride along into _control's one copy.
        pending = _draft(state)._replace(
            reading=reading,
            last_valid_at=now,
            giving_turn=turn,
            import_ceiling_w=ceiling_w,
            supply_heat=heat,
            heat_at=real.at,
        )
        return _control(state, reading, now, cfg, pending)
    s = replace(
        state,
        reading=reading,
        last_valid_at=now,
        giving_turn=turn,
        import_ceiling_w=ceiling_w,
        supply_heat=heat,
        heat_at=real.at,
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
    pending: _Draft | None = None,
) -> Decision:
    """One closed-loop step on a valid reading.

    `pending` holds field updates the caller has not applied yet (the reading itself); every
    field the step changes goes into the state in one copy at the end (`_Draft`).
    """
    ch = pending if pending is not None else _draft(state)
    house = house_estimate(state, reading, now, cfg)
    state = _confirm_on_meter(state, reading, house, now, cfg)
    car_phases = _car_phases(state, cfg, reading)
    headroom = min(cfg.limit - house[i] for i in car_phases if i < len(house))
    raw = math.floor(headroom + METER_RESOLUTION)
    worst = max(reading.phase_amps[i] for i in car_phases if i < len(reading.phase_amps))
    breaker_raw = raw
    ch, raw = _capacity_raw(state, reading, car_phases, raw=raw, ch=ch, now=now, cfg=cfg)

    if state.paused:
        return _maybe_resume(_apply(state, ch._replace(target=None)), raw, house, now, cfg)
    sun = _sun(house, car_phases, cfg) if state.charge_mode != "fast" else None
    if not _charging(state):
        if sun is not None:
            started = _solar_start(
                state, house=house, raw=raw, sun=sun, now=now, cfg=cfg, pending=ch
            )
            if started is not None:
                return started
        return _not_charging(state, reading, raw, now, cfg, pending=ch)

    ceiling = car_ceiling(state, cfg)
    target = max(cfg.charger_min_amps, min(ceiling, raw))
    setpoint = state.setpoint if state.setpoint is not None else ceiling
    settling = _settling(state, cfg, now)
    sun_bound = False  # the sun, not the breaker, sets the target (for the reason's words)
    if sun is None:
        # With the sun a house below zero is normal: only fast mode reads it as the car stopping.
        look = _car_stopped_drawing(
            state,
            reading,
            house=house,
            car_phases=car_phases,
            settling=settling,
            now=now,
            pending=ch,
        )
        if look is not None:
            return look
    else:
        breaker_target = target
        target, ch, stop = _follow_sun(
            state, sun=sun, target=target, setpoint=setpoint, now=now, cfg=cfg, ch=ch
        )
        if stop is not None:
            return stop
        sun_bound = target < breaker_target
    if not settling and reading.car_amps is None and worst > cfg.home_max_amps:
        # The meter says the breaker is over its rating: whatever the estimate says, cut by the excess.
        excess = math.ceil(worst - cfg.limit - METER_RESOLUTION)
        sun_bound = sun_bound and target <= setpoint - excess
        target = max(cfg.charger_min_amps, min(target, setpoint - excess))
    ch, pause = _short_of_room(
        state,
        ch._replace(target=target),
        raw=raw,
        breaker_raw=breaker_raw,
        setpoint=setpoint,
        house=house,
        car_phases=car_phases,
        now=now,
        cfg=cfg,
    )
    if pause is not None:
        return pause

    if target < setpoint:
        if now < state.blocked_until:
            reason = (
                f"need {target} A but {state.blocked_reason or 'car calls wait'}: "
                "sending it when the wait ends"
            )
            return Decision(_apply(state, ch._replace(reason=reason)))
        why = (
            ch.reason
            if raw < cfg.charger_min_amps
            else _sun_lowering(state.charge_mode, house, car_phases, setpoint, target)
            if sun_bound
            else f"capacity tariff: lowering {setpoint} -> {target} A to keep this window's"
            " average import under importLimitKw"
            if ch.capacity_bound and target < min(ceiling, breaker_raw)
            else f"worst phase {worst:.1f} A: lowering {setpoint} -> {target} A"
        )
        return _set(
            replace(_apply(state, ch), house_at_command=house), target, why, now, chosen=sun_bound
        )

    if target >= setpoint + 1 and not settling:
        since = state.raise_since if state.raise_since is not None else now
        floor = min(state.raise_floor, target) if state.raise_floor is not None else target
        hold = cfg.sleep_secs
        ch = ch._replace(
            raise_since=since,
            raise_floor=floor,
            reason=_raise_reason(state, floor, since=since, now=now, cfg=cfg),
        )
        if (
            now - since >= hold - EPS
            and now >= state.blocked_until
            and now >= state.raise_hold_until
            and budget_left(state, now, cfg)
        ):
            s = replace(_apply(state, ch), house_at_command=house)
            return _set(s, floor, f"room for {hold:.0f} s: raising {setpoint} -> {floor} A", now)
        return Decision(_apply(state, ch))

    if raw >= cfg.charger_min_amps:
        ch = ch._replace(
            raise_since=None,
            raise_floor=None,
            reason=_holding(state, setpoint, worst, sun=sun, settling=settling, cfg=cfg),
        )
    return Decision(_apply(state, ch))


def _raise_reason(
    state: ControllerState, floor: int, *, since: float, now: float, cfg: ControlConfig
) -> str:
    """Why a raise the room allows has not gone yet."""
    if not budget_left(state, now, cfg):
        return BUDGET_REASON
    if now < state.raise_hold_until and now - since >= cfg.sleep_secs - EPS:
        return f"room for {floor} A; raising after a random start delay (randomStartDelaySecs)"
    return f"room for {floor} A; raising after {cfg.sleep_secs:.0f} s of room"


def _capacity_raw(
    state: ControllerState,
    reading: MeterReading,
    car_phases: tuple[int, ...],
    *,
    raw: int,
    ch: _Draft,
    now: float,
    cfg: ControlConfig,
) -> tuple[_Draft, int]:
    """The car's room under the breaker and the capacity tariff: the lower of the two wins.

    The tariff bills energy, so the house it sees is the lower of this reading's and the last
    one's: a one-second inrush (the fridge's compressor) costs no cut and no pause, a kettle
    is seen a second later (2.5 kJ of a 15-minute window's 2 MJ). While a command settles it
    is the lower bound (the car taken at the higher setpoint), not the breaker's floor, which
    would hold a blip's house for carSettleSecs.
    """
    ceiling_w = ch.import_ceiling_w
    if ceiling_w is None:
        return ch._replace(capacity_bound=False), raw
    settling = _settling(state, cfg, now)
    seen = _capacity_house(state, reading, car_phases, settling=settling)
    last = state.reading
    if last is not None and last.valid and 0.0 < reading.at - last.at <= CAPACITY_BLIP_SECS:
        before = _capacity_house(state, last, car_phases, settling=settling)
        if len(before) == len(seen):
            seen = tuple(min(a, b) for a, b in zip(seen, before, strict=True))
    cap = car_amps_cap(ceiling_w, seen, reading.phase_volts, car_phases, state.setpoint)
    return ch._replace(capacity_bound=cap < raw), min(raw, cap)


def _capacity_house(
    state: ControllerState,
    reading: MeterReading,
    car_phases: tuple[int, ...],
    *,
    settling: bool,
) -> tuple[float, ...]:
    """The house without the car for the tariff: the car taken at the most it may draw now."""
    car = _car_estimate(state, reading)
    if (
        settling
        and reading.car_amps is None
        and _charging(state)
        and state.command_from is not None
    ):
        car = max(car, float(state.command_from))  # a cut may not have landed yet
    return tuple(a - car if i in car_phases else a for i, a in enumerate(reading.phase_amps))


def _short_of_room(
    state: ControllerState,
    ch: _Draft,
    *,
    raw: int,
    breaker_raw: int,
    setpoint: int,
    house: tuple[float, ...],
    car_phases: tuple[int, ...],
    now: float,
    cfg: ControlConfig,
) -> tuple[_Draft, Decision | None]:
    """No room for the car's minimum: the capacity tariff's pause, or the breaker's."""
    if raw >= cfg.charger_min_amps:
        return ch._replace(unresolvable_since=None, capacity_short_since=None), None
    if breaker_raw >= cfg.charger_min_amps:
        ch = ch._replace(unresolvable_since=None)
        return _capacity_pause(state, ch, setpoint=setpoint, now=now, cfg=cfg)
    ch = ch._replace(capacity_short_since=None)
    return _unresolvable(
        state, ch, setpoint=setpoint, house=house, car_phases=car_phases, now=now, cfg=cfg
    )


def _capacity_pause(
    state: ControllerState,
    ch: _Draft,
    *,
    setpoint: int,
    now: float,
    cfg: ControlConfig,
) -> tuple[_Draft, Decision | None]:
    """Even the car's minimum does not fit under the capacity tariff's ceiling: pause it.

    Not on a blip shorter than a command takes to land (the window's energy absorbs that,
    and the next readings' ceiling pays it back); it starts again once the window has room
    for the minimum and that has lasted sleepTimeSecs, like any pause.
    """
    since = state.capacity_short_since if state.capacity_short_since is not None else now
    ch = ch._replace(
        capacity_short_since=since,
        reason="capacity tariff: even the car's minimum would take this window's average import"
        f" over importLimitKw: pausing charging after {cfg.settle_secs:.0f} s",
    )
    if setpoint > cfg.charger_min_amps or now - since < cfg.settle_secs - EPS:
        return ch, None
    if now < state.blocked_until:
        return ch, None
    reason = (
        "capacity tariff: even the car's minimum would take this window's average import over"
        " importLimitKw: pausing charging"
    )
    ch = ch._replace(
        paused=True,
        room_since=None,
        raise_since=None,
        raise_floor=None,
        capacity_short_since=None,
        reason=reason,
    )
    return ch, Decision(_apply(state, ch), (StopCharging(reason),))


def _unresolvable(
    state: ControllerState,
    ch: _Draft,
    *,
    setpoint: int,
    house: tuple[float, ...],
    car_phases: tuple[int, ...],
    now: float,
    cfg: ControlConfig,
) -> tuple[_Draft, Decision | None]:
    """The car at its minimum cannot bring the supply under the limit: pause it, or hold it.

    The countdown runs from the first reading that showed it; the car is paused after
    pauseAfterSecs, or sooner when the overload would heat the main breaker. Only an explicit
    `pauseWhenOverloaded: false` holds it at the minimum instead (the breaker is then not
    protected: /health says so while the supply is over homeMaxAmps). The reasons carry no
    figure that moves with every reading, so the countdown is one log line, not one per reading.
    """
    since = state.unresolvable_since if state.unresolvable_since is not None else now
    turn = ch.giving_turn
    minimum = cfg.charger_min_amps
    if not cfg.pause_when_overloaded:
        reason = (
            f"taking turns: a car of the same priority has had less; holding chargerMinAmps ({minimum} A)"
            if turn
            else f"house over the limit even with the car at its minimum: the overload cannot be"
            f" resolved by the car; holding chargerMinAmps ({minimum} A)"
            " and never pausing (pauseWhenOverloaded is false)"
        )
        return ch._replace(unresolvable_since=since, reason=reason), None
    wait, heats = _pause_wait(house, car_phases, cfg)
    warm = _warm(ch.supply_heat, car_phases)
    if warm and not heats:
        heats = (
            f"main breaker at {warm:.0f} % of what would trip it with the car at"
            f" {cfg.charger_min_amps} A"
        )
    if turn:
        reason = f"taking turns with a car of the same priority that has had less: pausing charging after {wait:.0f} s"
    elif heats:
        reason = (
            f"house over the limit even with the car at its minimum ({minimum} A) would heat"
            " the main breaker: pausing charging before it does"
        )
    else:
        reason = (
            f"house over the limit even with the car at its minimum ({minimum} A):"
            f" pausing charging after {wait:.0f} s"
        )
    ch = ch._replace(unresolvable_since=since, reason=reason)
    # Warm: at once, but not on a transient shorter than a command takes to land (another
    # car's pause landing shows its room a few seconds late).
    due = now - since >= min(wait, cfg.settle_secs if warm and not turn else math.inf) - EPS
    if setpoint > cfg.charger_min_amps or not due or now < state.blocked_until:
        return ch, None
    if turn:
        reason = "taking turns: pausing charging so a car of the same priority that has had less can charge"
    elif heats:
        reason = f"{heats}: pausing charging after {now - since:.0f} s"
    else:
        reason = f"house overloaded for {now - since:.0f} s even with the car at the minimum: pausing charging"
    ch = ch._replace(
        paused=True, room_since=None, raise_since=None, raise_floor=None, reason=reason
    )
    return ch, Decision(_apply(state, ch), (StopCharging(reason),))


def overload_unresolved(state: ControllerState) -> bool:
    """This car is in an overload it cannot resolve at its minimum (counting down to its pause,
    held there, or paused for it); a turn given to an equal car is not an overload."""
    return (
        state.unresolvable_since is not None
        and not state.giving_turn
        and (state.paused or _charging(state))
    )


def unresolved_problem(
    states: tuple[ControllerState, ...], real: MeterReading | None, cfg: ControlConfig
) -> str | None:
    """The /health problem while the supply is over homeMaxAmps in an overload the cars cannot
    resolve at their minimum (None otherwise).

    `real` is the meter's own reading (not a car's share of it). With pauseWhenOverloaded a
    car is being paused (lowest priority first) and the problem ends when the supply is back
    under the rating; without it nothing brings the supply down: the breaker is not protected.
    """
    if real is None or not real.valid or not real.phase_amps:
        return None
    worst = real.worst_phase_amps
    if worst <= cfg.home_max_amps:
        return None
    stuck = [s for s in states if overload_unresolved(s)]
    if not stuck:
        return None
    cars = "the car" if len(states) == 1 else "the cars"
    over = f"supply {worst:.1f} A on a {cfg.home_max_amps:g} A main breaker"
    if not cfg.pause_when_overloaded:
        return (
            f"{over} even with {cars} at the minimum, and pauseWhenOverloaded is false:"
            " nothing pauses charging, the main breaker is not protected"
        )
    if all(s.paused for s in stuck):
        return f"{over}: charging is paused for it, but the supply has not come down yet"
    first = " (lowest priority first)" if len(states) > 1 else ""
    return (
        f"{over} even with {cars} at the minimum: pausing charging{first} before the breaker"
        " heats up"
    )


def _warm(heat: tuple[float, ...], car_phases: tuple[int, ...]) -> float:
    """The tracked heat of the car's phases in % of what trips the conservative replica, when it
    is past /health's warning (else 0.0): an overload the car cannot resolve pauses at once."""
    worst = max((heat[i] for i in car_phases if i < len(heat)), default=0.0)
    ratio = worst / CONSERVATIVE.trip_heat
    return 100.0 * ratio if ratio >= WARN_RATIO else 0.0


def _pause_wait(
    house: tuple[float, ...], car_phases: tuple[int, ...], cfg: ControlConfig
) -> tuple[float, str]:
    """How long an overload the car cannot resolve may last before charging pauses, and why.

    pauseAfterSecs, or sooner when the supply with the car at its minimum would heat the main
    breaker: before the conservative replica, from a house at its limit, would reach /health's
    warning, and within half its time to trip (`breaker.pause_deadline`). The why is "" when
    pauseAfterSecs applies.
    """
    worst = max((house[i] for i in car_phases if i < len(house)), default=0.0)
    supply = worst + cfg.charger_min_amps
    heat = pause_deadline(supply / cfg.home_max_amps) if cfg.home_max_amps > 0 else math.inf
    if heat >= cfg.pause_after_secs:
        return cfg.pause_after_secs, ""
    return heat, (
        f"house {supply:.1f} A with the car at {cfg.charger_min_amps} A on a"
        f" {cfg.home_max_amps:g} A supply would heat the main breaker"
    )


def _surplus(house: tuple[float, ...], car_phases: tuple[int, ...]) -> float:
    """Amps of export per car phase the house without the car leaves (negative: import)."""
    return -sum(house) / max(1, len(car_phases))


def _sun_lowering(
    mode: str, house: tuple[float, ...], car_phases: tuple[int, ...], setpoint: int, target: int
) -> str:
    """Why a solar mode lowers the car, in what the sun did (the breaker has room)."""
    surplus = _surplus(house, car_phases)
    what = (
        f"export fell to {surplus:.1f} A"
        if surplus >= 0
        else f"no export: the house imports {-surplus:.1f} A without the car"
    )
    return f"{mode}: {what}: lowering {setpoint} -> {target} A"


def _sun(
    house: tuple[float, ...], car_phases: tuple[int, ...], cfg: ControlConfig
) -> tuple[int, int]:
    """(raise to, lower below): the amps the export surplus pays for on each car phase.

    The surplus is the house without the car, netted over all phases (a negative supply is
    export). A raise needs the whole amp from the sun; a lowering waits until the car would
    import more than `solarImportToleranceAmps`, so the setpoint does not flap on 0.1 A.
    """
    surplus = _surplus(house, car_phases)
    return (
        math.floor(surplus + METER_RESOLUTION),
        math.floor(surplus + cfg.solar_tolerance + METER_RESOLUTION),
    )


def _follow_sun(
    state: ControllerState,
    *,
    sun: tuple[int, int],
    target: int,
    setpoint: int,
    now: float,
    cfg: ControlConfig,
    ch: _Draft,
) -> tuple[int, _Draft, Decision | None]:
    """Solar modes while charging: the breaker's target capped by the sun, or a stop."""
    raise_to, lower_below = sun
    cap = raise_to if raise_to >= setpoint + 1 else min(setpoint, lower_below)
    target = max(cfg.charger_min_amps, min(target, cap))
    ch, stop = _solar_stop(state, lower_below, now, cfg, ch)
    return target, ch, stop


def _solar_stop(
    state: ControllerState, lower_below: int, now: float, cfg: ControlConfig, ch: _Draft
) -> tuple[_Draft, Decision | None]:
    """Solar mode: stop once the car at its minimum has imported beyond the tolerance long enough."""
    if state.charge_mode != "solar" or lower_below >= cfg.charger_min_amps:
        return ch._replace(solar_short_since=None), None
    since = state.solar_short_since if state.solar_short_since is not None else now
    ch = ch._replace(solar_short_since=since)
    if now - since < cfg.solar_stop_secs - EPS or now < state.blocked_until:
        reason = (
            f"solar: not enough sun for {cfg.charger_min_amps} A for {now - since:.0f} s; "
            f"stopping after {cfg.solar_stop_secs:.0f} s"
        )
        return ch._replace(reason=reason), None
    online = state.vehicle is not None and state.vehicle.state is VehicleState.ONLINE
    if not online or not budget_left(state, now, cfg):
        return ch, None
    reason = f"solar: not enough sun for {now - since:.0f} s: stopping the charge"
    ch = ch._replace(
        solar_stopped=True,
        solar_short_since=None,
        solar_since=None,
        target=None,
        reason=reason,
        sent_at=spent(state, now),
    )
    return ch, Decision(_apply(state, ch), (StopCharging(reason),))


def _solar_start(
    state: ControllerState,
    *,
    house: tuple[float, ...],
    raw: int,
    sun: tuple[int, int],
    now: float,
    cfg: ControlConfig,
    pending: _Draft,
) -> Decision | None:
    """Solar modes: start a plugged-in, awake car once the sun has covered its minimum long enough.

    Only a car seen online and `Stopped` (plugged in) is started, never woken: a charge that would
    need a sleeping car simply waits. `minsolar` starts only a charge we stopped ourselves.
    """
    v = state.vehicle
    if (
        v is None
        or v.state is not VehicleState.ONLINE
        or v.charge is None
        or v.charge.charging_state != "Stopped"
        or state.refresh_pending
        or (state.charge_mode == "minsolar" and not state.solar_stopped)
    ):
        return None
    ceiling = car_ceiling(state, cfg)
    amps = min(ceiling, raw, sun[0])
    if state.charge_mode == "minsolar":
        amps = max(cfg.charger_min_amps, min(ceiling, raw))
    elif amps < cfg.charger_min_amps:
        reason = (
            f"solar: waiting for a surplus of {cfg.charger_min_amps} A (now {max(sun[0], 0)} A)"
        )
        return Decision(
            _apply(state, pending._replace(solar_since=None, target=None, reason=reason))
        )
    since = state.solar_since if state.solar_since is not None else now
    wait = 0.0 if state.charge_mode == "minsolar" else cfg.solar_start_secs
    if (
        now - since < wait - EPS
        or now < state.blocked_until
        or now < state.raise_hold_until
        or not budget_left(state, now, cfg)
    ):
        reason = f"solar: surplus for {amps} A; starting after {wait:.0f} s of it"
        if not budget_left(state, now, cfg):
            reason = BUDGET_REASON
        return Decision(
            _apply(state, pending._replace(solar_since=since, target=amps, reason=reason))
        )
    reason = (
        f"{state.charge_mode}: surplus for {amps} A for {now - since:.0f} s: starting the charge"
    )
    s = _apply(
        state,
        pending._replace(
            solar_since=None,
            solar_short_since=None,
            solar_stopped=False,
            raise_since=None,
            raise_floor=None,
        ),
    )
    actions: tuple[Action, ...] = ()
    if s.setpoint != amps:
        s = replace(s, setpoint=amps)
        actions = (SetAmps(amps, reason),)
    # The car ramps from nothing: readings are judged as during a command until it settles.
    s = replace(
        s,
        command_from=0,
        commanded_at=now,
        house_at_command=house,
        target=amps,
        reason=reason,
        sent_at=spent(s, now),
    )
    return Decision(s, (*actions, StartCharging(reason)))


def _holding(
    state: ControllerState,
    setpoint: int,
    worst: float,
    *,
    sun: tuple[int, int] | None,
    settling: bool,
    cfg: ControlConfig,
) -> str:
    """The reason while the setpoint stays: what the sun gives, a cut the car is following, or
    the worst phase against the limit."""
    if sun is not None:
        return f"{state.charge_mode}: holding {setpoint} A on a surplus of {sun[0]} A"
    if settling and worst > cfg.home_max_amps:
        # The cut is out; the meter still shows the old draw until the car has ramped down.
        return (
            f"{setpoint} A sent: waiting for the car to follow "
            f"(worst phase {worst:.1f} A of {cfg.home_max_amps:g} A until it has)"
        )
    return f"holding {setpoint} A: worst phase {worst:.1f} A of {cfg.home_max_amps:g} A"


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
    pending: _Draft,
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
    s = _apply(
        state, pending._replace(refresh_pending=True, last_unexplained_at=now, reason=reason)
    )
    return Decision(s, (RefreshVehicle("car seems to have stopped drawing"),))


def _not_charging(
    state: ControllerState,
    reading: MeterReading,
    raw: int,
    now: float,
    cfg: ControlConfig,
    *,
    pending: _Draft,
) -> Decision:
    """The car is not known to be charging: only an unexplained overload makes us look."""
    worst = reading.worst_phase_amps
    reason = (
        _vehicle_reason(state.vehicle)
        if state.vehicle is not None
        else "car state unknown: nothing sent"
    )
    ch = pending._replace(raise_since=None, raise_floor=None, target=None, reason=reason)
    if state.refresh_pending or now < state.blocked_until:
        return Decision(_apply(state, ch))
    if state.vehicle is None and not state.first_look_done:
        # One look at start-up (at most two data calls): /status shows the car, and a car that
        # is already charging is under control before the house gives any reason to ask.
        first = "first look at the car"
        ch = ch._replace(refresh_pending=True, first_look_done=True, reason=first)
        return Decision(_apply(state, ch), (RefreshVehicle(first),))
    if worst <= cfg.limit:
        return Decision(_apply(state, ch))
    if (
        state.last_unexplained_at is not None
        and now - state.last_unexplained_at < UNEXPLAINED_MIN_INTERVAL
    ):
        return Decision(_apply(state, ch))
    jumped = state.supply_at_look is None or worst - state.supply_at_look >= JUMP_AMPS
    if state.vehicle is not None and not jumped:
        return Decision(_apply(state, ch))
    ch = ch._replace(
        refresh_pending=True,
        last_unexplained_at=now,
        reason=f"unexplained overload ({worst:.1f} A): checking whether the car started charging",
    )
    return Decision(_apply(state, ch), (RefreshVehicle("unexplained overload"),))


def _maybe_resume(
    state: ControllerState, raw: int, house: tuple[float, ...], now: float, cfg: ControlConfig
) -> Decision:
    """Paused by pauseWhenOverloaded: start again once room for the minimum has lasted.

    The start is a ramp like a command (from nothing to the setpoint): until it settles the
    house is taken as at least what it was now, and no raise is decided on the room the car
    does not use yet; a raise waits for its own sleepTimeSecs of room after the start (a timer
    left from before the pause would raise at once, to room the car then takes back).
    """
    if raw < cfg.charger_min_amps + 1:
        return Decision(
            replace(
                state,
                room_since=None,
                reason="charging paused: no room in this capacity window for the car's minimum"
                if state.capacity_bound
                else "charging paused: the house alone is over the limit",
            )
        )
    since = state.room_since if state.room_since is not None else now
    s = replace(state, room_since=since)
    online = state.vehicle is not None and state.vehicle.state is VehicleState.ONLINE
    if (
        now - since >= cfg.sleep_secs
        and online
        and now >= state.blocked_until
        and now >= state.raise_hold_until
    ):
        reason = "room has returned: resuming charging"
        resumed = replace(
            s,
            paused=False,
            unresolvable_since=None,
            raise_since=None,
            raise_floor=None,
            command_from=s.setpoint,
            commanded_at=now,
            house_at_command=house,
            reason=reason,
        )
        return Decision(resumed, (StartCharging(reason),))
    return Decision(replace(s, reason="charging paused: waiting for room to last"))
