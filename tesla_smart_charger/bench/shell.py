"""Our rows: the daemon's own shell on a virtual-time loop, against the simulated car.

What runs is what `app/daemon.py` builds for one car in measured mode: a `ChargeService`
with its `Escalator` (runtime/), the meter through `MeterPoller.poll_once` (frozen-meter check
included), and the car through `TeslaClient` (car/fleet_api: retry policy, deadlines, reply
parsing) whose HTTP exchange an `InProcessFleet` answers. Only the clocks are the loop's, and
the meter is read by the trace driver at each second instead of by `MeterPoller.run`'s sleep,
so a reading and the second it measures are the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

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
from tesla_smart_charger.control.events import EventQueue
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.runtime.safety import Escalator, escalation_config
from tesla_smart_charger.runtime.service import ChargeService, MeterPoller
from tesla_smart_charger.simulator import virtual_time
from tesla_smart_charger.simulator.inprocess import InProcessFleet, SimulatedTeslaClient

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
    def billing(self):  # type: ignore[no-untyped-def]
        """What Tesla bills."""
        return self.api.billing


def settings_for(trace: Trace, cfg: core.ControlConfig) -> Settings:
    """The settings the escalation reads (the same shipped defaults as `control_config`)."""
    return Settings.model_construct(
        home_max_amps=trace.limit,
        charger_max_amps=float(cfg.charger_max_amps),
        charger_min_amps=float(cfg.charger_min_amps),
        supply_phases=3 if trace.phases == 3 else 1,
    )


async def _drive(trace: Trace, cfg: core.ControlConfig, policy: str) -> Result:
    loop = asyncio.get_running_loop()
    clock = loop.time

    def wall() -> float:
        return WALL_EPOCH + loop.time()

    car = make_car(trace)
    api = InProcessFleet([car], command_latency=COMMAND_LATENCY, data_latency=DATA_LATENCY)
    client = SimulatedTeslaClient(api, car.vin, clock=clock, wall_clock=wall)
    queue = EventQueue()
    meter = TraceMeter((VOLTS,) * trace.phases, clock, trace.seed)
    poller = MeterPoller(
        meter, queue, 1.0, clock=clock, settle_secs=cfg.settle_secs, stale_secs=cfg.stale_secs
    )
    service = ChargeService(cfg, client, queue, clock=clock, wall=wall, kick_meter=poller.kick)
    service.escalation = Escalator(
        escalation_config(settings_for(trace, cfg), cfg),
        client,
        record=service._record,
        clock=clock,
    )
    # What the meter must show of the car (the daemon's `car_activity` for one car).
    poller.car_activity = lambda: (service.moved_at, service.moved_amps, service.charging)
    controller = asyncio.create_task(service.run(), name="controller")
    m = Metrics(trace.limit, trace.phases, supply(trace, trace.house[0], car.current_draw(0.0)))
    changes = dict(trace.plug_changes)
    for t, load in enumerate(trace.house):
        now = float(t)
        if now > loop.time():
            await asyncio.sleep(now - loop.time())
        if controller.done():
            controller.result()  # a bug in the shell ends the run with its error
        if t in changes:
            if changes[t]:
                car.plug_in(now)
            else:
                car.unplug(now)
        draw = car.current_draw(now)
        meter.supply = supply(trace, load, draw)
        m.add(meter.supply, draw)
        await poller.poll_once()
    controller.cancel()
    await asyncio.gather(controller, return_exceptions=True)
    return result(policy, m, Counts(api, car.wakes), trace)


def run_shell(trace: Trace, cfg: core.ControlConfig, policy: str = "ours") -> Result:
    """One run of the daemon's shell through `trace` on a fresh virtual-time loop."""
    quiet = logging.getLogger("tesla_smart_charger")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # hours of a trace: the home owner's lines are not figures
    try:
        return virtual_time.run(_drive(trace, cfg, policy))
    finally:
        quiet.setLevel(level)
