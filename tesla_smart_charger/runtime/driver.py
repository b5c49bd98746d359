"""What a person may change while the daemon runs: the car's amps ceiling and its mode.

One validation for every way in, so `POST /vehicles/{vin}/limit` and the Home Assistant
number over MQTT accept and refuse exactly the same values. Accepted changes become typed
events on the controller's queue; nothing here talks to the car or blocks.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Final

from tesla_smart_charger.control.events import DriverLimit, Event, ModeChange

_LOG = logging.getLogger(__name__)

# How a car may charge: as fast as the house allows, only from the export
# surplus, or chargerMinAmps always plus the surplus.
AVAILABLE_MODES: Final = ("fast", "solar", "minsolar")


def parse_driver_limit(value: object, *, min_amps: int, max_amps: int, name: str = "amps") -> int:
    """A whole number of amps from chargerMinAmps to chargerMaxAmps, from JSON or text.

    Raises ValueError naming `name` and the rule (never echoing more than 40 characters).
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name}: expected a whole number of amps, got {value!r}"[:120])
    number: float
    if isinstance(value, int | float):
        number = float(value)
        shown = f"{number:g}"
    elif isinstance(value, str | bytes):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        shown = repr(text.strip()[:40])
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"{name}: {text.strip()[:40]!r} is not a number") from None
    else:  # one error type for every bad value, so callers answer 400 / ignore it alike
        raise ValueError(  # noqa: TRY004
            f"{name}: expected a whole number of amps, got {type(value).__name__}"
        )
    if not math.isfinite(number) or not number.is_integer() or not min_amps <= number <= max_amps:
        raise ValueError(
            f"{name}: {shown} is not a whole number of amps from {min_amps} to {max_amps} "
            "(chargerMinAmps to chargerMaxAmps)"
        )
    return int(number)


class DriverControls:
    """The daemon's side of `mqtt.ChargerControls` and of `/vehicles/{vin}/limit`."""

    def __init__(
        self,
        queue: asyncio.Queue[Event],
        vins: Callable[[], tuple[str, ...]],
        *,
        min_amps: int,
        max_amps: int,
    ) -> None:
        self._queue = queue
        self._vins = vins
        self.min_amps = min_amps
        self.max_amps = max_amps

    def known(self, vin: str) -> str | None:
        """The car `vin` names (VIN or teslaVehicleId, any case), None if not ours."""
        for ours in self._vins():
            if ours.upper() == vin.strip().upper():
                return ours
        return None

    def parse(self, value: object, name: str = "amps") -> int:
        """`parse_driver_limit` with this daemon's range."""
        return parse_driver_limit(value, min_amps=self.min_amps, max_amps=self.max_amps, name=name)

    def set_driver_limit(self, vin: str, amps: int) -> str | None:
        """Queue a DriverLimit; a short reason when refused (unknown car, out of range)."""
        car = self.known(vin)
        if car is None:
            return f"unknown vehicle {vin[:40]!r}"
        try:
            value = self.parse(amps)
        except ValueError as err:
            return str(err)
        self._queue.put_nowait(DriverLimit(car, value))
        return None

    def set_mode(self, vin: str, mode: object) -> str | None:
        """Queue a ModeChange; a short reason when refused (unknown car, unknown mode)."""
        car = self.known(vin)
        if car is None:
            return f"unknown vehicle {vin[:40]!r}"
        if not isinstance(mode, str) or mode.strip().lower() not in AVAILABLE_MODES:
            shown = repr(mode[:40]) if isinstance(mode, str) else type(mode).__name__
            return f"mode: {shown} is not one of {', '.join(AVAILABLE_MODES)}"
        self._queue.put_nowait(ModeChange(car, mode.strip().lower()))
        return None
