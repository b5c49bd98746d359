"""The narrow view of the running daemon that the dashboard and /metrics read.

A `typing.Protocol`, so this package never imports daemon.py (which imports this package to
serve it): `daemon.Daemon` satisfies it structurally, and tests may pass any object that has
these members. Everything is read-only from here; the one write is registering a listener on
the charge service. The plain endpoints (/status, /health, /config, /overload, the driver's
limit) go through `server.ApiContext` instead, which is narrower still.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from tesla_smart_charger.car.failover import FailoverVehicle
    from tesla_smart_charger.car.fleet_api import ApiCallCounter
    from tesla_smart_charger.car.tokens import TokenManager
    from tesla_smart_charger.config.settings import LoadedConfig
    from tesla_smart_charger.control.breaker import BreakerMonitor
    from tesla_smart_charger.retry import Health
    from tesla_smart_charger.runtime.alerts import AlertSender
    from tesla_smart_charger.runtime.fleet import Fleet
    from tesla_smart_charger.runtime.journal import Journal
    from tesla_smart_charger.runtime.safety import Escalator
    from tesla_smart_charger.runtime.service import ChargeService, MeterPoller


class DaemonView(Protocol):
    """What the HTTP surface reads from the daemon (implemented by `daemon.Daemon`)."""

    @property
    def loaded(self) -> LoadedConfig:
        """The validated settings (the meter type for /metrics)."""

    @property
    def service(self) -> ChargeService:
        """Controller state, config, recent commands, status; `add_listener` for live data."""

    @property
    def counter(self) -> ApiCallCounter:
        """Fleet API calls and their cost."""

    @property
    def tokens(self) -> TokenManager:
        """Login state and token expiry."""

    @property
    def poller(self) -> MeterPoller | None:
        """The meter poller (None when the meter pushes /overload)."""

    @property
    def tasks(self) -> Mapping[str, asyncio.Task[None]]:
        """The tracked background tasks (the dashboard closes its streams when `controller` ends)."""

    @property
    def breaker(self) -> BreakerMonitor | None:
        """The main breaker's heat (None without a meter)."""

    @property
    def roads(self) -> FailoverVehicle | None:
        """The command roads (cloud, BLE) when more than one is configured."""

    @property
    def escalator(self) -> Escalator | None:
        """The escalation ladder when configured."""

    @property
    def alerts(self) -> AlertSender | None:
        """The alert sender when configured."""

    @property
    def fleet(self) -> Fleet | None:
        """Several cars (None with one): its `last_reading` is the real meter reading."""

    @property
    def journal(self) -> Journal | None:
        """Every protective action (GET /api/journal, the dashboard's table)."""

    def escalations(self) -> list[tuple[str, Escalator]]:
        """Each car's escalation, the car in words (name or VIN); empty in push mode."""

    def worst_escalation(self) -> str:
        """The furthest step any car's escalation is at (`none` when none is in force)."""

    def vehicles(self) -> list[dict[str, Any]]:
        """Each car as in /status `vehicles` (vin, name, mode, state, setpoint_amps, ...)."""

    def status(self) -> dict[str, Any]:
        """The /status document (the dashboard shows its optional sections when present)."""

    def dependencies(self) -> Mapping[str, Health]:
        """Per dependency: ok / degraded / down, as on /status."""
