"""The small interfaces the controller shell depends on (evcc's `api/` package is the model).

The charge controller imports these Protocols only, never a concrete Shelly or Tesla module,
so the simulator and tests can stand in for real devices.
"""

from __future__ import annotations

from typing import Protocol

from tesla_smart_charger.control.models import MeterReading, VehicleSnapshot


class Meter(Protocol):
    """Something that reads the house supply current."""

    @property
    def name(self) -> str:
        """A short label for logs and /status, e.g. `shelly-em@192.0.2.10`."""
        ...

    async def read(self) -> MeterReading:
        """Return one reading; raise `MeterError` (transient) when none can be had."""
        ...


class Vehicle(Protocol):
    """The car as seen through tesla-http-proxy. No method here may wake it."""

    async def snapshot(
        self, *, with_charge_state: bool = True, known_online: bool = False
    ) -> VehicleSnapshot:
        """Vehicle state, and `charge_state` only when the car is online.

        `known_online` skips the state call when a command has just proved the car awake.
        """
        ...

    async def set_charging_amps(self, amps: int) -> None:
        """Ask the car to charge at `amps`; raises on refusal, sleep or transport faults."""
        ...

    async def charge_start(self) -> None:
        """Resume charging (only ever sent to an online car)."""
        ...

    async def charge_stop(self) -> None:
        """Pause charging."""
        ...


class TokenSource(Protocol):
    """Hands out the current access token; the Tesla client never owns refresh logic."""

    async def access_token(self) -> str:
        """A token that is valid now (refreshing first if it is about to expire)."""
        ...

    async def handle_unauthorized(self, rejected: str) -> bool:
        """The API answered 401 to `rejected`: refresh once; True if a new token is available."""
        ...


class Relay(Protocol):
    """A switch on the charger circuit: the last resort when the car ignores a cut."""

    @property
    def name(self) -> str:
        """A short label for logs and /status, e.g. `shelly-relay@192.0.2.20/0`."""
        ...

    async def is_on(self) -> bool:
        """Whether the charger circuit is powered now; raises `RelayError` if unknown."""
        ...

    async def switch(self, on: bool) -> None:
        """Power the charger circuit on or off; raises `RelayError` if it did not switch."""
        ...
