"""Several cars on one supply (issue 14): one controller per car behind one allocation.

Each car keeps the single-car controller (`ChargeService` running `control.decide`) with its
own Vehicle, setpoint, driver's setting, mode and look-at-the-car schedule. The fleet reads the
one shared queue and routes each event: a meter reading is split by
`control.allocation.split_reading` so that every car's controller sees exactly its share of
the room as headroom (cuts immediate, lowest priority first; raises deliberate, highest
priority first); a driver's limit or mode goes to the car it names; everything else (tokens,
the car link coming back, meter failures) goes to every car. In push mode an /overload goes
to the lowest-priority charging car first.

Each car has its own escalation (`safety.Escalator`): its reading carries the real one
(`whole`: is the breaker over?) and its own charger channel (`meterChargerChannel`) as
`car_amps`; without a channel a cut still followed by an overload is judged by a look at that
car, so a cut one car ignores is told apart from another car's cut.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from tesla_smart_charger.control import allocation
from tesla_smart_charger.control.state import _charging, _settling
from tesla_smart_charger.events import DriverLimit, Event, ModeChange, Overload, Reading
from tesla_smart_charger.models import MeterReading
from tesla_smart_charger.service import ChargeService

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetCar:
    """One car of `vehicles` and the controller that runs it."""

    vin: str
    name: str | None
    priority: int
    service: ChargeService
    channel: int | None = None  # meterChargerChannel: a meter channel measuring this car alone

    @property
    def label(self) -> str:
        """The car in words: its name, else its VIN."""
        return self.name or self.vin


class Fleet:
    """Routes the shared queue's events to one ChargeService per car."""

    def __init__(
        self,
        queue: asyncio.Queue[Event],
        cars: list[FleetCar],
        *,
        limit: float,
        pause_when_overloaded: bool,
    ) -> None:
        self.queue = queue
        self.cars = cars
        self.limit = limit
        self.pause_when_overloaded = pause_when_overloaded
        self.shares: tuple[allocation.Share, ...] = ()
        self.house_floor: allocation.HouseFloor | None = None  # while a command settles
        self.overload_queued = False
        self.last_reading: MeterReading | None = None  # the real one (breaker heat, alerts)
        self.clients: list[Any] = []  # each car's TeslaClient (the daemon's health and probe)
        self.roads: list[Any] = []  # each car's Vehicle (BLE first when configured)

    def view(self, car: FleetCar, reading: Reading, own: float | None = None) -> allocation.CarView:
        """The car as the allocation sees it: its limits, where it is set, what it draws.

        With its own channel (`own`), a settled car that draws less than it was told counts
        what it really draws (the room is the others'); one that draws more (it ignored a cut)
        still counts only what it was told, so its excess is the house's and the other cars
        are cut for it until its escalation stops it: the breaker comes first.
        """
        state, cfg = car.service.state, car.service.cfg
        view = allocation.car_view(state, cfg, reading.reading, vin=car.vin, priority=car.priority)
        if own is not None and not _settling(state, cfg, reading.reading.at):
            view = replace(view, draw=min(view.draw, own))
        return view

    def own_reading(
        self,
        mine: MeterReading,
        view: allocation.CarView,
        share: allocation.Share | None,
        own: float | None,
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

    def overload(self, source: str) -> bool:
        """/overload with several cars: one Overload on the shared queue (a burst is one)."""
        first = self.cars[0].service
        if first.cfg.mode == "measured" and first._kick_meter is not None:
            first._kick_meter()
        if self.overload_queued:
            return False
        self.overload_queued = True
        self.queue.put_nowait(Overload(at=time.monotonic(), source=source))
        return True

    @staticmethod
    def room_worst(
        car: FleetCar, views: tuple[allocation.CarView, ...], real: MeterReading
    ) -> float | None:
        """On the car's phases: the house without any car plus every other car's minimum.

        A car its escalation stopped resumes once its minimum fits under the limit beside
        them, even while another car uses the room it left (the sharing then cuts that one).
        """
        values = []
        for i in next(v.demand.phases for v in views if v.demand.vin == car.vin):
            if i >= len(real.phase_amps):
                continue
            house = real.phase_amps[i] - sum(v.draw for v in views if i in v.demand.phases)
            others = sum(
                v.demand.min_amps
                for v in views
                if v.demand.vin != car.vin and v.demand.charging and i in v.demand.phases
            )
            values.append(house + others)
        return max(values) if values else None

    def route(self, event: Event) -> None:
        """Put `event` (or each car's part of it) on the cars' own queues."""
        if isinstance(event, Overload):
            self.overload_queued = False
        if isinstance(event, Reading):
            self.last_reading = event.reading
        if isinstance(event, Reading) and event.reading.valid:
            real = event.reading
            measured = dict(real.car_channel_amps)
            owns = [measured.get(c.channel) if c.channel is not None else None for c in self.cars]
            views = tuple(self.view(c, event, o) for c, o in zip(self.cars, owns, strict=True))
            self.house_floor = allocation.house_floor(views, real, self.house_floor)
            readings, self.shares = allocation.split_reading(
                views,
                real,
                self.limit,
                pause_when_overloaded=self.pause_when_overloaded,
                floor=self.house_floor,
            )
            by_vin = {s.vin: s for s in self.shares}
            for car, view, share, own in zip(self.cars, views, readings, owns, strict=True):
                mine = self.own_reading(share, view, by_vin.get(car.vin), own)
                room = self.room_worst(car, views, real)
                car.service.queue.put_nowait(Reading(mine, whole=real, room_worst=room))
            return
        if isinstance(event, DriverLimit | ModeChange):
            for car in self.cars:
                if car.vin.upper() == event.vin.upper():
                    car.service.queue.put_nowait(event)
            return
        if isinstance(event, Overload) and self.cars[0].service.cfg.mode == "push":
            # No meter to share by: the lowest-priority charging car is cut first.
            charging = [c for c in self.cars if _charging(c.service.state)]
            pool = charging or self.cars
            target = min(pool, key=lambda c: (c.priority, c.vin))
            target.service.queue.put_nowait(event)
            return
        for car in self.cars:
            car.service.queue.put_nowait(event)

    async def run(self) -> None:
        """Run every car's controller and route events until cancelled; a failure ends all."""
        async with asyncio.TaskGroup() as group:
            for car in self.cars:
                group.create_task(car.service.run(), name=f"controller {car.vin}")
            while True:
                self.route(await self.queue.get())
