"""Controller configurations, car snapshots, readings and a driver for the pure decide()."""

from __future__ import annotations

from dataclasses import replace

from tesla_smart_charger import control as core
from tesla_smart_charger.control.events import Reading
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)

PUSH = core.ControlConfig(
    mode="push",
    home_max_amps=30,
    charger_min_amps=6,
    charger_max_amps=16,
    down_step=0.5,
    up_step=0.25,
    sleep_secs=20,
)


MEASURED = replace(PUSH, mode="measured", safety_margin=1.0, stale_secs=10, settle_secs=8)


def charging(
    amps: int = 16, at: float = 0.0, state: str = "Charging", actual: int | None = None
) -> VehicleSnapshot:
    charge = ChargeState(state, amps, 32, amps if actual is None else actual, 1, 230)
    return VehicleSnapshot(VehicleState.ONLINE, charge, at)


def asleep(at: float = 0.0) -> VehicleSnapshot:
    return VehicleSnapshot(VehicleState.ASLEEP, None, at)


def reading(*amps: float, at: float, car: float | None = None, valid: bool = True) -> Reading:
    return Reading(MeterReading(tuple(amps), (230.0,) * len(amps), car, valid, at))


class Run:
    """Feeds events through decide() and collects every action, as the shell would."""

    def __init__(self, cfg: core.ControlConfig, start: float = 0.0) -> None:
        self.cfg = cfg
        self.state = core.initial_state(start)
        self.actions: list[tuple[float, core.Action]] = []

    def feed(self, event: core.ControllerEvent, now: float) -> tuple[core.Action, ...]:
        d = core.decide(self.state, event, now, self.cfg)
        self.state = d.state
        self.actions.extend((now, a) for a in d.actions)
        return d.actions

    def amps_sent(self) -> list[int]:
        return [a.amps for _, a in self.actions if isinstance(a, core.SetAmps)]


def measured_charging(cfg: core.ControlConfig = MEASURED, amps: int = 16) -> Run:
    """A measured-mode run whose car is known to charge at `amps` (driver's setting)."""
    run = Run(cfg)
    run.feed(core.VehicleUpdate(charging(amps)), 0.0)
    return run
