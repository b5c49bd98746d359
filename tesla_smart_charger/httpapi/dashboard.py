"""GET / (the dashboard), its static files, /events (server-sent events), /api/history and
/api/journal.

The page is plain HTML, CSS and JS shipped in the package: no CDN, no build step, so it works
offline on a Pi. A listener on the charge service keeps a 15-minute history (one sample per
second) and wakes the open event streams, each of which sends at most two samples a second, so a
fast meter cannot flood a phone. Streams end when the controller stops (SIGTERM), so shutdown
never waits on a browser. The history and each car's kWh per day are kept in `history.json`
beside the journal (written every HISTORY_SAVE_SECS and when the controller stops), so a restart loses
neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tesla_smart_charger.car.tokens import atomic_write_bytes
from tesla_smart_charger.config.settings import CHARGE_MODES
from tesla_smart_charger.httpapi.journal import journal_routes
from tesla_smart_charger.httpapi.metrics import (
    car_amps,
    controller_state,
    meter_reading,
    valid_reading,
)
from tesla_smart_charger.runtime.status import command_view, controller_view

if TYPE_CHECKING:
    from tesla_smart_charger.httpapi.view import DaemonView
    from tesla_smart_charger.runtime.service import ChargeService

_LOG = logging.getLogger(__name__)

HISTORY_SECS = 15 * 60
MIN_SEND_INTERVAL = 0.5  # seconds between two samples on one stream (coalescing)
HEARTBEAT_SECS = 15.0
RECONNECT_MS = 3000
RECENT_COMMANDS = 10
RECENT_JOURNAL = 20  # the dashboard's table; GET /api/journal has them all
HISTORY_FILE = "history.json"
HISTORY_SAVE_SECS = 300.0  # and at shutdown: a whole file every 30 s would wear an SD card
ENERGY_DAYS = 31  # kWh per day per car kept
NOMINAL_VOLTS = 230.0  # when the car does not say
MIN_MAINS_VOLTS = 100  # below this the car's charger_voltage is not the mains (2 V when idle)
SUMMARY_SECTIONS = ("capacity", "grid_limit")  # /status sections the page shows when present
# What the page's car list shows of each /status `vehicles` entry.
VEHICLE_KEYS = ("vin", "name", "mode", "state", "charging_state", "setpoint_amps", "target_amps")

# name -> content type; nothing else under /web/ is served.
STATIC_FILES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "icon.svg": "image/svg+xml",
}
# The page loads only its own files and talks only to its own origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read_web_file(name: str) -> bytes:
    return (resources.files("tesla_smart_charger.httpapi") / "web" / name).read_bytes()


def _sse(event: str | None, data: Any) -> bytes:
    """One server-sent event; `data` is JSON on a single line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def car_word(service: ChargeService) -> str:
    """The car's state as the owner reads it: paused by us for room, or stopped by the driver."""
    s = service.state
    v = s.vehicle
    if v is None:
        return "unknown"
    if v.state.value != "online":
        return v.state.value  # asleep, offline
    charging = v.charge.charging_state if v.charge else None
    if s.paused:
        return "paused: waiting for room"
    if s.solar_stopped:
        return "paused: waiting for sun"
    if charging == "Stopped":
        return "stopped by the driver"
    if charging in ("Charging", "Starting"):
        return "charging"
    if charging == "Complete":
        return "complete"
    if charging in ("Disconnected", None):
        return "unplugged" if charging else "online"
    return str(charging).lower()


class HistoryStore:
    """history.json: the last 15 minutes of samples and kWh per day per car, bounded.

    Written atomically; a disk that refuses it costs only what a restart would show, so it is
    said once and the dashboard goes on from memory.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.failing = False

    def load(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
        """The samples and the energy kept last time; nothing (not an error) when absent or bad."""
        if self.path is None:
            return [], {}
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return [], {}
        except (OSError, ValueError) as err:
            _LOG.warning("dashboard: cannot read %s (%s): its history starts empty", self.path, err)
            return [], {}
        samples = raw.get("samples") if isinstance(raw, dict) else None
        energy = raw.get("energy") if isinstance(raw, dict) else None
        points = [
            p for p in samples or [] if isinstance(p, dict) and isinstance(p.get("t"), int | float)
        ]
        days: dict[str, dict[str, float]] = {}
        if isinstance(energy, dict):
            for day, cars in energy.items():
                if isinstance(cars, dict):
                    days[str(day)] = {
                        str(k): float(v) for k, v in cars.items() if isinstance(v, int | float)
                    }
        return points[-HISTORY_SECS:], days

    def save(self, samples: list[dict[str, Any]], energy: dict[str, dict[str, float]]) -> None:
        """Write both at once; said once when it starts failing and once when it works again."""
        if self.path is None:
            return
        body = {"samples": samples, "energy": energy}
        try:
            atomic_write_bytes(self.path, json.dumps(body, default=str).encode(), mode=0o600)
        except OSError as err:
            if not self.failing:
                self.failing = True
                _LOG.warning(
                    "dashboard: cannot write %s (%s): its chart and kWh are kept in memory only",
                    self.path,
                    err.strerror or err,
                )
            return
        if self.failing:
            self.failing = False
            _LOG.info("dashboard: %s is written again", self.path)


def _heat_pct(daemon: DaemonView) -> list[float] | None:
    """The main breaker's heat per phase in % of trip (None without a meter)."""
    ratio = daemon.breaker.heat_ratio() if daemon.breaker is not None else None
    return None if ratio is None else [round(100.0 * r, 1) for r in ratio]


