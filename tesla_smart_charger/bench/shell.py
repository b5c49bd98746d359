"""Our rows: the daemon's own shell on a virtual-time loop, against the simulated car.

What runs is what `app/daemon.py` builds in measured mode: a `Fleet` (of one car, or two)
of `ChargeService`s, each with its `Escalator` (runtime/), the meter through `MeterPoller.poll_once` (frozen-meter check
included), and the car through `TeslaClient` (car/fleet_api: retry policy, deadlines, reply
parsing) whose HTTP exchange an `InProcessFleet` answers. Only the clocks are the loop's, and
the meter is read by the trace driver at each second instead of by `MeterPoller.run`'s sleep,
so a reading and the second it measures are the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tesla_smart_charger import control as core
from tesla_smart_charger.bench.common import (
    COMMAND_LATENCY,
    DATA_LATENCY,
    VOLTS,
    Metrics,
    Phases,
    Result,
    Trace,
    make_car,
    result,
    supply,
)
from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.runtime.fleet import Fleet, FleetCar
from tesla_smart_charger.runtime.queue import EventQueue
from tesla_smart_charger.runtime.safety import Escalator, escalation_config, failover_roads
from tesla_smart_charger.runtime.service import ChargeService, MeterPoller
from tesla_smart_charger.simulator import virtual_time
from tesla_smart_charger.simulator.car import BillingCounter, CarModel
from tesla_smart_charger.simulator.inprocess import (
    InProcessFleet,
    InProcessRelay,
    SimulatedBleVehicle,
    SimulatedTeslaClient,
)

if TYPE_CHECKING:
    from tesla_smart_charger.car.failover import FailoverVehicle
    from tesla_smart_charger.control.interfaces import Vehicle
    from tesla_smart_charger.runtime.alerts import AlertSender

_T = TypeVar("_T")
BLE_LATENCY = 0.5  # s for a command or a read over the BLE bridge
RELAY_LATENCY = 0.2  # s for the relay to switch and confirm
WALL_EPOCH = 1_767_000_000.0  # the virtual wall clock's start (a date in 2025/26)


NOISE_AMPS = 0.005  # a Shelly's reading of a steady current wanders in its last decimals


@dataclass
class TraceMeter:
    """The `Meter` protocol fed by the trace: house plus car, as set by the driver each second.

    Each value carries a little seeded noise, as a real meter's do: the trace is piecewise
    constant, and bit-identical values while the car charges are what the daemon's
    frozen-meter check (rightly) treats as a hung meter.
    """

    volts: tuple[float | None, ...]
    clock: Callable[[], float]
    seed: int
    supply: Phases = ()
    name: str = "trace meter"
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"meter:{self.seed}")  # noqa: S311 - noise, not secrets

    async def read(self) -> MeterReading:
        """The supply the driver set for this second, to the meter's three decimals."""
        noise = self._rng.uniform
        amps = tuple(round(a + noise(-NOISE_AMPS, NOISE_AMPS), 3) for a in self.supply)
        return MeterReading(amps, self.volts, None, True, self.clock())


@dataclass
class Counts:
    """The Fleet API side of one run, as `common.result` reads it."""

    api: InProcessFleet
    wakes: int

    @property
    def commands(self) -> int:
        """Commands sent."""
        return self.api.commands

    @property
    def data_calls(self) -> int:
        """Data reads sent."""
        return self.api.data_calls

    @property
    def billing(self) -> BillingCounter:
        """What Tesla bills."""
        return self.api.billing


