"""The cars on one supply: one controller per car behind one allocation.

The daemon always runs a fleet; one car is a fleet of one, which has nothing to share: its
controller sees every event as it comes, exactly as a single car's always did.

With several cars, each car keeps the single-car controller (`ChargeService` running
`control.decide`) with its own Vehicle, setpoint, driver's setting, mode and look-at-the-car schedule. The fleet reads the
one shared queue and routes each event: a meter reading is split by
`control.car_readings.split` (the benchmark runs the same function) so that every car's controller sees exactly its share of
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tesla_smart_charger.control import allocation, capacity, car_readings
from tesla_smart_charger.control.events import DriverLimit, Event, ModeChange, Overload, Reading
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.control.state import _charging
from tesla_smart_charger.runtime.service import ChargeService

_LOG = logging.getLogger(__name__)


def car_label(name: str | None, vin: str, *, cars: int) -> str | None:
    """The car in front of its log lines and alerts: its name, else its VIN; None when it is
    the only car, whose lines say "the car" as they always did."""
    return (name or vin) if cars > 1 else None


@dataclass(frozen=True, slots=True)
class FleetCar:
    """One car of the fleet and the controller that runs it."""

    vin: str  # as configured: its VIN, or a numeric Fleet id
    name: str | None
    priority: int
    service: ChargeService
    channel: int | None = None  # meterChargerChannel: a meter channel measuring this car alone
    # The VIN its link looked up for a numeric id, once known: the driver may name it so too.
    looked_up: Callable[[], str | None] | None = None

    @property
    def label(self) -> str:
        """The car in words: its name, else its VIN."""
        return self.name or self.vin

    def named(self, vin: str) -> bool:
        """`vin` names this car (its configured id or its VIN, any case)."""
        names = {self.vin.upper()}
        found = self.looked_up() if self.looked_up is not None else None
        if found:
            names.add(found.upper())
        return vin.strip().upper() in names


class Fleet:
    """Routes the shared queue's events to one ChargeService per car."""

    def __init__(
        self,
        queue: asyncio.Queue[Event],
        cars: Sequence[FleetCar],
        *,
        limit: float,
        pause_when_overloaded: bool,
        clock: Callable[[], float] = time.monotonic,
        circuit_off: Callable[[], bool] = lambda: False,
    ) -> None:
        """`circuit_off`: the shared safety relay has the chargers' circuit off (no car draws)."""
        if not cars:
            raise ValueError("a fleet needs at least one car")
        self.queue = queue
        self._clock = clock
        self.cars: tuple[FleetCar, ...] = tuple(cars)
        self.limit = limit
        self.pause_when_overloaded = pause_when_overloaded
        self.shares: tuple[allocation.Share, ...] = ()
        self.house_floor: allocation.HouseFloor | None = None  # while a command settles
        self.ledger: allocation.Ledger | None = None  # what each car has had (equal priorities)
        self.overload_queued = False
        self.last_reading: MeterReading | None = None  # the real one (breaker heat, alerts)
        self.circuit_off = circuit_off

    @property
    def shared(self) -> bool:
        """Several cars share the supply (and the meter): readings are split between them."""
        return len(self.cars) > 1

    def overload(self, source: str) -> bool:
        """/overload: one Overload on the shared queue (a burst is one).

        True if it was queued now: none waits, here or for a car's controller to take it.
        """
        first = self.cars[0].service
        if first.cfg.mode == "measured" and first._kick_meter is not None:
            first._kick_meter()
        if self.overload_queued or any(c.service.overload_queued for c in self.cars):
            return False
        self.overload_queued = True
        self.queue.put_nowait(Overload(at=self._clock(), source=source))
        return True

    def route(self, event: Event) -> None:
        """Put `event` (or each car's part of it) on the cars' own queues."""
        if isinstance(event, Overload):
            self.overload_queued = False
        if isinstance(event, Reading):
            self.last_reading = event.reading
        if not self.shared:
            # Alone on the supply: the whole room, every reading as measured, every event its own.
            self._hand(self.cars[0], event)
            return
        if isinstance(event, Reading) and event.reading.valid:
            cars = tuple(
                car_readings.Car(c.vin, c.priority, c.service.state, c.service.cfg, c.channel)
                for c in self.cars
            )
            split = car_readings.split(
                cars,
                event.reading,
                self.limit,
                pause_when_overloaded=self.pause_when_overloaded,
                floor=self.house_floor,
                ledger=self.ledger,
                circuit_off=self.circuit_off(),
            )
            self.house_floor, self.shares = split.floor, split.shares
            self.ledger = split.ledger
            ceilings = self._capacity(event, split.readings)
            for car, reading, ceiling in zip(self.cars, split.readings, ceilings, strict=True):
                car.service.queue.put_nowait(
                    replace(
                        reading,
                        import_ceiling_w=ceiling,
                        hold_raises_until=event.hold_raises_until,
                    )
                )
            return
        if isinstance(event, DriverLimit | ModeChange):
            for car in self.cars:
                if car.named(event.vin):
                    car.service.queue.put_nowait(event)
            return
        if isinstance(event, Overload) and self.cars[0].service.cfg.mode == "push":
            # No meter to share by: the lowest-priority charging car is cut first; among equal
            # priorities the one set highest (cuts then fall evenly, not always on one car).
            charging = [c for c in self.cars if _charging(c.service.state)]
            pool = charging or self.cars
            target = min(pool, key=lambda c: (c.priority, -(c.service.state.setpoint or 0), c.vin))
            self._hand(target, event)
            return
        for car in self.cars:
            self._hand(car, event)

    @staticmethod
    def _hand(car: FleetCar, event: Event) -> None:
        """Put `event` on the car's queue; an Overload counts as queued until the car's
        controller takes it (it clears the flag), as /overload's reply has always said."""
        if isinstance(event, Overload):
            car.service.overload_queued = True
        car.service.queue.put_nowait(event)

    # --- stopping ----------------------------------------------------------------------------
    @property
    def in_flight(self) -> bool:
        """A car call (a cut, or the look before it) is on its way to some car."""
        return any(car.service.in_flight is not None for car in self.cars)

    def request_stop(self) -> None:
        """SIGTERM with a call in flight: every controller ends once its own call has landed."""
        for car in self.cars:
            car.service.request_stop()

    def persist_pending(self) -> bool:
        """On the way out: each car keeps a push-mode cut it did not carry out (True: any)."""
        written = [car.service.persist_pending() for car in self.cars]  # every car, no short cut
        return any(written)

    def _capacity(self, event: Reading, readings: tuple[Reading, ...]) -> tuple[float | None, ...]:
        """Each car's part of the capacity tariff's ceiling (None each without the tariff)."""
        if event.import_ceiling_w is None:
            return (None,) * len(self.cars)
        real = event.reading
        powers = []
        for car, mine in zip(self.cars, readings, strict=True):
            view = allocation.car_view(
                car.service.state, car.service.cfg, real, vin=car.vin, priority=car.priority
            )
            volts = sum(
                (v if i < len(real.phase_volts) and (v := real.phase_volts[i]) else 230.0)
                for i in view.demand.phases
            )
            powers.append(
                capacity.CarPower(
                    car.priority,
                    view.demand.charging or view.demand.paused,
                    view.draw * volts,
                    view.demand.max_amps * volts,
                    capacity.power_w(mine.reading.phase_amps, mine.reading.phase_volts),
                )
            )
        real_w = capacity.power_w(real.phase_amps, real.phase_volts)
        return capacity.fleet_ceilings(event.import_ceiling_w, real_w, powers)

    async def run(self) -> None:
        """Run every car's controller and route events; a failure ends all.

        Returns once every controller has stopped (`request_stop`), so a drain on SIGTERM
        ends when the last call has landed. A single failure is raised as itself, not inside
        an exception group, so the daemon's log names it as it always did.
        """
        try:
            async with asyncio.TaskGroup() as group:
                runs = [
                    group.create_task(car.service.run(), name=f"controller {car.vin}")
                    for car in self.cars
                ]
                router = group.create_task(self._route_forever(), name="fleet router")
                await asyncio.wait(runs)
                router.cancel()
        except BaseExceptionGroup as failed:
            if len(failed.exceptions) == 1:
                raise failed.exceptions[0] from None
            raise

    async def _route_forever(self) -> None:
        while True:
            self.route(await self.queue.get())
