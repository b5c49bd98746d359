"""The narrow view of the running daemon that the dashboard and /metrics read.

A `typing.Protocol`, so this package never imports daemon.py (which imports this package to
serve it): `daemon.Daemon` satisfies it structurally, and tests may pass any object that has
these members. Everything is read-only from here; the one write is registering a listener on
the charge service. The plain endpoints (/status, /health, /config, /overload, the driver's
limit) go through `server.ApiContext` instead, which is narrower still.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from tesla_smart_charger.car.tokens import TokenManager
    from tesla_smart_charger.config.settings import LoadedConfig
    from tesla_smart_charger.runtime.breaker_monitor import BreakerMonitor
    from tesla_smart_charger.runtime.capacity import CapacityGuard
    from tesla_smart_charger.runtime.fleet import Fleet
    from tesla_smart_charger.runtime.grid_limit import GridLimitWatch
    from tesla_smart_charger.runtime.journal import Journal
    from tesla_smart_charger.runtime.safety import Escalator
    from tesla_smart_charger.runtime.service import ChargeService
    from tesla_smart_charger.runtime.status import DaemonStatus


class DaemonView(Protocol):
    """What the HTTP surface reads from the daemon (implemented by `daemon.Daemon`)."""

    @property
    def loaded(self) -> LoadedConfig:
        """The validated settings (the meter type for /metrics)."""

    @property
    def service(self) -> ChargeService:
        """Controller state, config, recent commands, status; `add_listener` for live data."""

    @property
    def tokens(self) -> TokenManager:
        """Login state and token expiry."""

    @property
    def tasks(self) -> Mapping[str, asyncio.Task[None]]:
        """The tracked background tasks (the dashboard closes its streams when `controller` ends)."""

    @property
    def breaker(self) -> BreakerMonitor | None:
        """The main breaker's heat (None without a meter)."""

    @property
    def fleet(self) -> Fleet:
        """Every car (one car is a fleet of one); its `last_reading` is the real meter reading."""

    @property
    def grid_limit(self) -> GridLimitWatch | None:
        """The grid operator's limit (its sources combined)."""

    @property
    def capacity(self) -> CapacityGuard | None:
        """The capacity tariff guard (None without importLimitKw)."""

    @property
    def journal(self) -> Journal | None:
        """Every protective action (GET /api/journal, the dashboard's table)."""

    def escalations(self) -> list[tuple[str, Escalator]]:
        """Each car's escalation, the car in words (name or VIN); empty in push mode."""

    def worst_escalation(self) -> str:
        """The furthest step any car's escalation is at (`none` when none is in force)."""

    def status(self) -> DaemonStatus:
        """What the daemon knows, as /status shows it: read this, not the parts, where it has it."""
