"""A simulated house, meter, car(s) and token endpoint on loopback, wired for the real daemon.

The meter shows what a real one would: the house's appliances plus whatever the simulated cars
actually draw after their ramp delay, minus what the PV array feeds in (negative = export).
The daemon sees only HTTP, exactly as in a real home. Several cars share one proxy (routed by
VIN); `World(car=...)` is the one-car shorthand, `World(cars=[...])` the general form.
Used by `make demo`, the end-to-end tests and the dashboard browser test.

By default (`road="signed"`) the daemon signs its commands itself: the config has no
teslaHttpProxy, points teslaFleetApiUrl at the simulated Fleet and teslaPrivateKey at a key
the world generated and paired with every car, so no proxy process is involved.
`road="proxy"` configures the tesla-http-proxy road instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tesla_smart_charger.car.signing.crypto import public_bytes
from tesla_smart_charger.simulator.ble import SimulatedBleBridge
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.house import House
from tesla_smart_charger.simulator.oauth import SimulatedOAuth
from tesla_smart_charger.simulator.proxy import SimulatedProxy
from tesla_smart_charger.simulator.pv import PvArray
from tesla_smart_charger.simulator.relay import SimulatedRelay
from tesla_smart_charger.simulator.shelly import SimulatedShelly


def settings_keys() -> frozenset[str]:
    """The config.json keys this build's settings model knows (camelCase).

    The daemon ignores keys it does not know, but a scenario must not pretend a feature is
    there: the demo and the benchmark add `vehicles` and `mode` only when the model has them.
    """
    from pydantic.alias_generators import to_camel  # noqa: PLC0415 - only when asked

    from tesla_smart_charger.config.settings import Settings  # noqa: PLC0415 - simulator stays light

    keys: set[str] = set()
    for name, info in Settings.model_fields.items():
        keys.add(to_camel(name))
        if info.alias:
            keys.add(info.alias)
    return frozenset(keys)


FEED_PERIOD = 0.1  # seconds between meter updates (the daemon polls at most every 0.1 s in tests)


@dataclass
class World:
    """Everything outside the daemon, running on 127.0.0.1."""

    house: House | None = None  # None: house load set by hand with `set_house()`
    phases: int = 1
    meter_kind: Literal["em-gen1", "pro3em"] = "em-gen1"
    meter_password: str | None = None
    car: CarModel = field(default_factory=CarModel)
    cars: Sequence[CarModel] = ()  # several cars behind the one proxy; the first is `car`
    pv: PvArray | None = None  # rooftop PV: subtracted from the supply the meter sees
    pv_offset: float = 0.0  # PV-day second at house time 0 (the demo starts at noon)
    access_ttl: float = 28800.0
    refresh_reuse_grace: float = 0.0  # Tesla keeps the most recently used refresh token valid 24 h
    time_scale: float = 1.0  # house seconds per real second
    clock: Callable[[], float] = time.monotonic
    manual_house: tuple[float, ...] = (10.0,)
    ble: bool = False  # a BLE bridge to the same car (teslaBleProxy)
    relay_gen: Literal[0, 1, 2] = 0  # a Shelly relay on the charger circuit (0: none)
    road: Literal["signed", "proxy"] = "signed"  # how the daemon's commands reach the cars
    client_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )  # the daemon's command key, paired with every car
    key_file: Path | None = field(default=None, init=False)
    oauth: SimulatedOAuth = field(init=False)
    proxy: SimulatedProxy = field(init=False)
    meter: SimulatedShelly = field(init=False)
    bridge: SimulatedBleBridge | None = field(default=None, init=False)
    relay: SimulatedRelay | None = field(default=None, init=False)
    urls: dict[str, str] = field(default_factory=dict, init=False)
    _t0: float = field(default=0.0, init=False)
    _feeder: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.cars:
            self.cars = tuple(self.cars)
            self.car = self.cars[0]
        else:
            self.cars = (self.car,)
        self.oauth = SimulatedOAuth(
            access_ttl=self.access_ttl, reuse_grace=self.refresh_reuse_grace
        )
        self.proxy = SimulatedProxy(
            self.cars, token_validator=self.oauth.is_valid_access, clock=self.clock
        )
        channels = [0.0, 0.0] if self.meter_kind == "em-gen1" else [0.0, 0.0, 0.0]
        self.meter = SimulatedShelly(
            self.meter_kind, password=self.meter_password, phase_amps=channels
        )
        for signed in self.proxy.signed.values():
            signed.pair(public_bytes(self.client_key))
        if self.ble:
            self.bridge = SimulatedBleBridge(self.car, clock=self.clock)
        if self.relay_gen:
            self.relay = SimulatedRelay(self.relay_gen, car=self.car, clock=self.clock)
        if self.phases == 3 and len(self.manual_house) == 1:
            self.manual_house = self.manual_house * 3

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the three servers and the loop that keeps the meter up to date."""
        folder = Path(tempfile.mkdtemp(prefix="tsc-world-key-"))
        self.key_file = folder / "private-key.pem"
        self.key_file.write_bytes(
            self.client_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        self.key_file.chmod(0o600)
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
        if self.key_file is not None:
            shutil.rmtree(self.key_file.parent, ignore_errors=True)

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

    def pv_amps(self) -> tuple[float, ...]:
        """PV feed-in per supply phase now (zeros without an array)."""
        phases = len(self.house_amps())
        if self.pv is None:
            return (0.0,) * phases
        return self.pv.amps(self.pv_offset + self.house_time, phases)

    def car_amps(self) -> tuple[float, ...]:
        """What all cars together draw on each supply phase now."""
        phases, now = len(self.house_amps()), self.clock()
        total = [0.0] * phases
        for car in self.cars:
            total = [t + d for t, d in zip(total, car.phase_draw(now, phases), strict=True)]
        return tuple(total)

    def supply_amps(self) -> tuple[float, ...]:
        """What the meter measures on each supply phase: house plus cars minus PV (signed)."""
        house, cars, pv = self.house_amps(), self.car_amps(), self.pv_amps()
        return tuple(h + c - p for h, c, p in zip(house, cars, pv, strict=True))

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
            "apiPort": 0,  # the OS picks a free one; `run --port-file` tells which
            "apiHost": "127.0.0.1",
            "teslaVehicleId": self.car.vin,
            "teslaAccessToken": access,
            "teslaRefreshToken": refresh,
            "teslaClientId": "simulated-client-id",
            "teslaTokenUrl": self.urls["oauth"] + "/oauth2/v3/token",
            "supplyPhases": self.phases,
        }
        if self.road == "proxy":
            cfg["teslaHttpProxy"] = self.urls["proxy"]
        else:  # the Fleet API itself, and our key: no proxy
            cfg["teslaFleetApiUrl"] = self.urls["proxy"]
            cfg["teslaPrivateKey"] = str(self.key_file)
        if self.meter_password:
            cfg["energyMonitorPassword"] = self.meter_password
        if "ble" in self.urls:
            cfg["teslaBleProxy"] = self.urls["ble"]
        if "relay" in self.urls:
            cfg["safetyRelayIp"] = self.urls["relay"].removeprefix("http://")
        if len(self.cars) > 1 and "vehicles" in settings_keys():
            cfg["vehicles"] = self.vehicles()
        cfg.update(overrides)
        return cfg

    def vehicles(
        self, *, modes: Sequence[str] = (), priorities: Sequence[int] = ()
    ) -> list[dict[str, Any]]:
        """The `vehicles` list for these cars; `modes`/`priorities` per car in order."""
        out: list[dict[str, Any]] = []
        for i, car in enumerate(self.cars):
            entry: dict[str, Any] = {
                "vin": car.vin,
                "name": car.display_name,
                "priority": priorities[i] if i < len(priorities) else 0,
            }
            if self.phases > 1 and car.phases == 1:
                entry["chargerPhase"] = car.supply_phase
            if i < len(modes):
                entry["mode"] = modes[i]
            out.append(entry)
        return out

    def write_config(self, directory: Path, **overrides: Any) -> Path:
        """Write config.json into `directory` and return its path."""
        path = directory / "config.json"
        path.write_text(json.dumps(self.config(**overrides), indent=2) + "\n", encoding="utf-8")
        return path
