"""Two roads to the car: the local BLE bridge first, Tesla's cloud only when BLE fails.

`FailoverVehicle` implements `api.Vehicle` over an ordered list of named roads. A call goes to
the first road whose health allows it; it moves on to the next road only when the road itself
failed (timeout, connection error, a bridge `result: false`): never when the car refused
(`CommandRefused`: it would refuse on any road). Each road keeps its own counters, last error
and "down since", and logs once when it goes down and once when it is back.

Seam for the per-dependency retry policy and health (retry.py), so that a road in back-off is
skipped while the other works: `road_available(name)` says
whether a road may be tried now (its back-off or circuit breaker), `on_result(name, ok, error)`
hears every outcome. Both default to "always" / "nothing", so this module works on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from tesla_smart_charger.control.interfaces import Vehicle
from tesla_smart_charger.control.models import VehicleSnapshot
from tesla_smart_charger.errors import ChargerError, CommandRefused

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
RoadAvailable = Callable[[str], bool]
OnResult = Callable[[str, bool, BaseException | None], None]

# What a home owner reads in the log for each road.
ROAD_LABELS: Final = {"ble": "the BLE bridge", "cloud": "Tesla's cloud (Fleet API)"}
# A road failing this long gets an alert (and one when it is back); a shorter outage is only logged.
ROAD_DOWN_ALERT_SECS: Final = 300.0


@dataclass
class RoadStats:
    """Counters and the last fault of one road, for /status, /metrics and alerts."""

    name: str
    calls: int = 0
    ok: int = 0
    failed: int = 0
    refused: int = 0
    skipped: int = 0  # not tried because its health said no
    fallbacks: int = 0  # calls this road failed and the next road took over
    last_error: str | None = None
    down_since: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The road's entry in /status."""
        return {
            "calls": self.calls,
            "ok": self.ok,
            "failed": self.failed,
            "refused": self.refused,
            "skipped": self.skipped,
            "fallbacks": self.fallbacks,
            "last_error": self.last_error,
            "down": self.down_since is not None,
        }


@dataclass
class _Road:
    name: str
    vehicle: Vehicle
    stats: RoadStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = RoadStats(self.name)


class FailoverVehicle:
    """The car over ordered roads (implements `api.Vehicle`): BLE first, then the cloud."""

    def __init__(
        self,
        roads: Sequence[tuple[str, Vehicle]],
        *,
        road_available: RoadAvailable | None = None,
        on_result: OnResult | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not roads:
            raise ValueError("at least one road is needed")
        names = [name for name, _ in roads]
        if len(set(names)) != len(names):
            raise ValueError(f"road names must be unique, got {names}")
        self._roads = [_Road(name, vehicle) for name, vehicle in roads]
        self._available = road_available or (lambda _name: True)
        self._on_result = on_result or (lambda _name, _ok, _error: None)
        self._clock = clock
        self.last_road: str | None = None  # the road that answered (or failed) the last call

    def __repr__(self) -> str:
        return f"FailoverVehicle(roads={[r.name for r in self._roads]})"

    @property
    def road_names(self) -> tuple[str, ...]:
        """The roads in the order they are tried."""
        return tuple(r.name for r in self._roads)

    def stats(self) -> dict[str, RoadStats]:
        """Per-road counters and last errors."""
        return {r.name: r.stats for r in self._roads}

    def roads_down_longer_than(self, seconds: float, now: float) -> list[str]:
        """Roads that have failed without a success for more than `seconds`."""
        return [
            r.name
            for r in self._roads
            if r.stats.down_since is not None and now - r.stats.down_since > seconds
        ]

    def other_road(self, name: str) -> str | None:
        """The next road after `name` (wrapping), for "retry the cut on the other road"."""
        names = self.road_names
        if name not in names or len(names) < 2:
            return None
        return names[(names.index(name) + 1) % len(names)]

    def on_road(self, name: str) -> Vehicle:
        """A `Vehicle` that uses only road `name`, sharing its counters: to retry a cut there.

        Asked for explicitly, the road is tried whatever its health says.
        """
        for road in self._roads:
            if road.name == name:
                single = FailoverVehicle([(road.name, road.vehicle)], clock=self._clock)
                single._roads = [road]  # the same counters, not a copy
                single._on_result = self._on_result
                return single
        raise KeyError(name)

    # -- api.Vehicle ------------------------------------------------------------------------

    async def snapshot(
        self, *, with_charge_state: bool = True, known_online: bool = False
    ) -> VehicleSnapshot:
        """A look at the car on the first road that works."""
        return await self._run(
            "look",
            lambda v: v.snapshot(with_charge_state=with_charge_state, known_online=known_online),
        )

    async def set_charging_amps(self, amps: int) -> None:
        """Set the charging current on the first road that works."""
        await self._run(f"set_charging_amps {amps}", lambda v: v.set_charging_amps(amps))

    async def charge_start(self) -> None:
        """Resume charging on the first road that works."""
        await self._run("charge_start", lambda v: v.charge_start())

    async def charge_stop(self) -> None:
        """Pause charging on the first road that works."""
        await self._run("charge_stop", lambda v: v.charge_stop())

    # -- internals --------------------------------------------------------------------------

    def _order(self) -> list[_Road]:
        """Roads whose health allows a call, in order; all of them if none does.

        A cut must never go unsent because every back-off is running: then each road is tried.
        """
        allowed = [r for r in self._roads if self._available(r.name)]
        for road in self._roads:
            if road not in allowed and allowed:
                road.stats.skipped += 1
        return allowed or list(self._roads)

    async def _run(self, what: str, call: Callable[[Vehicle], Awaitable[T]]) -> T:
        errors: list[ChargerError] = []
        order = self._order()
        for index, road in enumerate(order):
            stats = road.stats
            stats.calls += 1
            try:
                result = await call(road.vehicle)
            except CommandRefused as err:
                # The road worked: the car said no, and would say it on any road.
                stats.refused += 1
                self._up(road)
                self._on_result(road.name, True, err)
                self.last_road = road.name
                raise
            except ChargerError as err:
                stats.failed += 1
                stats.last_error = str(err)
                # A cut that failed everywhere is retried on the road other than this one.
                self.last_road = road.name
                self._down(road, err)
                self._on_result(road.name, False, err)
                errors.append(err)
                if index + 1 < len(order):
                    stats.fallbacks += 1
                    _LOGGER.debug(
                        "%s failed on %s (%s): trying the next road", what, road.name, err
                    )
                continue
            stats.ok += 1
            self._up(road)
            self._on_result(road.name, True, None)
            self.last_road = road.name
            return result
        raise errors[-1]

    def _down(self, road: _Road, err: ChargerError) -> None:
        if road.stats.down_since is None:
            road.stats.down_since = self._clock()
            label = ROAD_LABELS.get(road.name, road.name)
            others = [r.name for r in self._roads if r is not road]
            then = f": using {ROAD_LABELS.get(others[0], others[0])} meanwhile" if others else ""
            _LOGGER.warning("%s is not getting through to the car (%s)%s", label, err, then)

    def _up(self, road: _Road) -> None:
        if road.stats.down_since is not None:
            down_for = self._clock() - road.stats.down_since
            road.stats.down_since = None
            label = ROAD_LABELS.get(road.name, road.name)
            _LOGGER.info("%s reaches the car again (after %.0f s)", label, down_for)
