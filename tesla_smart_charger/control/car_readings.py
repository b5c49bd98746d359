"""One meter reading turned into each car's own reading (several cars, issue 14).

The one split the daemon's fleet (`runtime.fleet.Fleet.route`) runs; the benchmark's two-car
rows run that Fleet itself, so they measure exactly the daemon's code.
Pure: the cars' controller states and the previous house floor and ledger in, the readings,
shares and new floor and ledger out; the caller keeps both until the next reading.

Each car's `Reading` carries its share as headroom (`reading`), the real reading it was split
from (`whole`: its escalation judges the breaker on that), its own charger channel
(`meterChargerChannel`) as `car_amps`, and `room_worst` (what its minimum must fit beside
before a car its escalation stopped resumes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tesla_smart_charger.control.allocation import (
    CarView,
    HouseFloor,
    Ledger,
    Share,
    advance_ledger,
    car_view,
    house_floor,
    house_without_cars,
    split_reading,
)
from tesla_smart_charger.control.events import Reading
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.control.state import ControlConfig, ControllerState


@dataclass(frozen=True, slots=True)
class Car:
    """One car as the split needs it: who it is, its controller, its own meter channel."""

    vin: str
    priority: int
    state: ControllerState
    cfg: ControlConfig
    channel: int | None = None  # meterChargerChannel: a meter channel measuring this car alone


@dataclass(frozen=True, slots=True)
class Split:
    """Each car's reading (in the order the cars were given), the shares and the new floor."""

    readings: tuple[Reading, ...]
    shares: tuple[Share, ...]
    floor: HouseFloor | None  # keep it and pass it to the next `split`
    ledger: Ledger | None = None  # what each car has had: keep it and pass it on too


def split(
    cars: tuple[Car, ...],
    real: MeterReading,
    limit: float,
    *,
    pause_when_overloaded: bool,
    floor: HouseFloor | None,
    ledger: Ledger | None = None,
    circuit_off: bool = False,
) -> Split:
    """Each car's reading of the valid reading `real` (see `allocation.split_reading`).

    `ledger` (the last `Split.ledger`) breaks ties between equal priorities: the car that
    has had less this session is kept (`allocation.advance_ledger`). `circuit_off`: the
    safety relay has the chargers' circuit off, so no car draws anything, whatever its
    controller set: the house is the whole supply (else it would look smaller by every
    setpoint, and a stopped car's room to come back too large).
    """
    measured = dict(real.car_channel_amps)
    owns = [measured.get(c.channel) if c.channel is not None else None for c in cars]
    views = tuple(_view(c, real, own) for c, own in zip(cars, owns, strict=True))
    if circuit_off:
        views = tuple(replace(v, draw=0.0, before=None) for v in views)
    new_floor = house_floor(views, real, floor)
    new_ledger = advance_ledger(views, real.at, ledger)
    readings, shares = split_reading(
        views,
        real,
        limit,
        pause_when_overloaded=pause_when_overloaded,
        floor=new_floor,
        ties=new_ledger.order,
    )
    by_vin = {s.vin: s for s in shares}
    house = house_without_cars(views, real)
    out = tuple(
        Reading(
            _own_reading(mine, view, by_vin.get(car.vin), own),
            whole=real,
            room_worst=_room_worst(car.vin, view, views, house),
            giving_turn=bool((s := by_vin.get(car.vin)) and s.yielding),
        )
        for car, view, mine, own in zip(cars, views, readings, owns, strict=True)
    )
    return Split(out, shares, new_floor, new_ledger)


def _view(car: Car, real: MeterReading, own: float | None) -> CarView:
    """The car as the allocation sees it: its limits, where it is set, what it draws.

    With its own channel (`own`), a settled car that draws less than it was told counts
    what it really draws (the room is the others'); one that draws more (it ignored a cut)
    still counts only what it was told, so its excess is the house's and the other cars
    are cut for it until its escalation stops it: the breaker comes first.
    """
    view = car_view(car.state, car.cfg, real, vin=car.vin, priority=car.priority)
    if own is not None and not view.settling:
        view = replace(view, draw=min(view.draw, own))
    return view


def _own_reading(
    mine: MeterReading, view: CarView, share: Share | None, own: float | None
) -> MeterReading:
    """The car's share, with its own channel as `car_amps` (its headroom still its share)."""
    if own is None:
        return mine
    phases = list(mine.phase_amps)
    if share is not None and not view.solar:
        for i in view.demand.phases:
            if i < len(phases):
                phases[i] += own - view.draw  # the controller takes `own` off again
    return replace(mine, phase_amps=tuple(phases), car_amps=own)


def _room_worst(
    vin: str, view: CarView, views: tuple[CarView, ...], house: tuple[float, ...]
) -> float | None:
    """On the car's phases: the house without any car plus every other car's minimum.

    A car its escalation stopped resumes once its minimum fits under the limit beside
    them, even while another car uses the room it left (the sharing then cuts that one).
    """
    values = []
    for i in view.demand.phases:
        if i >= len(house):
            continue
        others = sum(
            v.demand.min_amps
            for v in views
            if v.demand.vin != vin and v.demand.charging and i in v.demand.phases
        )
        values.append(house[i] + others)
    return max(values) if values else None
