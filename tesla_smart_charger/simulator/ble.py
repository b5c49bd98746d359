"""A BLE bridge (TeslaBleHttpProxy / ESPHome Tesla BLE) on real HTTP, around a shared `CarModel`.

It answers the Fleet API paths the bridges implement, in their shapes: commands as
`{"response": {"result": bool, "reason": str, ...}}`, `vehicle_data` and
`body_controller_state` in the doubled envelope `{"response": {"result": true, "response": X}}`.
No token, nothing billed. The same `CarModel` can sit behind a `SimulatedProxy` at the same time,
so a test sees which road a command took. Test hooks: `set_mode("down")` makes the bridge answer
`result: false` with a Bluetooth error (the car out of range), `set_mode("hang")` never answers
(the client's timeout fires); stopping the server refuses connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from tesla_smart_charger.simulator.car import UNAVAILABLE_ERROR, CarModel, validate_command

_LOGGER = logging.getLogger(__name__)

BridgeMode = Literal["up", "down", "hang"]
BLE_FAILURE = "failed to connect to vehicle: context deadline exceeded"  # the bridge's words
_SLEEP = {"online": "VEHICLE_SLEEP_STATUS_AWAKE"}


def _reply(
    status: int, result: bool, reason: str, *, vin: str, command: str, inner: Any = None
) -> web.Response:
    response: dict[str, Any] = {"result": result, "reason": reason, "vin": vin, "command": command}
    if inner is not None:
        response["response"] = inner
    return web.json_response({"response": response}, status=status)


class SimulatedBleBridge:
    """The HTTP surface of a BLE bridge for one simulated car; counts every request."""

    def __init__(
        self, car: CarModel, *, clock: Callable[[], float] = time.monotonic, latency: float = 0.0
    ) -> None:
        self.car = car
        self.clock = clock
        self.latency = latency
        self.mode: BridgeMode = "up"
        # "command", "vehicle_data", "body_controller_state" -> requests received
        self.requests: Counter[str] = Counter()
        self.commands: list[tuple[float, str, dict[str, Any]]] = []
        self.wakeup_requests = 0  # `wake_up` or `wakeup=` parameters seen: must stay 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    def set_mode(self, mode: BridgeMode) -> None:
        """up: serve; down: `result: false` with a BLE error; hang: never answer."""
        self.mode = mode

    def commands_named(self, name: str) -> list[tuple[float, str, dict[str, Any]]]:
        """Every command called `name` that reached the car through this bridge."""
        return [entry for entry in self.commands if entry[1] == name]

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for failures: generous (loaded CI)
    ) -> None:
        """Wait until `predicate()` holds, re-checked after every request; TimeoutError if not."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def app(self) -> web.Application:
        """The aiohttp application (one catch-all route, like the proxy simulator)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port` (0 = any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("SimulatedBleBridge is already started")
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        _LOGGER.info("simulated BLE bridge on http://%s:%s", host, bound_port)
        return f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "hang":
            await asyncio.Event().wait()  # cancelled when the client gives up or we stop
        if "wakeup" in request.query:
            self.wakeup_requests += 1
        try:
            response = await self._dispatch(request, self.clock())
        except Exception:  # a simulator bug must show up as a 500, not a dropped connection
            _LOGGER.exception("simulated BLE bridge failed on %s", request.path)
            response = web.json_response({"response": None, "error": "simulator"}, status=500)
        async with self._changed:
            self._changed.notify_all()
        return response

    async def _dispatch(self, request: web.Request, now: float) -> web.Response:
        parts = request.path.strip("/").split("/")
        if parts[:3] != ["api", "1", "vehicles"] or len(parts) < 5:
            return web.json_response({"response": None, "error": "not found"}, status=404)
        vin, rest = parts[3], parts[4:]
        kind = "command" if rest[0] == "command" else rest[0]
        self.requests[kind] += 1
        if vin != self.car.vin:
            return _reply(404, False, f"unknown VIN {vin}", vin=vin, command=kind)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self.mode == "down":
            return _reply(503, False, BLE_FAILURE, vin=vin, command=kind)
        if kind == "command" and len(rest) == 2 and request.method == "POST":
            return await self._command(request, rest[1], now)
        if kind == "vehicle_data" and request.method == "GET":
            return self._vehicle_data(request, now)
        if kind == "body_controller_state" and request.method == "GET":
            self.car.advance(now)
            status = _SLEEP.get(self.car.state, "VEHICLE_SLEEP_STATUS_ASLEEP")
            inner = {
                "vehicle_lock_state": "VEHICLE_LOCK_STATE_LOCKED",
                "vehicle_sleep_status": status,
                "user_presence": "VEHICLE_USER_PRESENCE_NOT_PRESENT",
            }
            return _reply(200, True, "", vin=vin, command="body-controller-state", inner=inner)
        return _reply(404, False, "unsupported request", vin=vin, command=kind)

    def _vehicle_data(self, request: web.Request, now: float) -> web.Response:
        self.car.touch(now)
        vin = self.car.vin
        if self.car.state != "online":
            return _reply(503, False, "vehicle is asleep", vin=vin, command="vehicle_data")
        inner: dict[str, Any] = {}
        if "charge_state" in request.query.get("endpoints", "charge_state").split(";"):
            inner["charge_state"] = self.car.charge_state_json()
        return _reply(200, True, "", vin=vin, command="vehicle_data", inner=inner)

    async def _command(self, request: web.Request, name: str, now: float) -> web.Response:
        vin = self.car.vin
        try:
            raw = await request.read()
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _reply(400, False, "invalid JSON body", vin=vin, command=name)
        if name == "wake_up":
            self.wakeup_requests += 1
        self.commands.append((now, name, body))
        invalid = validate_command(name, body)
        if invalid is not None:
            status, reply = invalid
            reason = (reply.get("response") or {}).get("reason") or reply.get("error") or ""
            return _reply(status, False, str(reason), vin=vin, command=name)
        status, reply = self.car.command(name, body, now, road="ble")
        inner = reply.get("response")
        if status >= 500 or not isinstance(inner, dict):
            return _reply(
                503, False, reply.get("error") or UNAVAILABLE_ERROR, vin=vin, command=name
            )
        return _reply(
            200, bool(inner.get("result")), str(inner.get("reason", "")), vin=vin, command=name
        )
