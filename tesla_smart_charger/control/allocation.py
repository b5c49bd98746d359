"""Sharing one supply between several cars: who gets how many amps.

A pure function of the cars and the room the house leaves on each phase. The rules:

- every charging car first gets its minimum; when the room cannot give every car its minimum,
  the lowest-priority car is the one given up first (it is the first to be paused, or with
  `pauseWhenOverloaded: false` it holds its minimum); until its pause has landed it still
  draws its minimum, so the others are not given that room yet;
- a paused car competes for room like a charging one (by priority): only the cars whose
  minimum fits are shown room to resume, so two paused cars never resume into the same room;
- what is left goes to the highest priority first, and evenly (to within 1 A) among cars of
  equal priority, each within its own maximum (its `chargerMaxAmps`, the driver's setting and
  its mode's cap);
- a car's amps count only on the phases it draws from;
- among cars of equal priority the one that has had less this session (`Ledger`: amp-seconds)
  is kept and gets the odd amp; a car still drawing comes before a paused one, and gives way
  to it deliberately (`Share.yielding`: paused after pauseAfterSecs, no overload) once the
  ledger says the paused one has had less by more than `FAIR_MARGIN_SECS` at the minimum.

Because the room is handed out from the highest priority down, a cut falls on the lowest
priority first. Each car's own controller turns its share into commands (`split_reading` shows
it the share as headroom), so a cut is immediate and a raise deliberate for every car alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import groupby

from tesla_smart_charger.control.measured import _car_phases
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.control.state import (
    METER_RESOLUTION,
    ControlConfig,
    ControllerState,
    _charging,
    _settling,
)
from tesla_smart_charger.control.state import ceiling as car_ceiling


@dataclass(frozen=True, slots=True)
class CarDemand:
    """One car as the allocation sees it."""

    vin: str
    priority: int
    min_amps: int
    max_amps: int  # the most it may get: chargerMaxAmps, the driver's setting, its mode's cap
    phases: tuple[int, ...]  # supply phases it draws from (0-based)
    setpoint: int | None = None  # where it is set now (None: not known)
    charging: bool = True
    paused: bool = False  # paused by pauseWhenOverloaded: draws nothing until a share resumes it


@dataclass(frozen=True, slots=True)
class Share:
    """A car's share: `amps`, or `paused` when even its minimum does not fit."""

    vin: str
    amps: int
    paused: bool = False
    # Given up: how far the worst of its phases is over the limit with it at its minimum and
    # every other car at its share (what its pause deadline is judged on).
    over: float = 0.0
    # Given up for an equal-priority car that has had less (not for an overload): it is shown
    # YIELD_OVER, so its own controller pauses it after pauseAfterSecs.
    yielding: bool = False


# A yielding car is shown this much over the limit: enough for its controller to count down
# to a pause (below its minimum), too little to shorten pauseAfterSecs (1.03 x a 30 A main
# never heats the breaker model).
YIELD_OVER = 1.0


def room_per_phase(limit: float, house: tuple[float, ...]) -> tuple[float, ...]:
    """What the house without any car leaves on each phase below `limit`."""
    return tuple(limit - h for h in house)


def _fits(room: list[float], car: CarDemand, amps: float) -> bool:
    return all(i >= len(room) or room[i] + METER_RESOLUTION >= amps for i in car.phases)


def _take(room: list[float], car: CarDemand, amps: float) -> None:
    for i in car.phases:
        if i < len(room):
            room[i] -= amps


def _need(car: CarDemand) -> int:
    return car.min_amps + 1 if car.paused else car.min_amps


