"""tesla-http-proxy and the Fleet API in front of simulated cars, in process, on the loop's clock.

The benchmark runs hours of traces on a virtual-time loop (`virtual_time.py`); real HTTP per
second would take hours. `SimulatedTeslaClient` is the daemon's own `TeslaClient` (its retry
policy, deadlines, 429 handling, reply parsing and billing) with one seam replaced: the HTTP
exchange is answered here by `InProcessFleet`, which answers the way `SimulatedProxy` does
(200 for the vehicle state, 408 for `vehicle_data` of a sleeping car, 500 for a command to
it, refusals as `result: false`) after a fixed latency of virtual time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from pydantic import SecretStr

from tesla_smart_charger.car.ble import BleVehicle
from tesla_smart_charger.car.fleet_api import (
    ApiCallCounter,
    Category,
    StaticTokenSource,
    TeslaClient,
    _Reply,
)
from tesla_smart_charger.retry import RetryPolicy
from tesla_smart_charger.simulator.car import BillingCounter, CarModel, envelope, unavailable_reply

if TYPE_CHECKING:
    import aiohttp

# A reply due at the same instant as something else (a meter reading) is taken to arrive just
# before it, so the order of equal timers never decides a result.
EARLY = 1e-6

Reply = tuple[int, dict[str, Any]]
# Answers instead of the car while it returns a reply: (method, path, now) -> reply or None.
Injector = Callable[[str, str, float], Reply | None]


class InProcessFleet:
    """The cars behind the proxy: latency, billing and the proxy's answers, no sockets."""

    def __init__(
        self,
        cars: Sequence[CarModel],
        *,
        command_latency: float = 1.0,
        data_latency: float = 0.5,
    ) -> None:
        self.cars = {car.vin: car for car in cars}
        self.command_latency = command_latency
        self.data_latency = data_latency
        self.billing = BillingCounter()
        self.commands = 0  # commands sent (wake_up excluded)
        self.data_calls = 0
        self.inject: Injector | None = None

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        """Answer one request after its latency; the car acts when the latency has passed."""
        loop = asyncio.get_running_loop()
        parts = path.strip("/").split("/")  # api 1 vehicles VIN [vehicle_data | command NAME]
        car = self.cars.get(parts[3]) if len(parts) >= 4 else None
        command = parts[5] if len(parts) == 6 and parts[4] == "command" else None
        if command is not None and command != "wake_up":
            self.commands += 1
        elif command is None:
            self.data_calls += 1
        latency = self.command_latency if command is not None else self.data_latency
        await asyncio.sleep(max(0.0, latency - EARLY))
        now = loop.time()
        category = "data" if command is None else "wake" if command == "wake_up" else "command"
        reply = self.inject(method, path, now) if self.inject is not None else None
        if reply is None:
            reply = self._answer(car, parts, command, body or {}, now)
        self.billing.record(category, reply[0])
        return reply

    def _answer(
        self,
        car: CarModel | None,
        parts: list[str],
        command: str | None,
        body: dict[str, Any],
        now: float,
    ) -> Reply:
        if car is None:
            return 404, envelope(None, "not_found", "vehicle not found")
        if command is not None:
            return car.command(command, body, now)
        if len(parts) == 4:  # the vehicle state: answers for a sleeping car and never wakes it
            car.advance(now)
            return 200, envelope(car.vehicle_json(), None)
        car.touch(now)
        if car.state != "online":
            return unavailable_reply(408)
        return 200, envelope({**car.vehicle_json(), "charge_state": car.charge_state_json()})


