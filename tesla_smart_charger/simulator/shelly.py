"""Simulated Shelly meters on real HTTP: a Shelly EM Gen1 and a Shelly Pro 3EM.

Replies have the exact shapes of the recorded device answers in tests/fixtures/shelly/, with
the values computed from the amps and volts the test, the demo or the house model sets. Auth is
the real thing: Gen1 HTTP basic, Gen2 RFC 7616 digest with SHA-256 (realm = device id, user
admin, qop=auth), including the 429 nonce throttling of firmware 2.x, so the meter drivers are
exercised end to end rather than against mocks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from aiohttp import web

SimKind = Literal["em-gen1", "pro3em"]

GEN1_FW: Final = "20221027-105518/v1.12.1-ga9117d3"
GEN2_FW_ID: Final = "20250508-110717/1.6.1-g8dbd358"
GEN2_VER: Final = "1.6.1"
NONCE_SLOTS: Final = 32  # fw 2.x keeps this many nonces; older ones stop working
_DIGEST_PAIR = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_CHANNELS: Final[dict[str, int]] = {"em-gen1": 2, "pro3em": 3}
_DEFAULT_AMPS: Final[dict[str, tuple[float, ...]]] = {
    "em-gen1": (10.0, 0.0),
    "pro3em": (10.0, 0.0, 0.0),
}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _sign(value: float) -> float:
    return -1.0 if value < 0 else 1.0


def parse_digest_header(header: str) -> dict[str, str]:
    """The key=value pairs of an `Authorization: Digest ...` header."""
    pairs: dict[str, str] = {}
    for key, quoted, bare in _DIGEST_PAIR.findall(header):
        pairs[key.lower()] = quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted else bare
    return pairs


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class SimulatedShelly:
    """One simulated meter; its state is set by tests, the demo and the house model.

    `kind` "em-gen1" has two channels (emeters[0..1]), "pro3em" three phases (a, b, c).
    Amps are signed (negative = export); the simulator derives power, reactive power and pf
    from them and the volts. `throttle_next` answers 429 to that many authenticated requests.
    `latency` delays every answer (seconds). `set_frozen(True)` keeps answering with the
    amps of that moment whatever is set later (a hung metering chip).
    """

    def __init__(
        self,
        kind: SimKind,
        *,
        password: str | None = None,
        phase_amps: Sequence[float] | None = None,
        volts: float = 230.0,
        user: str = "admin",
        pf: float = 0.95,
        mac: str = "AABBCCDDEEFF",
        latency: float = 0.0,
    ) -> None:
        if kind not in _CHANNELS:
            raise ValueError(f"unknown simulated Shelly kind {kind!r}")
        self.kind: SimKind = kind
        self.requests = 0
        self.throttle_next = 0
        self.latency = latency
        self._password = password or None
        self._user = "admin" if kind == "pro3em" else user
        self._pf = min(max(abs(pf), 0.05), 1.0)
        self._mac = mac.upper()
        self._channels = _CHANNELS[kind]
        self._amps: list[float] = []
        self.frozen = False
        self.set_amps(phase_amps if phase_amps is not None else _DEFAULT_AMPS[kind])
        self._volts = [float(volts)] * self._channels
        self._valid = True
        self._responding = True
        self._hang = True
        self._resume = asyncio.Event()
        self._resume.set()
        self._stopping = False
        self._seen = asyncio.Condition()
        self._override: dict[str, Any] | None = None
        self._nonces: OrderedDict[str, int] = OrderedDict()
        self._started = time.monotonic()
        self._last_tick = self._started
        self._energy_in = [401472.9, 173411.3, 12345.6][: self._channels]
        self._energy_out = [653673.7, 294.2, 0.0][: self._channels]
        self._serial = 0
        self._runner: web.AppRunner | None = None

    # --- construction helpers ----------------------------------------------------------------

    @classmethod
    def from_fixture(
        cls, kind: SimKind, status: Mapping[str, Any] | Path | str, **kwargs: Any
    ) -> SimulatedShelly:
        """A device that serves a recorded status verbatim (a dict, or a JSON file path)."""
        sim = cls(kind, **kwargs)
        if isinstance(status, Mapping):
            sim.set_status_override(status)
        else:
            sim.set_status_override(json.loads(Path(status).read_text(encoding="utf-8")))
        return sim

    @property
    def device_id(self) -> str:
        """The Gen2 device id, which is also the digest realm."""
        return (
            f"shellypro3em-{self._mac.lower()}"
            if self.kind == "pro3em"
            else f"shellyem-{self._mac}"
        )

    @property
    def channels(self) -> int:
        """Number of channels (Gen1 EM) or phases (Pro 3EM)."""
        return self._channels

    # --- state knobs ---------------------------------------------------------------------------

    def set_amps(self, amps: Sequence[float]) -> None:
        """Signed amps per channel/phase (house + car; negative = export)."""
        values = [float(a) for a in amps]
        if len(values) != self._channels:
            raise ValueError(f"{self.kind} has {self._channels} channels, got {len(values)} values")
        if self.frozen:
            return  # the metering chip hung: the answers keep the old values
        if self._amps:
            self._tick()
        self._amps = values

    def set_frozen(self, frozen: bool) -> None:
        """True: keep answering with the amps of now, bit for bit; False: follow again."""
        self.frozen = frozen

    def set_valid(self, valid: bool) -> None:
        """False: `is_valid: false` (Gen1) or `*_errors` on every phase (Gen2)."""
        self._valid = valid

    def set_responding(self, responding: bool, *, hang: bool = True) -> None:
        """Stop answering: hang until the client gives up (default) or drop the connection."""
        self._responding = responding
        self._hang = hang
        if responding:
            self._resume.set()
        else:
            self._resume.clear()

    def set_password(self, password: str | None) -> None:
        """Change (or remove, with None) the device password, as the owner would in its app."""
        self._password = password or None
        self._nonces.clear()

    def set_status_override(self, status: Mapping[str, Any] | None) -> None:
        """Serve this reply verbatim (`/status` on Gen1, `EM.GetStatus` on Pro 3EM); None = computed."""
        self._override = None if status is None else json.loads(json.dumps(status))

    async def wait_requests(self, count: int) -> None:
        """Return once `count` requests have reached the device (tests synchronise on this)."""
        async with self._seen:
            await self._seen.wait_for(lambda: self.requests >= count)

    # --- server lifecycle ----------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application playing this device."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/shelly", self._handle_shelly)
        if self.kind == "em-gen1":
            app.router.add_get("/status", self._handle_gen1_status)
            app.router.add_get("/emeter/{index}", self._handle_gen1_emeter)
        else:
            app.router.add_route("GET", "/rpc/{method}", self._handle_rpc)
            app.router.add_route("POST", "/rpc/{method}", self._handle_rpc)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulated Shelly already started")
        self._stopping = False
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        return f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving; requests left hanging are released first."""
        self._stopping = True
        self._resume.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # --- middleware: counting, latency, outages, auth ------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        async with self._seen:
            self.requests += 1
            self._seen.notify_all()
        if not self._responding:
            if not self._hang:
                if request.transport is not None:
                    request.transport.close()
                raise web.HTTPServiceUnavailable
            await self._resume.wait()
            if self._stopping:
                raise web.HTTPServiceUnavailable
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self._password and not self._exempt(request):
            denied = self._check_auth(request)
            if denied is not None:
                return denied
        return await handler(request)

    def _exempt(self, request: web.Request) -> bool:
        return request.path in ("/shelly", "/rpc/Shelly.GetDeviceInfo")

    def _check_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if self.kind == "em-gen1":
            return None if self._basic_ok(header) else self._basic_challenge()
        if header and self.throttle_next > 0:
            self.throttle_next -= 1
            self._nonces.clear()  # the device has run out of nonce slots
            return web.json_response({"code": -1, "message": "Too many requests"}, status=429)
        return None if self._digest_ok(request, header) else self._digest_challenge()

    def _basic_ok(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not self._password:
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self._user}:{self._password}"
        return hmac.compare_digest(decoded.encode(), expected.encode())

    def _basic_challenge(self) -> web.Response:
        realm = f"SHEM-{self._mac}"
        return web.Response(
            status=401,
            text="401 Unauthorized",
            headers={"WWW-Authenticate": f'Basic realm="{realm}"'},
        )

    def _digest_ok(self, request: web.Request, header: str) -> bool:
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "digest" or not self._password:
            return False
        fields = parse_digest_header(rest)
        nonce = fields.get("nonce", "")
        if (
            fields.get("username") != "admin"
            or fields.get("realm") != self.device_id
            or fields.get("algorithm", "").upper() != "SHA-256"
            or fields.get("qop") != "auth"
            or fields.get("uri") != request.raw_path
            or nonce not in self._nonces
        ):
            return False
        try:
            nc = int(fields.get("nc", ""), 16)
        except ValueError:
            return False
        if nc <= self._nonces[nonce]:
            return False  # a replayed nonce count
        ha1 = _sha256(f"admin:{self.device_id}:{self._password}")
        ha2 = _sha256(f"{request.method}:{fields['uri']}")
        expected = _sha256(
            f"{ha1}:{nonce}:{fields.get('nc')}:{fields.get('cnonce', '')}:auth:{ha2}"
        )
        if not hmac.compare_digest(expected, fields.get("response", "")):
            return False
        self._nonces[nonce] = nc
        return True

    def _digest_challenge(self) -> web.Response:
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = 0
        while len(self._nonces) > NONCE_SLOTS:
            self._nonces.popitem(last=False)
        challenge = (
            f'Digest qop="auth", realm="{self.device_id}", nonce="{nonce}", algorithm=SHA-256'
        )
        return web.json_response(
            {"code": 401, "message": "Unauthorized"},
            status=401,
            headers={"WWW-Authenticate": challenge},
        )

    # --- device replies -------------------------------------------------------------------------

    def _tick(self) -> None:
        """Integrate energy counters up to now (Wh), as the device's totals would grow."""
        now = time.monotonic()
        hours = (now - self._last_tick) / 3600
        self._last_tick = now
        for i, amps in enumerate(self._amps):
            watts = amps * self._volts[i] * self._pf if i < len(self._volts) else 0.0
            if watts >= 0:
                self._energy_in[i] += watts * hours
            else:
                self._energy_out[i] -= watts * hours

    def _powers(self, i: int) -> tuple[float, float, float, float]:
        """Active W, reactive var, apparent VA and signed pf of channel i."""
        amps, volts = self._amps[i], self._volts[i]
        apparent = abs(amps) * volts
        if apparent == 0:
            return 0.0, 0.0, 0.0, 0.0
        active = _sign(amps) * apparent * self._pf
        reactive = apparent * math.sqrt(max(1.0 - self._pf**2, 0.0))
        return active, reactive, apparent, _sign(amps) * self._pf

    async def _handle_shelly(self, request: web.Request) -> web.Response:
        return web.json_response(self._device_info())

    def _device_info(self) -> dict[str, Any]:
        if self.kind == "em-gen1":
            return {
                "type": "SHEM",
                "mac": self._mac,
                "auth": self._password is not None,
                "fw": GEN1_FW,
                "discoverable": False,
                "longid": 1,
                "num_outputs": 1,
                "num_meters": 0,
                "num_emeters": 2,
            }
        return {
            "app": "Pro3EM",
            "auth_domain": self.device_id if self._password else None,
            "auth_en": self._password is not None,
            "fw_id": GEN2_FW_ID,
            "gen": 2,
            "id": self.device_id,
            "mac": self._mac,
            "model": "SPEM-003CEBEU",
            "name": "Simulated Pro 3EM",
            "profile": "triphase",
            "slot": 0,
            "ver": GEN2_VER,
        }

    def _gen1_emeter(self, i: int) -> dict[str, Any]:
        active, reactive, _, pf = self._powers(i)
        return {
            "power": round(active, 2),
            "reactive": round(reactive, 2),
            "pf": round(pf, 2),
            "voltage": round(self._volts[i], 2),
            "is_valid": self._valid,
            "total": round(self._energy_in[i], 1),
            "total_returned": round(self._energy_out[i], 1),
        }

    async def _handle_gen1_status(self, request: web.Request) -> web.Response:
        if self._override is not None:
            return web.json_response(self._override)
        self._tick()
        self._serial += 1
        now = time.time()
        return web.json_response(
            {
                "wifi_sta": {"connected": True, "ssid": "sim", "ip": "127.0.0.1", "rssi": -55},
                "cloud": {"enabled": False, "connected": False},
                "mqtt": {"connected": False},
                "time": time.strftime("%H:%M", time.localtime(now)),
                "unixtime": int(now),
                "serial": self._serial,
                "has_update": False,
                "mac": self._mac,
                "cfg_changed_cnt": 0,
                "actions_stats": {"skipped": 0},
                "relays": [
                    {
                        "ison": False,
                        "has_timer": False,
                        "timer_started": 0,
                        "timer_duration": 0,
                        "timer_remaining": 0,
                        "overpower": False,
                        "is_valid": True,
                        "source": "input",
                    }
                ],
                "emeters": [self._gen1_emeter(i) for i in range(self._channels)],
                "update": {
                    "status": "idle",
                    "has_update": False,
                    "new_version": GEN1_FW,
                    "old_version": GEN1_FW,
                },
                "ram_total": 51072,
                "ram_free": 35660,
                "fs_size": 233681,
                "fs_free": 156373,
                "uptime": int(time.monotonic() - self._started),
            }
        )

    async def _handle_gen1_emeter(self, request: web.Request) -> web.Response:
        index = request.match_info["index"]
        if not index.isdigit() or int(index) >= self._channels:
            raise web.HTTPNotFound(text="Not found")
        self._tick()
        return web.json_response(self._gen1_emeter(int(index)))

    def _em_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"id": 0}
        totals = [0.0, 0.0, 0.0]
        for i, phase in enumerate("abc"):
            active, _, apparent, pf = self._powers(i)
            current = round(abs(self._amps[i]), 3)
            status |= {
                f"{phase}_act_power": round(active, 1),
                f"{phase}_aprt_power": round(apparent, 1),
                f"{phase}_current": current,
                f"{phase}_freq": 50.0,
                f"{phase}_pf": round(pf, 2),
                f"{phase}_voltage": round(self._volts[i], 1),
            }
            if not self._valid:
                status[f"{phase}_errors"] = ["out_of_range:current"]
            totals = [totals[0] + current, totals[1] + active, totals[2] + apparent]
        status |= {
            "n_current": None,
            "total_act_power": round(totals[1], 3),
            "total_aprt_power": round(totals[2], 3),
            "total_current": round(totals[0], 3),
            "user_calibrated_phase": [],
        }
        return dict(sorted(status.items()))

    async def _handle_rpc(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if method == "Shelly.GetDeviceInfo":
            return web.json_response(self._device_info())
        if method != "EM.GetStatus":
            return web.json_response(
                {"code": 404, "message": f"No handler for {method}"}, status=404
            )
        cid: Any = request.query.get("id", "0")
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"code": -103, "message": "Invalid JSON"}, status=400)
            cid = (
                body.get("id", body.get("params", {}).get("id", 0)) if isinstance(body, dict) else 0
            )
        if str(cid) != "0":
            return web.json_response(
                {"code": -105, "message": f"Argument 'id', value {cid} not found!"}, status=404
            )
        if self._override is not None:
            return web.json_response(self._override)
        self._tick()
        return web.json_response(self._em_status())