class AlertCounter:
    """Stands in for the webhook (`AlertSender`): counts what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, event: str, message: str, **_context: object) -> None:
        """One alert."""
        self.sent.append(event)


def settings_for(
    limit: float, cfg: core.ControlConfig, phases: int = 1, *, relay: bool = False
) -> Settings:
    """The settings the escalation reads (the same shipped defaults as `control_config`)."""
    return Settings.model_construct(
        home_max_amps=limit,
        charger_max_amps=float(cfg.charger_max_amps),
        charger_min_amps=float(cfg.charger_min_amps),
        supply_phases=3 if phases == 3 else 1,
        safety_relay_ip="relay.invalid" if relay else None,
    )


class Shell:
    """What the daemon builds for these cars (measured mode), on the running virtual loop.

    One car: its `ChargeService` reads the meter's queue, as the daemon runs a single car.
    Several: a `Fleet` routes the meter's readings through `car_readings.split` to one
    `ChargeService` per car, each with its own escalation (a cut judged by a look at the car).
    """

    def __init__(
        self,
        cars: Sequence[CarModel],
        cfg: core.ControlConfig,
        settings: Settings,
        *,
        seed: int,
        phases: int = 1,
        mode: str = "fast",
        ble: bool = False,
        relay: bool = False,
        escalate: bool = True,
    ) -> None:
        """`ble`: a BLE bridge first and the cloud behind it (`failover_roads`), per car;
        `relay`: a safety relay on the (first) car's circuit; `escalate` False: no failed-cut
        escalation (the daemon has it in measured mode; the roads table shows it off too)."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        clock = loop.time

        def wall() -> float:
            return WALL_EPOCH + loop.time()

        self.api = InProcessFleet(cars, command_latency=COMMAND_LATENCY, data_latency=DATA_LATENCY)
        self.queue = EventQueue()
        self.meter = TraceMeter((VOLTS,) * phases, clock, seed)
        self.poller = MeterPoller(
            self.meter,
            self.queue,
            1.0,
            clock=clock,
            settle_secs=cfg.settle_secs,
            stale_secs=cfg.stale_secs,
        )
        several = len(cars) > 1
        self.services: list[ChargeService] = []
        self.ble: list[SimulatedBleVehicle] = []
        self.relay = InProcessRelay(cars[0], latency=RELAY_LATENCY) if relay else None
        self.alerts = AlertCounter()
        for car in cars:
            client = SimulatedTeslaClient(self.api, car.vin, clock=clock, wall_clock=wall)
            road: Vehicle = client
            roads: FailoverVehicle | None = None
            if ble:
                bridge = SimulatedBleVehicle(car, clock=clock, latency=BLE_LATENCY)
                self.ble.append(bridge)
                roads, _ = failover_roads(
                    bridge,
                    client,
                    "BLE bridge (simulated)",
                    clock=clock,
                    rand=random.Random(f"ble:{car.vin}").random,  # noqa: S311 - jitter
                )
                road = roads
            service = ChargeService(
                cfg,
                road,
                EventQueue(),
                clock=clock,
                wall=wall,
                kick_meter=self.poller.kick,
                charge_mode=mode,
                label=car.vin if several else None,
            )
            if escalate:
                service.escalation = Escalator(
                    escalation_config(settings, cfg, several=several),
                    road,
                    roads=roads,
                    relay=self.relay,
                    alerts=cast("AlertSender", self.alerts),
                    record=service._record,
                    clock=clock,
                    label=car.vin if several else None,
                )
            self.services.append(service)
        # As in the daemon: one car is a fleet of one (its events pass through unchanged).
        self.fleet = Fleet(
            self.queue,
            [FleetCar(c.vin, None, 0, s) for c, s in zip(cars, self.services, strict=True)],
            limit=cfg.limit,
            pause_when_overloaded=cfg.pause_when_overloaded,
            clock=clock,
        )
        self.poller.car_activity = self._car_activity
        self._task: asyncio.Task[None] | None = None

    def _car_activity(self) -> tuple[float | None, float, bool]:
        """What the meter must show of the cars (the daemon's `car_activity`)."""
        moves = [(s.moved_at, s.moved_amps) for s in self.services if s.moved_at is not None]
        latest = max(moves, default=(None, 0.0), key=lambda m: m[0] or 0.0)
        return latest[0], latest[1], any(s.charging for s in self.services)

    def start(self) -> None:
        """Start the controller task, as `start_tasks` does."""
        self._task = asyncio.create_task(self.fleet.run(), name="controller")

    async def at(self, second: float) -> None:
        """Let virtual time run to `second`; a controller that died raises its error here."""
        if second > self.loop.time():
            await asyncio.sleep(second - self.loop.time())
        if self._task is not None and self._task.done():
            self._task.result()
            raise RuntimeError("the controller stopped")

    async def read(self, supply: Phases) -> None:
        """The meter reads `supply` now (with its noise) and the reading goes on the queue."""
        self.meter.supply = supply
        await self.poller.poll_once()

    async def stop(self) -> None:
        """Cancel the controller and wait for it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _drive(trace: Trace, cfg: core.ControlConfig, policy: str) -> Result:
    car = make_car(trace)
    shell = Shell(
        [car],
        cfg,
        settings_for(trace.limit, cfg, trace.phases),
        seed=trace.seed,
        phases=trace.phases,
    )
    shell.start()
    m = Metrics(trace.limit, trace.phases, supply(trace, trace.house[0], car.current_draw(0.0)))
    changes = dict(trace.plug_changes)
    for t, load in enumerate(trace.house):
        now = float(t)
        await shell.at(now)
        if t in changes:
            if changes[t]:
                car.plug_in(now)
            else:
                car.unplug(now)
        draw = car.current_draw(now)
        now_supply = supply(trace, load, draw)
        m.add(now_supply, draw)
        await shell.read(now_supply)
    await shell.stop()
    return result(policy, m, Counts(shell.api, car.wakes), trace)


def quietly(main: Coroutine[Any, Any, _T]) -> _T:
    """Run `main` on a fresh virtual-time loop with the daemon's log lines silenced.

    Hours of a trace: the home owner's lines are not figures, and would flood stderr.
    """
    quiet = logging.getLogger("tesla_smart_charger")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return virtual_time.run(main)
    finally:
        quiet.setLevel(level)


def run_shell(trace: Trace, cfg: core.ControlConfig, policy: str = "ours") -> Result:
    """One run of the daemon's shell through `trace` on a fresh virtual-time loop."""
    return quietly(_drive(trace, cfg, policy))