class SimulatedTeslaClient(TeslaClient):
    """The daemon's `TeslaClient`, its HTTP exchange answered by an `InProcessFleet`."""

    def __init__(
        self,
        api: InProcessFleet,
        vin: str,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        # The client's own policy, on the loop's clock, its backoff jitter seeded: every run
        # of a trace gives the same figures.
        policy = RetryPolicy(
            "car link (simulated proxy)",
            logger=logging.getLogger("tesla_smart_charger.car.fleet_api"),
            clock=clock,
            wall=wall_clock,
            rand=random.Random(vin).random,
        )
        super().__init__(
            cast("aiohttp.ClientSession", None),  # never used: `_exchange` is replaced
            "http://simulated-proxy.invalid",
            vin,
            StaticTokenSource(SecretStr("simulated")),
            ApiCallCounter(clock=wall_clock),
            clock=clock,
            wall_clock=wall_clock,
            policy=policy,
        )
        self.api = api

    async def probe(self) -> bool:
        """The in-process proxy always accepts connections."""
        return True

    async def _exchange(
        self,
        method: str,
        path: str,
        category: Category,
        token: str,
        *,
        what: str,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
    ) -> _Reply:
        """One request to the in-process proxy instead of the wire."""
        status, payload = await self.api.request(method, path, body)
        self.connect_failed = False
        retry_after = "1" if status == 429 else None
        return _Reply(status, payload, retry_after, None)


class SimulatedBleVehicle(BleVehicle):
    """The daemon's `BleVehicle`, its HTTP exchange answered as `SimulatedBleBridge` answers.

    Free (never billed), `latency` per request; counts what it sent like `InProcessFleet`.
    """

    def __init__(self, car: CarModel, *, clock: Callable[[], float], latency: float = 0.5) -> None:
        super().__init__(
            cast("aiohttp.ClientSession", None),
            "http://simulated-ble.invalid",
            car.vin,
            clock=clock,
        )
        self.car = car
        self.latency = latency
        self.commands = 0
        self.data_calls = 0

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """One request to the in-process bridge instead of the wire."""
        kind = path.strip("/").split("/")[4]
        if kind == "command":
            self.commands += 1
        else:
            self.data_calls += 1
        await asyncio.sleep(max(0.0, self.latency - EARLY))
        now = asyncio.get_running_loop().time()
        car, vin = self.car, self.car.vin
        if kind == "body_controller_state":
            car.advance(now)
            awake = "VEHICLE_SLEEP_STATUS_AWAKE" if car.state == "online" else None
            inner = {"vehicle_sleep_status": awake or "VEHICLE_SLEEP_STATUS_ASLEEP"}
            return 200, _bridge(True, "", vin, "body-controller-state", inner)
        if kind == "vehicle_data":
            car.touch(now)
            if car.state != "online":
                return 503, _bridge(False, "vehicle is asleep", vin, "vehicle_data")
            data = {"charge_state": car.charge_state_json()}
            return 200, _bridge(True, "", vin, "vehicle_data", data)
        name = path.rsplit("/", 1)[-1]
        status, reply = car.command(name, body or {}, now, road="ble")
        answer = reply.get("response")
        if status >= 500 or not isinstance(answer, dict):
            return 503, _bridge(False, str(reply.get("error")), vin, name)
        return 200, _bridge(bool(answer.get("result")), str(answer.get("reason", "")), vin, name)


def _bridge(result: bool, reason: str, vin: str, command: str, inner: Any = None) -> dict[str, Any]:
    """The bridge's doubled envelope (simulator/ble.py `_reply`)."""
    response: dict[str, Any] = {"result": result, "reason": reason, "vin": vin, "command": command}
    if inner is not None:
        response["response"] = inner
    return {"response": response}


class InProcessRelay:
    """The `Relay` protocol on the charger circuit of one simulated car, `latency` to switch."""

    name = "simulated relay"

    def __init__(self, car: CarModel, *, latency: float = 0.2) -> None:
        self.car = car
        self.latency = latency
        self.switches = 0

    async def is_on(self) -> bool:
        """Whether the charger circuit is powered."""
        return self.car.circuit_on

    async def switch(self, on: bool) -> None:
        """Switch the circuit after the latency."""
        await asyncio.sleep(max(0.0, self.latency - EARLY))
        self.switches += 1
        self.car.set_circuit(on, asyncio.get_running_loop().time())
