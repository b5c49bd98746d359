"""A simulated house, meter, car and token endpoint on loopback, wired for the real daemon.

The meter shows what a real one would: the house's appliances plus whatever the simulated car
actually draws after its ramp delay. The daemon sees only HTTP, exactly as in a real home.
Used by `make demo`, the end-to-end tests and the dashboard browser test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tesla_smart_charger.simulator.ble import SimulatedBleBridge
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.house import House
from tesla_smart_charger.simulator.oauth import SimulatedOAuth
from tesla_smart_charger.simulator.proxy import SimulatedProxy
from tesla_smart_charger.simulator.relay import SimulatedRelay
from tesla_smart_charger.simulator.shelly import SimulatedShelly

FEED_PERIOD = 0.1  # seconds between meter updates (the daemon polls at most every 0.1 s in tests)


@dataclass
class World:
    """Everything outside the daemon, running on 127.0.0.1."""

    house: House | None = None  # None: house load set by hand with `set_house()`
    phases: int = 1
    meter_kind: Literal["em-gen1", "pro3em"] = "em-gen1"
    meter_password: str | None = None
    car: CarModel = field(default_factory=CarModel)
    access_ttl: float = 28800.0
    refresh_reuse_grace: float = 0.0  # Tesla keeps the most recently used refresh token valid 24 h
    time_scale: float = 1.0  # house seconds per real second
    clock: Callable[[], float] = time.monotonic
    manual_house: tuple[float, ...] = (10.0,)
    ble: bool = False  # a BLE bridge to the same car (teslaBleProxy)
    relay_gen: Literal[0, 1, 2] = 0  # a Shelly relay on the charger circuit (0: none)
    more_cars: tuple[CarModel, ...] = ()  # further cars behind the same proxy (issue 14)
    oauth: SimulatedOAuth = field(init=False)
    proxy: SimulatedProxy = field(init=False)
    meter: SimulatedShelly = field(init=False)
    bridge: SimulatedBleBridge | None = field(default=None, init=False)
    relay: SimulatedRelay | None = field(default=None, init=False)
    urls: dict[str, str] = field(default_factory=dict, init=False)
    _t0: float = field(default=0.0, init=False)
    _feeder: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.oauth = SimulatedOAuth(
            access_ttl=self.access_ttl, reuse_grace=self.refresh_reuse_grace
        )
        self.proxy = SimulatedProxy(
            self.car, token_validator=self.oauth.is_valid_access, clock=self.clock
        )
        for other in self.more_cars:
            self.proxy.add_car(other)
        channels = [0.0, 0.0] if self.meter_kind == "em-gen1" else [0.0, 0.0, 0.0]
        self.meter = SimulatedShelly(
            self.meter_kind, password=self.meter_password, phase_amps=channels
        )
        if self.ble:
            self.bridge = SimulatedBleBridge(self.car, clock=self.clock)
        if self.relay_gen:
            self.relay = SimulatedRelay(self.relay_gen, car=self.car, clock=self.clock)
        if self.phases == 3 and len(self.manual_house) == 1:
            self.manual_house = self.manual_house * 3

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the three servers and the loop that keeps the meter up to date."""
        self.urls["oauth"] = await self.oauth.start()
        self.urls["proxy"] = await self.proxy.start()
        self.urls["meter"] = await self.meter.start()
        if self.bridge is not None:
            self.urls["ble"] = await self.bridge.start()
        if self.relay is not None:
            self.urls["relay"] = await self.relay.start()
        self._t0 = self.clock()
        self.feed()
        self._feeder = asyncio.create_task(self._feed_forever(), name="world-feeder")

    async def stop(self) -> None:
        """Stop the feeder and the servers."""
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder
        if self.relay is not None:
            await self.relay.stop()
        if self.bridge is not None:
            await self.bridge.stop()
        await self.meter.stop()
        await self.proxy.stop()
        await self.oauth.stop()

    async def __aenter__(self) -> World:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the physics -------------------------------------------------------------------------
    @property
    def house_time(self) -> float:
        """Seconds into the house scenario."""
        return (self.clock() - self._t0) * self.time_scale

    def house_amps(self) -> tuple[float, ...]:
        """House load per phase now (without the car)."""
        if self.house is None:
            return self.manual_house
        return self.house.amps(self.house_time)

    def set_house(self, *amps: float) -> None:
        """Set the house load by hand (tests) and update the meter at once."""
        self.manual_house = tuple(amps)
        self.feed()

    def supply_amps(self) -> tuple[float, ...]:
        """What the meter measures on each supply phase: house plus car."""
        house = self.house_amps()
        total = list(house)
        for model in (self.car, *self.more_cars):
            for i, c in enumerate(model.phase_draw(self.clock(), len(house))):
                total[i] += c
        return tuple(total)

    def feed(self) -> None:
        """Push the current supply into the simulated meter's channels."""
        supply = self.supply_amps()
        if self.meter_kind == "em-gen1":
            self.meter.set_amps([supply[0], 0.0])
        else:
            self.meter.set_amps(list(supply) if len(supply) == 3 else [supply[0], 0.0, 0.0])

    async def _feed_forever(self) -> None:
        while True:
            self.feed()
            await asyncio.sleep(FEED_PERIOD)

    # --- the daemon's configuration ------------------------------------------------------------
    def config(self, **overrides: Any) -> dict[str, Any]:
        """A config.json (seed keys plus new ones) pointing the daemon at this world."""
        access, refresh = self.oauth.issue_initial()
        meter_host = self.urls["meter"].removeprefix("http://")
        cfg: dict[str, Any] = {
            "homeMaxAmps": 30.0,
            "chargerMaxAmps": 16.0,
            "chargerMinAmps": 6.0,
            "downStepPercentage": 0.5,
            "upStepPercentage": 0.25,
            "sleepTimeSecs": 20,
            "energyMonitorIp": meter_host,
            "energyMonitorType": "shelly-em" if self.meter_kind == "em-gen1" else "shelly-gen2",
            "hostIp": "127.0.0.1",
            "apiPort": 8000,
            "apiHost": "127.0.0.1",
            "teslaVehicleId": self.car.vin,
            "teslaAccessToken": access,
            "teslaRefreshToken": refresh,
            "teslaHttpProxy": self.urls["proxy"],
            "teslaClientId": "simulated-client-id",
            "teslaTokenUrl": self.urls["oauth"] + "/oauth2/v3/token",
            "supplyPhases": self.phases,
        }
        if self.meter_password:
            cfg["energyMonitorPassword"] = self.meter_password
        if "ble" in self.urls:
            cfg["teslaBleProxy"] = self.urls["ble"]
        if "relay" in self.urls:
            cfg["safetyRelayIp"] = self.urls["relay"].removeprefix("http://")
        cfg.update(overrides)
        return cfg

    def write_config(self, directory: Path, **overrides: Any) -> Path:
        """Write config.json into `directory` and return its path."""
        path = directory / "config.json"
        path.write_text(json.dumps(self.config(**overrides), indent=2) + "\n", encoding="utf-8")
        return path