class Dashboard:
    """History, live streams and the handlers for one daemon."""

    def __init__(
        self,
        daemon: DaemonView,
        *,
        wall: Callable[[], float] = time.time,
        heartbeat: float = HEARTBEAT_SECS,
        clock: Callable[[], float] = time.monotonic,
        store: bool = True,
    ) -> None:
        """`store`: keep the history in history.json beside the token store (False: in memory)."""
        self._daemon = daemon
        self._wall = wall
        self._clock = clock  # the controller's clock (commanded_at is on it)
        self._heartbeat = heartbeat
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SECS)
        self.latest: dict[str, Any] | None = None
        self._streams: set[asyncio.Event] = set()
        self._closing = asyncio.Event()
        self._watching = False
        self._files: dict[str, bytes] = {}
        self.energy: dict[str, dict[str, float]] = {}  # day -> car -> kWh
        self._energy_at: float | None = None
        self._saved_at = clock()
        self.store = HistoryStore(daemon.loaded.token_file.parent / HISTORY_FILE if store else None)
        samples, self.energy = self.store.load()
        self.history.extend(samples)
        daemon.service.add_listener(self.on_event)
        for car in daemon.fleet.cars:  # a mode switch reaches only its own car's controller
            if car.service is not daemon.service:
                car.service.add_listener(self.on_event)

    # --- data --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the page needs to draw axes and the limit line."""
        d = self._daemon
        cfg = d.service.cfg
        return {
            "homeMaxAmps": cfg.home_max_amps,
            "limitAmps": cfg.limit,
            "phases": cfg.supply_phases or self._meter_phases(),
            # False: the car line is inferred from the setpoint ("car (inferred)" on the page)
            "carMeasured": cfg.charger_measured,
            "mode": cfg.mode,
            "chargerMinAmps": cfg.charger_min_amps,
            "chargerMaxAmps": cfg.charger_max_amps,
            "historySecs": HISTORY_SECS,
            "chargeModes": list(CHARGE_MODES),
            "cars": [label for label, _, _ in self.cars()],
            # The page asks for the token (kept in the tab's sessionStorage only) before its
            # controls work; the token itself never leaves the server.
            "tokenRequired": self._daemon.loaded.settings.api_token is not None,
        }

    def cars(self) -> list[tuple[str, str | None, ChargeService]]:
        """(label, VIN, controller) of each car; one car is labelled like /status names it."""
        return [
            (c.label or c.name or c.vin or "Car", c.vin, c.service) for c in self._daemon.fleet.cars
        ]

    def _meter_phases(self) -> int:
        """supplyPhases auto: as many phases as the meter's readings carry (1 until known)."""
        reading = meter_reading(self._daemon)
        return len(reading.phase_amps) if reading and reading.phase_amps else 1

    def car_line(self, service: ChargeService | None = None) -> float | None:
        """The car's current for the chart: measured, or inferred from when it can have followed.

        Without a charger channel the car is taken to draw its setpoint, but a car follows a
        command only after its ramp: until carSettleSecs have passed, the chart keeps the
        setpoint the car had before, so the car line does not drop before the supply does.
        """
        service = service if service is not None else self._daemon.service
        state = service.state
        car = car_amps(state)
        reading = valid_reading(state)
        if car is None or (reading is not None and reading.car_amps is not None):
            return car
        settle = service.cfg.settle_secs
        if (
            state.commanded_at is not None
            and state.command_from is not None
            and state.setpoint is not None
            and car == float(state.setpoint)
            and self._clock() - state.commanded_at < settle
        ):
            return float(state.command_from)
        return car

    def sample(self) -> dict[str, Any]:
        """The controller's state now, as one chart point."""
        d = self._daemon
        controller = controller_view(d.service, d.worst_escalation())  # /status `controller`
        reading = meter_reading(d)  # the real meter, also with several cars
        cars = [
            {
                "id": label,
                "amps": None if (amps := self.car_line(service)) is None else round(amps, 2),
                "setpoint": service.state.setpoint,
                "mode": service.state.charge_mode,
                "status": car_word(service),
            }
            for label, _, service in self.cars()
        ]
        return {
            "t": round(self._wall(), 3),
            "supply": [round(a, 2) for a in reading.phase_amps] if reading else None,
            # One car: its line. Several: each in `cars`, never one car's figure for all.
            "car": cars[0]["amps"] if len(cars) == 1 else None,
            "cars": cars,
            "setpoint": controller.setpoint_amps,
            "target": controller.target_amps,
            "reason": controller.reason,
            "state": controller_state(d, controller),
            "breaker": _heat_pct(self._daemon),
        }

    def panel(self) -> dict[str, Any]:
        """Recent commands, API calls and the cars: what changes rarely."""
        d = self._daemon
        status = d.status()
        # without its age, so the panel only changes when the car does
        vehicle = status.vehicle.model_dump(mode="json", exclude={"checked_secs_ago"})
        commands = [
            {
                **command_view(c).model_copy(update={"car": label}).model_dump(mode="json"),
                "_at": c.at,
            }
            for label, _, service in self.cars()
            for c in service.commands
        ]
        commands.sort(key=lambda c: c.pop("_at"), reverse=True)
        words = {label: car_word(service) for label, _, service in self.cars()}
        vehicles = [
            car.model_dump(mode="json", include=set(VEHICLE_KEYS)) for car in status.vehicles
        ]
        for car, (label, _, _) in zip(vehicles, self.cars(), strict=False):
            car["status"] = words.get(label)
        panel: dict[str, Any] = {
            "commands": commands[:RECENT_COMMANDS],
            "api_calls": status.api_calls.model_dump(mode="json"),
            "vehicle": vehicle,
            "vehicles": vehicles,
            "auth": d.tokens.state,
            "journal": [
                e.as_dict() for e in (d.journal.select(limit=RECENT_JOURNAL) if d.journal else [])
            ][::-1],
            "energy": self.energy_days(),
        }
        for section in SUMMARY_SECTIONS:
            part = getattr(status, section)
            if part is not None:
                panel[section] = part.model_dump(mode="json")
        return panel

    def energy_days(self, days: int = 7) -> list[dict[str, Any]]:
        """kWh per day per car, newest day first, rounded for the page."""
        newest = sorted(self.energy, reverse=True)[:days]
        return [
            {"day": day, "kwh": {car: round(k, 3) for car, k in self.energy[day].items()}}
            for day in newest
        ]

    def _add_energy(self, point: dict[str, Any]) -> None:
        """Integrate each car's amps into kWh for the owner's local day (gaps over 60 s skipped)."""
        now = float(point["t"])
        last, self._energy_at = self._energy_at, now
        if last is None or not 0 < now - last <= 60:
            return
        day = time.strftime("%Y-%m-%d", time.localtime(now))
        per_car = self.energy.setdefault(day, {})
        for (label, _, service), car in zip(self.cars(), point["cars"], strict=False):
            amps = car["amps"]
            if not amps or amps <= 0:
                continue
            charge = service.state.vehicle.charge if service.state.vehicle else None
            # A car that is not drawing reports about 2 V: only a mains voltage counts.
            mains = charge is not None and (charge.charger_voltage or 0) >= MIN_MAINS_VOLTS
            volts = float(charge.charger_voltage or 0) if mains and charge else NOMINAL_VOLTS
            phases = charge.charger_phases if charge and charge.charger_phases else 1
            kwh = amps * volts * phases * (now - last) / 3_600_000.0
            per_car[label] = per_car.get(label, 0.0) + kwh
        while len(self.energy) > ENERGY_DAYS:
            del self.energy[min(self.energy)]

    def save(self) -> None:
        """Write the history and the energy now (every HISTORY_SAVE_SECS, and at shutdown)."""
        self._saved_at = self._clock()
        self.store.save(self.recent(), self.energy)

    def snapshot(self) -> dict[str, Any]:
        """The server's time, the config summary, the history and the panel, in one object."""
        return {
            "now": round(self._wall(), 3),
            "config": self.summary(),
            "history": self.recent(),
            **self.panel(),
        }

    def recent(self) -> list[dict[str, Any]]:
        """The last 15 minutes of samples, oldest first."""
        horizon = self._wall() - HISTORY_SECS
        while self.history and self.history[0]["t"] < horizon:
            self.history.popleft()
        return list(self.history)

    def on_event(self) -> None:
        """Service listener: record a sample (one per second kept) and wake the streams."""
        try:
            point = self.sample()
        except Exception:  # noqa: BLE001 (runs in the controller's loop: never stop it)
            _LOG.exception("dashboard: could not take a sample")
            return
        self.latest = point
        self._watch_controller()  # its end (SIGTERM) saves the history, streams open or not
        self._add_energy(point)
        if self._clock() - self._saved_at >= HISTORY_SAVE_SECS:
            self.save()
        if self.history and int(self.history[-1]["t"]) == int(point["t"]):
            self.history[-1] = point  # same second: keep the newest
        else:
            self.history.append(point)
        for wake in self._streams:
            wake.set()

    @property
    def open_streams(self) -> int:
        """How many /events clients are connected."""
        return len(self._streams)

    def close(self) -> None:
        """End every open stream and keep the history (shutdown)."""
        if not self._closing.is_set():
            self.save()
        self._closing.set()
        for wake in self._streams:
            wake.set()

    async def on_shutdown(self, app: web.Application) -> None:
        """aiohttp on_shutdown hook: same as close()."""
        self.close()

    def _watch_controller(self) -> None:
        """Close the streams once the controller task ends (SIGTERM cancels it first)."""
        if self._watching:
            return
        task = self._daemon.tasks.get("controller")
        if task is not None:
            self._watching = True
            task.add_done_callback(lambda _: self.close())

    # --- handlers ----------------------------------------------------------------------------
    def _file(self, name: str) -> bytes:
        if name not in self._files:
            self._files[name] = _read_web_file(name)
        return self._files[name]

    async def index(self, request: web.Request) -> web.Response:
        """The dashboard page."""
        return web.Response(
            body=self._file("index.html"),
            content_type="text/html",
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def static(self, request: web.Request) -> web.Response:
        """Only the page's own files; any other name (or a path trick) is a 404."""
        name = request.match_info["name"]
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound(reason="no such file")  # never echo the name: it may hold CR/LF
        return web.Response(
            body=self._file(name),
            content_type=content_type,
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def history_json(self, request: web.Request) -> web.Response:
        """The same data as the stream's `init` event, for scripts and the page's first paint."""
        body = self.snapshot()
        return web.json_response(body, dumps=lambda o: json.dumps(o, default=str))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """text/event-stream: `init`, then `sample` (≤ 2/s) and `panel` on change; heartbeats."""
        self._watch_controller()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a reverse proxy must not buffer the stream
            }
        )
        await response.prepare(request)
        wake = asyncio.Event()
        self._streams.add(wake)
        try:
            await self._stream(response, wake)
        except ConnectionResetError:
            _LOG.debug("event stream client went away")
        finally:
            self._streams.discard(wake)
        return response

    async def _stream(self, response: web.StreamResponse, wake: asyncio.Event) -> None:
        init = self.snapshot()
        await response.write(f"retry: {RECONNECT_MS}\n".encode() + _sse("init", init))
        sent_panel = json.dumps(self.panel(), sort_keys=True, default=str)
        while not self._closing.is_set():
            try:
                async with asyncio.timeout(self._heartbeat):
                    await wake.wait()
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            wake.clear()
            if self._closing.is_set():
                break
            if self.latest is not None:
                await response.write(_sse("sample", self.latest))
            panel = self.panel()
            text = json.dumps(panel, sort_keys=True, default=str)
            if text != sent_panel:
                sent_panel = text
                await response.write(_sse("panel", panel))
            # Coalesce: whatever arrives meanwhile goes out as one sample (rate limiting, not
            # synchronisation). Shutdown cuts the pause short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MIN_SEND_INTERVAL):
                    await self._closing.wait()

    def routes(self) -> list[web.RouteDef]:
        """The dashboard's routes."""
        return [
            web.get("/", self.index),
            web.get("/web/{name}", self.static),
            web.get("/events", self.events, allow_head=False),
            web.get("/api/history", self.history_json),
            *journal_routes(self._daemon.journal),
        ]


def dashboard_routes(daemon: DaemonView) -> list[web.RouteDef]:
    """GET /, /web/{name}, /events and /api/history for `daemon` (registers its listener)."""
    return Dashboard(daemon).routes()
