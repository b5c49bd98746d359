"""A simulated Shelly with inputs: the contact of a grid operator's control box (§14a-style).

Gen1 shape: a Shelly i3 / Shelly 1 answering `GET /status` with `inputs: [{input, event,
event_cnt}]` (input 0 or 1). Gen2 shape: a Plus i4 answering the RPC `Input.GetStatus {"id":
n}` with `{"id": n, "state": true|false}`. Built on `SimulatedShelly`, so auth and outages
behave like the meter's; `refuse()` stops listening altogether (connection refused) and
`accept()` listens again on the same port, as a device that lost and regained power.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from aiohttp import web

from tesla_smart_charger.simulator.shelly import GEN1_FW, GEN2_FW_ID, GEN2_VER, SimulatedShelly


class SimulatedShellyInput(SimulatedShelly):
    """A Shelly with `inputs` switch-type inputs, all open (off) at first."""

    def __init__(
        self,
        gen: Literal[1, 2],
        *,
        inputs: int = 1,
        password: str | None = None,
        mac: str = "C45BBE6A1234",
    ) -> None:
        # The meter simulator picks basic or digest auth by kind; the input reuses that.
        super().__init__("em-gen1" if gen == 1 else "pro3em", password=password, mac=mac)
        self.gen = gen
        self.inputs = [False] * inputs
        self.reads = 0  # input reads answered (not counting /shelly)
        self._port = 0

    @property
    def device_id(self) -> str:
        """The Gen2 device id (the digest realm)."""
        return f"shellyplusi4-{self._mac.lower()}"

    def set_input(self, index: int, on: bool) -> None:
        """Close (True) or open (False) the contact wired to input `index`."""
        self.inputs[index] = on

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve; the port is kept so `accept()` comes back on it."""
        url = await super().start(host, port or self._port)
        self._port = int(url.rsplit(":", 1)[1])
        return url

    async def refuse(self) -> None:
        """Stop listening: every connection is refused until `accept()`."""
        await self.stop()

    async def accept(self) -> str:
        """Listen again on the same port."""
        return await self.start(port=self._port)

    def app(self) -> web.Application:
        """Gen1 `/status` or Gen2 `/rpc/Input.GetStatus`, plus `/shelly`."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/shelly", self._handle_shelly)
        if self.gen == 1:
            app.router.add_get("/status", self._handle_input_status)
        else:
            app.router.add_route("GET", "/rpc/{method}", self._handle_input_rpc)
            app.router.add_route("POST", "/rpc/{method}", self._handle_input_rpc)
        return app

    def _device_info(self) -> dict[str, Any]:
        if self.gen == 1:
            return {
                "type": "SHIX3-1",
                "mac": self._mac,
                "auth": self._password is not None,
                "fw": GEN1_FW,
                "discoverable": False,
                "longid": 1,
                "num_inputs": len(self.inputs),
            }
        return {
            "name": "Grid operator contact",
            "id": self.device_id,
            "mac": self._mac,
            "slot": 1,
            "model": "SNSN-0024X",
            "gen": 2,
            "fw_id": GEN2_FW_ID,
            "ver": GEN2_VER,
            "app": "PlusI4",
            "auth_en": self._password is not None,
            "auth_domain": self.device_id if self._password else None,
        }

    async def _handle_input_status(self, request: web.Request) -> web.Response:
        self.reads += 1
        now = time.time()
        return web.json_response(
            {
                "wifi_sta": {"connected": True, "ssid": "sim", "ip": "127.0.0.1", "rssi": -60},
                "cloud": {"enabled": False, "connected": False},
                "mqtt": {"connected": False},
                "time": time.strftime("%H:%M", time.localtime(now)),
                "unixtime": int(now),
                "has_update": False,
                "mac": self._mac,
                "inputs": [{"input": int(on), "event": "", "event_cnt": 0} for on in self.inputs],
                "uptime": int(time.monotonic() - self._started),
            }
        )

    async def _handle_input_rpc(self, request: web.Request) -> web.Response:
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
        if method != "Input.GetStatus":
            return web.json_response(
                {"code": 404, "message": f"No handler for {method}"}, status=404
            )
        try:
            index = int(params.get("id", 0))
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(self.inputs):
            return web.json_response(
                {"code": -105, "message": f"Argument 'id', value {params.get('id')} not found!"},
                status=404,
            )
        self.reads += 1
        return web.json_response({"id": index, "state": self.inputs[index]})
