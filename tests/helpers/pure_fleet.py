"""A pure two-or-more-car harness for the allocation's unit tests: `decide` per car behind
`car_readings.split`, the cars following commands after a fixed lag. No loop, no I/O.

It is a test double of the fleet's shell, kept here (not in the package) so that the only
driver of `decide()` the daemon and the benchmark run is `runtime.service.ChargeService`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tesla_smart_charger import control as core
from tesla_smart_charger.bench.solar import LaggedCar
from tesla_smart_charger.control.allocation import HouseFloor, Ledger
from tesla_smart_charger.control.car_readings import Car
from tesla_smart_charger.control.car_readings import split as split_cars
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)

VOLTS = 230.0
MAX_AMPS = 16


class PureFleet:
    """N cars, each with its own `control.decide`, behind `car_readings.split` (as the fleet).

    A pure stand-in for the fleet's shell, for the allocation's unit tests (the benchmark runs
    the daemon's real shell, bench/shell.py), in virtual time at 1 s: one reading a second; the
    allocation shows each controller its own reading; vehicle data replies 1 s after the
    request; a command is acknowledged after 1 s and the car draws the new value LAG s after
    it was sent (`LaggedCar`, which also counts the Fleet calls). One car is the single-car
    case (the solar day); two cars the evening. Deterministic: no clock, no randomness.
    """

    def __init__(
        self,
        cfg: core.ControlConfig,
        n: int,
        *,
        mode: str = "fast",
        draw: float = 0.0,
        draws: Sequence[float] | None = None,
        vins: Sequence[str] | None = None,
        priorities: Sequence[int] | None = None,
        lag: float,
    ) -> None:
        self.cfg = cfg
        self.vins = tuple(vins) if vins is not None else tuple(f"CAR{i + 1}" for i in range(n))
        self.priorities = tuple(priorities) if priorities is not None else (0,) * n
        amps = tuple(draws) if draws is not None else (draw,) * n
        self.states = [core.initial_state(0.0, charge_mode=mode) for _ in self.vins]
        self.cars = [LaggedCar(a, lag) for a in amps]
        self.request = [int(a) or MAX_AMPS for a in amps]  # the car's own setting
        self.on = [a > 0 for a in amps]
        self.due: list[tuple[float, int, core.ControllerEvent]] = []
        self.sent: list[tuple[float, str, str]] = []  # (t, vin, command): for tests
        self.floor: HouseFloor | None = None  # car_readings.split's floor, kept as the fleet does
        self.ledger: Ledger | None = None  # and its ledger (ties between equal priorities)

    def _feed(self, i: int, event: core.ControllerEvent, t: float) -> None:
        d = core.decide(self.states[i], event, t, self.cfg)
        self.states[i] = d.state
        car = self.cars[i]
        for a in d.actions:
            if isinstance(a, core.RefreshVehicle):
                car.data += 1
                charge = ChargeState(
                    "Charging" if self.on[i] else "Stopped",
                    self.request[i],
                    32,
                    int(car.draw),
                    1,
                    int(VOLTS),
                )
                snap = VehicleSnapshot(VehicleState.ONLINE, charge, t + 1)
                self.due.append((t + 1, i, core.VehicleUpdate(snap)))
            elif isinstance(a, core.SetAmps):
                self.sent.append((t, self.vins[i], f"set {a.amps}"))
                self.request[i] = a.amps
                car.command(t, float(a.amps) if self.on[i] else 0.0, 2 if a.amps < 5 else 1)
                self.due.append((t + 1, i, core.CommandDone("set_charging_amps", a.amps)))
            elif isinstance(a, core.StopCharging):
                self.sent.append((t, self.vins[i], "stop"))
                self.on[i] = False
                car.command(t, 0.0)
                self.due.append((t + 1, i, core.CommandDone("charge_stop")))
            elif isinstance(a, core.StartCharging):
                self.sent.append((t, self.vins[i], "start"))
                self.on[i] = True
                car.command(t, float(self.request[i]))
                self.due.append((t + 1, i, core.CommandDone("charge_start")))

    def step(self, t: float, house: float) -> float:
        """One second: due replies, then the reading (house + cars) through the allocation.

        `house` is the house net of PV (negative: export). Returns the supply it read.
        """
        if self.due:
            ready = sorted((d for d in self.due if d[0] <= t), key=lambda d: (d[0], d[1]))
            for item in ready:
                self.due.remove(item)
                self._feed(item[1], item[2], t)
        for car in self.cars:
            car.advance(t)
        supply = house + sum(c.draw for c in self.cars)
        real = MeterReading((supply,), (VOLTS,), None, True, t)
        cars = tuple(
            Car(v, p, s, self.cfg)
            for s, v, p in zip(self.states, self.vins, self.priorities, strict=True)
        )
        split = split_cars(
            cars,
            real,
            self.cfg.limit,
            pause_when_overloaded=self.cfg.pause_when_overloaded,
            floor=self.floor,
            ledger=self.ledger,
        )
        self.floor, self.ledger = split.floor, split.ledger
        for i, mine in enumerate(split.readings):
            self._feed(i, mine, t)
        return supply