def share(
    cars: tuple[CarDemand, ...],
    room: tuple[float, ...],
    *,
    pause_when_overloaded: bool,
    ties: tuple[str, ...] = (),
) -> tuple[Share, ...]:
    """Each charging car's amps; cars not charging get no share (they draw nothing).

    `ties` (`Ledger.order`) orders cars of equal priority, the one that has had less first;
    a car still drawing comes before a paused one, so a paused car never resumes into room
    an equal car still draws (that car yields first). Cars not in `ties` follow, by VIN:
    the same inputs give the same shares.
    """
    rank = {vin: i for i, vin in enumerate(ties)}

    def order(c: CarDemand) -> tuple[int, bool, int, str]:
        return (-c.priority, c.paused, rank.get(c.vin, len(rank)), c.vin)

    active = sorted((c for c in cars if c.charging), key=order)
    left = list(room)
    # Minimums from the highest priority down: a car whose minimum no longer fits is given up
    # (lowest priority first, because of the order).
    kept: list[CarDemand] = []
    given_up: list[CarDemand] = []
    for car in active:
        # A paused car resumes only with 1 A to spare (as a single car does): its share must
        # give it that, or it would hold room it never uses.
        need = _need(car)
        if _fits(left, car, need):
            _take(left, car, need)
            kept.append(car)
        else:
            given_up.append(car)
            if not (pause_when_overloaded and car.paused):
                # It keeps drawing its minimum (held there, or until its pause lands).
                _take(left, car, car.min_amps)
    yielding = _yields(kept, given_up, left, rank) if pause_when_overloaded else set()
    kept = [c for c in kept if c.vin not in yielding]  # it draws its minimum until it pauses
    given_up += [c for c in active if c.vin in yielding]
    amps = {c.vin: _need(c) for c in kept}
    # The rest, one amp at a time: highest priority group first, evenly inside a group.
    for _, group_iter in groupby(kept, key=lambda c: c.priority):
        group = list(group_iter)
        grew = True
        while grew:
            grew = False
            for car in sorted(group, key=lambda c: (amps[c.vin], *order(c)[2:])):
                if amps[car.vin] < car.max_amps and _fits(left, car, 1.0):
                    _take(left, car, 1.0)
                    amps[car.vin] += 1
                    grew = True
                    break  # the least-served car of the group goes next
    out = [Share(c.vin, amps[c.vin]) for c in kept]
    out += [
        Share(c.vin, c.min_amps, paused=True, over=max(YIELD_OVER, _over(left, c)), yielding=True)
        if c.vin in yielding
        else Share(c.vin, c.min_amps, paused=pause_when_overloaded, over=_over(left, c))
        for c in given_up
    ]
    return tuple(out)


def _yields(
    kept: list[CarDemand], given_up: list[CarDemand], left: list[float], rank: dict[str, int]
) -> set[str]:
    """Drawing cars that give way to a paused car of equal priority that has had less.

    Only where the paused car's minimum would fit in the room the drawing car leaves; until
    the drawing car's pause lands the paused one stays paused, so the swap never overloads.
    """
    out: set[str] = set()
    for waiting in given_up:
        if not waiting.paused or waiting.vin not in rank:
            continue
        for car in reversed(kept):  # the lowest priority, the most had, yields first
            if (
                car.paused
                or car.vin in out
                or car.priority != waiting.priority
                or rank.get(car.vin, len(rank)) <= rank[waiting.vin]
            ):
                continue
            freed = list(left)
            _take(freed, car, -float(car.min_amps))
            if _fits(freed, waiting, _need(waiting)):
                out.add(car.vin)
                break
    return out


def _over(left: list[float], car: CarDemand) -> float:
    return max(0.0, max((-left[i] for i in car.phases if i < len(left)), default=0.0))


def whole_amps(value: float) -> int:
    """Amps the car can be set to: down to the whole amp (a meter's 0.01 A noise forgiven)."""
    return math.floor(value + METER_RESOLUTION)


@dataclass(frozen=True, slots=True)
class CarView:
    """A car as the fleet sees it on one reading: its demand and what it draws now (estimate)."""

    demand: CarDemand
    draw: float  # amps it draws now on each of its phases (the controller's own estimate)
    solar: bool = False  # solar/minsolar: it sees the real surplus, and is capped by it here
    settling: bool = False  # a command (or a start) it was sent is still ramping
    commanded_at: float | None = None  # when that command went out (or landed)
    unplugged: bool = False  # the last look said Disconnected: its session has ended
    before: float | None = None  # settling: what it was set to before the command


def _drawn(cars: tuple[CarView, ...], phases: int) -> list[float]:
    """What the cars are estimated to draw on each phase."""
    total = [0.0] * phases
    for c in cars:
        for i in c.demand.phases:
            if i < phases:
                total[i] += c.draw
    return total


def house_without_cars(cars: tuple[CarView, ...], reading: MeterReading) -> tuple[float, ...]:
    """The supply per phase minus what every car is estimated to draw on it."""
    total = _drawn(cars, len(reading.phase_amps))
    return tuple(a - t for a, t in zip(reading.phase_amps, total, strict=True))


@dataclass(frozen=True, slots=True)
class HouseFloor:
    """The house (without any car) when the commands now settling went out."""

    house: tuple[float, ...]
    commands: frozenset[tuple[str, float]]  # (vin, commanded_at) of the cars settling


