"""Typed values parsed at the edge: what the controller sees instead of wire JSON."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class VehicleState(enum.StrEnum):
    """`state` of `GET /api/1/vehicles/{vin}`; UNKNOWN until we have asked."""

    ONLINE = "online"
    ASLEEP = "asleep"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ChargeState:
    """The few `charge_state` fields the controller needs."""

    charging_state: str  # Charging, Stopped, Complete, Disconnected, NoPower, Starting
    charge_current_request: int  # the amps the car is set to (driver's or ours)
    charge_current_request_max: int | None
    charger_actual_current: int  # measured, lags during ramps
    charger_phases: int | None
    charger_voltage: int | None

    @property
    def charging(self) -> bool:
        """True while the car draws current (Starting counts: it is about to)."""
        return self.charging_state in ("Charging", "Starting")


@dataclass(frozen=True, slots=True)
class VehicleSnapshot:
    """One look at the car: its state, and `charge_state` when it was online."""

    state: VehicleState
    charge: ChargeState | None
    at: float  # monotonic seconds when fetched

    @property
    def charging(self) -> bool:
        """True when the car is online and drawing current."""
        return (
            self.state is VehicleState.ONLINE and self.charge is not None and self.charge.charging
        )


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One meter sample, already mapped onto supply phases.

    `phase_amps` are signed (positive = import from the grid), one per supply phase.
    `car_amps` is set only when a meter channel measures the charger circuit.
    `car_channel_amps` holds, with several cars, what each car's own charger channel
    (`vehicles[].meterChargerChannel`) measures: (channel, amps) pairs, valid channels only.
    """

    phase_amps: tuple[float, ...]
    phase_volts: tuple[float | None, ...]
    car_amps: float | None
    valid: bool
    at: float  # monotonic seconds
    error: str | None = None  # why `valid` is False, for /status and logs
    car_channel_amps: tuple[tuple[int, float], ...] = ()

    @property
    def worst_phase_amps(self) -> float:
        """Import on the most loaded phase: the one that trips the breaker."""
        return max(self.phase_amps) if self.phase_amps else 0.0
