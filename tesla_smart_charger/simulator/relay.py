"""A simulated Shelly relay on the charger circuit (Gen1 Shelly 1 or Gen2 Plus 1PM shapes).

Built on `SimulatedShelly`, so auth is the real thing (Gen1 basic, Gen2 SHA-256 digest with
429 throttling) and outages (`set_responding`) behave like the meter's. Switching it off cuts
the charger circuit of the `CarModel` it feeds: the car then draws 0 A. `stuck` makes it
report success without switching (a welded contact), so the driver's read-back is exercised.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.shelly import GEN1_FW, GEN2_FW_ID, GEN2_VER, SimulatedShelly


class SimulatedRelay(SimulatedShelly):
    """One relay with `outputs` switches; output `car_channel` feeds `car` (if given)."""

    def __init__(
        self,
        gen: Literal[1, 2],
        *,
        car: CarModel | None = None,
        car_channel: int = 0,
        outputs: int = 1,
        password: str | None = None,
        user: str = "admin",
        clock: Callable[[], float] = time.monotonic,
        mac: str = "A8032ABE5410",
    ) -> None:
        # The meter simulator picks basic or digest auth by kind; the relay reuses that.
        super().__init__("em-gen1" if gen == 1 else "pro3em", password=password, user=user, mac=mac)
        self.gen = gen
        self.car = car
        self.car_channel = car_channel
        self.clock = clock
        self.stuck = False
        self.outputs = [True] * outputs
        self.switches: list[tuple[int, bool]] = []  # (channel, on) for every switch request
        self.switched_at: list[float] = []  # `clock()` of each entry of `switches`

    @property
    def device_id(self) -> str:
        """The Gen2 device id (the digest realm)."""
        return f"shellyplus1pm-{self._mac.lower()}"

    def set_output(self, channel: int, on: bool) -> None:
        """Switch an output by hand (as a person pressing the button would)."""
        self.outputs[channel] = on
        if self.car is not None and channel == self.car_channel:
            self.car.set_circuit(on, self.clock())

    def app(self) -> web.Application:
        """Gen1 `/relay/{ch}` or Gen2 `/rpc/Switch.*`, plus `/shelly`."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/shelly", self._handle_shelly)
        if self.gen == 1:
            app.router.add_get("/relay/{index}", self._handle_gen1_relay)
        else:
            app.router.add_route("GET", "/rpc/{method}", self._handle_switch_rpc)
            app.router.add_route("POST", "/rpc/{method}", self._handle_switch_rpc)
        return app

    def _device_info(self) -> dict[str, Any]:
        if self.gen == 1:
            return {
                "type": "SHSW-1",
                "mac": self._mac,
                "auth": self._password is not None,
                "fw": GEN1_FW,
                "discoverable": False,
                "longid": 1,
                "num_outputs": len(self.outputs),
            }
        return {
            "name": "Charger circuit",
            "id": self.device_id,
            "mac": self._mac,
            "slot": 1,
            "model": "SNSW-001P16EU",
            "gen": 2,
            "fw_id": GEN2_FW_ID,
            "ver": GEN2_VER,
            "app": "Plus1PM",
            "auth_en": self._password is not None,
            "auth_domain": self.device_id if self._password else None,
        }

    def _channel(self, raw: Any) -> int | None:
        try:
            channel = int(raw)
        except (TypeError, ValueError):
            return None
        return channel if 0 <= channel < len(self.outputs) else None

    def _switch(self, channel: int, on: bool) -> None:
        self.switches.append((channel, on))
        self.switched_at.append(self.clock())
        if not self.stuck:
            self.set_output(channel, on)

    async def _handle_gen1_relay(self, request: web.Request) -> web.Response:
        channel = self._channel(request.match_info["index"])
        if channel is None:
            return web.Response(status=404, text="Not Found")
        turn = request.query.get("turn")
        if turn is not None:
            if turn not in ("on", "off", "toggle"):
                return web.Response(status=400, text="Bad turn!")
            on = not self.outputs[channel] if turn == "toggle" else turn == "on"
            self._switch(channel, on)
        return web.json_response(
            {
                "ison": self.outputs[channel],
                "has_timer": False,
                "timer_started": 0,
                "timer_duration": 0,
                "timer_remaining": 0,
                "source": "http",
            }
        )

    async def _handle_switch_rpc(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            raw = await request.read()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return web.json_response({"code": -103, "message": "Invalid JSON"}, status=400)
            params.update(body)
        channel = self._channel(params.get("id", 0))
        if method not in ("Switch.Set", "Switch.GetStatus"):
            return web.json_response(
                {"code": 404, "message": f"No handler for {method}"}, status=404
            )
        if channel is None:
            return web.json_response(
                {"code": -105, "message": f"Argument 'id', value {params.get('id')} not found!"},
                status=404,
            )
        if method == "Switch.Set":
            on = params.get("on")
            if isinstance(on, str):
                on = {"true": True, "false": False}.get(on.lower())
            if not isinstance(on, bool):
                return web.json_response(
                    {"code": -103, "message": "Invalid argument 'on'!"}, status=400
                )
            was_on = self.outputs[channel]
            self._switch(channel, on)
            return web.json_response({"was_on": was_on})
        amps = 0.0
        if self.car is not None and channel == self.car_channel:
            amps = self.car.current_draw(self.clock())
        return web.json_response(
            {
                "id": channel,
                "source": "HTTP_in",
                "output": self.outputs[channel],
                "apower": round(amps * 230.0, 1),
                "voltage": 230.0,
                "current": round(amps, 3),
                "temperature": {"tC": 41.2, "tF": 106.2},
            }
        )