def house_floor(
    cars: tuple[CarView, ...], reading: MeterReading, floor: HouseFloor | None
) -> HouseFloor | None:
    """What the house estimate is held to while a command settles (None: nothing settles).

    While a car ramps its old value is counted (`car_view`), so the house estimate falls by
    whatever the car already dropped: the room would grow, the other cars' shares with it,
    and a given-up car's pause countdown would restart. The shell keeps this value between
    readings and passes it to `split_reading`. It is taken on the first reading after a
    command (the car has not moved yet, and everything the estimate needs is known then:
    the command may have been decided on a look at the car, between readings) and kept until
    the command settles; a further command meanwhile keeps the higher of the two.
    """
    commands = frozenset(
        (c.demand.vin, c.commanded_at) for c in cars if c.settling and c.commanded_at is not None
    )
    if not commands:
        return None
    if floor is not None and floor.commands == commands:
        return floor
    # On that first reading a car just raised still draws its old value (its `draw` already
    # counts the new one): counting the new one would take the house too low by the raise,
    # give the room to a paused car and cut the raised car back a second later.
    old = floor.commands if floor is not None else frozenset()
    house = house_without_cars(
        tuple(
            replace(c, draw=min(c.draw, c.before))
            if c.before is not None and (c.demand.vin, c.commanded_at) not in old
            else c
            for c in cars
        ),
        reading,
    )
    if floor is not None and floor.commands & commands and len(floor.house) == len(house):
        house = tuple(max(h, f) for h, f in zip(house, floor.house, strict=True))
    return HouseFloor(house, commands)


# How much more a car ahead in the tie order must have had (s at the larger minimum of the
# two) before the one behind goes ahead. A swap under a shortage costs the yielding car
# pauseAfterSecs (120 s) at its minimum with the room the other would use left empty, then
# sleepTimeSecs before the other resumes, and a stop, a start and usually a set (Fleet
# calls). Ten minutes keeps that under about a third of each turn (a turn lasts 2 x the
# margin at about the minimum: 20 min) and the two cars' energy within 10 min at the minimum
# (0.23 kWh at 230 V) of each other; the odd amp then changes car at most every 2 x 10 min
# x 6 = 120 min.
FAIR_MARGIN_SECS = 600.0
LEDGER_MAX_GAP = 60.0  # s: a longer gap between readings is counted as this (no meter)


@dataclass(frozen=True, slots=True)
class Ledger:
    """What each car has had this session (amp-seconds) and the tie order it gives.

    The shell keeps it between readings, like the floor. A car's session ends when a look
    says it is unplugged (it starts again from nothing).
    """

    at: float  # the reading it was last advanced to
    had: tuple[tuple[str, float], ...]  # (vin, amp-seconds), by VIN
    order: tuple[str, ...]  # equal priorities: the car that has had less first


def advance_ledger(cars: tuple[CarView, ...], at: float, ledger: Ledger | None) -> Ledger:
    """The ledger at `at`: each car's estimated draw added for the time since the last.

    The order changes only when a car ahead has had more than FAIR_MARGIN_SECS at the
    larger minimum of the two more than the car behind it (hysteresis: two equal cars
    never swap every reading). New cars join by what they have had (nothing), then VIN.
    """
    dt = 0.0 if ledger is None else min(max(0.0, at - ledger.at), LEDGER_MAX_GAP)
    old = dict(ledger.had) if ledger is not None else {}
    had = {
        c.demand.vin: old.get(c.demand.vin, 0.0) + max(0.0, c.draw) * dt
        for c in cars
        if not c.unplugged
    }
    order = [v for v in (ledger.order if ledger is not None else ()) if v in had]
    order += sorted((v for v in had if v not in order), key=lambda v: (had[v], v))
    least = {c.demand.vin: c.demand.min_amps for c in cars}
    swapped = True
    while swapped:  # ends: every swap moves more amp-seconds later in the order
        swapped = False
        for i in range(len(order) - 1):
            a, b = order[i], order[i + 1]
            if had[a] - had[b] > FAIR_MARGIN_SECS * max(least[a], least[b]):
                order[i], order[i + 1] = b, a
                swapped = True
    return Ledger(at, tuple(sorted(had.items())), tuple(order))


def split_reading(
    cars: tuple[CarView, ...],
    reading: MeterReading,
    limit: float,
    *,
    pause_when_overloaded: bool,
    floor: HouseFloor | None = None,
    ties: tuple[str, ...] = (),
) -> tuple[tuple[MeterReading, ...], tuple[Share, ...]]:
    """One reading per car, in which the car's own headroom is exactly its share.

    Each car keeps its own unchanged single-car controller: it is shown a supply where the other
    cars and the room they were given count as house load (`limit - share + own draw` on its
    phases), so cuts stay immediate and raises deliberate car by car. A car the shares pause sees
    no room at all (its controller then pauses it as pauseWhenOverloaded says); a car not
    charging, or in a solar mode, sees the real supply without the other cars (an unexplained
    rise is then its own; the export it follows is the real one). A solar car's share is capped
    by the surplus, so the fast cars are given the room it cannot use.

    `ties` (`Ledger.order`): equal priorities, the car that has had less first.
    `floor` (from `house_floor`): while a car settles, the house is taken as at least what it
    was when the command went out, as a single car's controller does (one overload is one
    command; a given-up car keeps counting down). A car given up but not paused yet is shown
    the supply it would leave with it at its minimum, so its pause deadline is judged on the
    real overload (`measured._pause_wait`).
    """
    n = len(reading.phase_amps)
    total = _drawn(cars, n)
    house = tuple(a - t for a, t in zip(reading.phase_amps, total, strict=True))
    if floor is not None and len(floor.house) == n:
        house = tuple(max(h, f) for h, f in zip(house, floor.house, strict=True))
    surplus = -sum(house)
    demands = tuple(
        replace(
            c.demand,
            max_amps=max(
                c.demand.min_amps,
                min(c.demand.max_amps, whole_amps(surplus / max(1, len(c.demand.phases)))),
            ),
        )
        if c.solar
        else c.demand
        for c in cars
    )
    shares = share(
        demands,
        room_per_phase(limit, house),
        pause_when_overloaded=pause_when_overloaded,
        ties=ties,
    )
    by_vin = {s.vin: s for s in shares}
    out: list[MeterReading] = []
    for c in cars:
        mine = by_vin.get(c.demand.vin)
        phases = list(reading.phase_amps)
        for i in range(n):
            others = total[i] - (c.draw if i in c.demand.phases else 0.0)
            if mine is not None and i in c.demand.phases and not c.solar:
                room: float = mine.amps
                if mine.paused:
                    # landed: no room at all; still drawing: what is left with it at its minimum
                    room = 0 if c.demand.paused else c.demand.min_amps - mine.over
                elif mine.over > 0:
                    # given up and held at its minimum (pauseWhenOverloaded false): it is shown
                    # the real overload, so its controller says so and /health can tell
                    room = c.demand.min_amps - mine.over
                phases[i] = limit - room + c.draw
            else:
                phases[i] = reading.phase_amps[i] - others
        out.append(replace(reading, phase_amps=tuple(phases), car_amps=None))
    return tuple(out), shares


def car_view(
    state: ControllerState, cfg: ControlConfig, reading: MeterReading, *, vin: str, priority: int
) -> CarView:
    """One car's controller state as the allocation sees it (pure; the fleet and the benchmark).

    Its draw is what its controller assumes (the setpoint; the old value while a command
    settles, so a cut still ramping down is not counted as room yet). Three states are not
    plainly "charging" or "not": a car not looked at yet may be drawing anything, so it is
    counted at its maximum and given a share (otherwise its draw counts as house load and the
    other cars are cut for it, then paused); a car paused by pauseWhenOverloaded draws nothing
    but competes for room by priority (so the shares, not each car alone, decide who resumes);
    a car whose charge_start is in flight is counted as charging.
    """
    ceiling = car_ceiling(state, cfg)
    unknown = state.vehicle is None and (state.refresh_pending or not state.first_look_done)
    starting = state.call_in_flight == "charge_start"
    charging = (_charging(state) and not state.paused) or starting
    settling = _settling(state, cfg, reading.at)
    draw = 0.0
    if charging:
        draw = float(state.setpoint or 0)
        if settling and state.command_from is not None:
            draw = float(max(draw, state.command_from))
    elif unknown:
        draw = float(max(cfg.charger_min_amps, ceiling))
    demand = CarDemand(
        vin=vin,
        priority=priority,
        min_amps=cfg.charger_min_amps,
        max_amps=max(cfg.charger_min_amps, ceiling),
        phases=_car_phases(state, cfg, reading),
        setpoint=state.setpoint,
        charging=charging or unknown or state.paused,
        paused=state.paused and not starting,
    )
    return CarView(
        demand,
        draw,
        solar=state.charge_mode != "fast",
        settling=settling,
        commanded_at=state.commanded_at,
        before=float(state.command_from)
        if charging and settling and state.command_from is not None
        else None,
        unplugged=state.vehicle is not None
        and state.vehicle.charge is not None
        and state.vehicle.charge.charging_state == "Disconnected",
    )
