"""Home Assistant through MQTT discovery: a device that appears by itself and can be steered.

The builders (`discovery_messages`, `state_messages`, `parse_command`) are pure: they turn the
`/status` document and the car list into topics and payloads, and a command message into a
validated value. `MqttBridge.run()` is the thin shell around aiomqtt: connect with a last will,
announce, publish state when told something changed, hand commands to `ChargerControls`, and
reconnect with capped, jittered backoff. Control never waits on MQTT: `changed()` only sets a flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import aiomqtt

from tesla_smart_charger import __version__
from tesla_smart_charger.config.mqtt_url import MqttUrl, parse_mqtt_url
from tesla_smart_charger.control.grid_limit import parse_switch
from tesla_smart_charger.logging_setup import register_secret
from tesla_smart_charger.retry import Health
from tesla_smart_charger.runtime.driver import parse_driver_limit

if TYPE_CHECKING:
    from tesla_smart_charger.config.settings import Settings
    from tesla_smart_charger.runtime.status import DaemonStatus

_LOG = logging.getLogger(__name__)

MODES: Final = ("fast", "solar", "minsolar")
DEFAULT_TOPIC_PREFIX: Final = "tesla-smart-charger"
DEFAULT_DISCOVERY_PREFIX: Final = "homeassistant"
ONLINE: Final = "online"
OFFLINE: Final = "offline"
# Every broker round trip (connect, publish, subscribe) is bounded by this.
MQTT_TIMEOUT: Final = 5.0
# `offline` on shutdown must fit in the daemon's SHUTDOWN_TIMEOUT (4 s).
OFFLINE_TIMEOUT: Final = 2.0
NONE: Final = math.inf  # aiomqtt's "no deadline of its own": ours is `_bounded`
# Home Assistant is told at most once a second per topic: the dashboard's own pace.
PUBLISH_INTERVAL: Final = 1.0
# Reconnect backoff. The cap is below the brief's 60 s on purpose: a refused connection to a
# broker on the LAN costs nothing, and discovery must be back within 10 s of the broker's return.
BACKOFF_INITIAL: Final = 1.0
BACKOFF_CAP: Final = 5.0
# Lost for longer than this: health says "down" instead of "degraded".
DOWN_AFTER: Final = 30.0
# Home Assistant rejects states longer than 255 characters.
STATE_MAX_LEN: Final = 255
_ID_SAFE = re.compile(r"[^A-Za-z0-9_-]")


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Car:
    """One car the daemon charges: its VIN and the amps range the driver may choose from."""

    vin: str
    min_amps: int
    max_amps: int


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the builders need, copied out of the settings."""

    url: MqttUrl
    cars: tuple[Car, ...]
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    home_max_amps: float = 25.0
    supply_phases: int = 1
    name: str = "Tesla Smart Charger"
    grid_limit_topic: str | None = None  # gridLimitTopic: ON/OFF from the grid operator's box
    capacity: bool = False  # importLimitKw is set: the capacity tariff's sensors are announced

    @classmethod
    def from_settings(
        cls, settings: Settings, *, vin: str | None = None, phases: int | None = None
    ) -> BridgeConfig | None:
        """None without `mqttUrl`. `vin` overrides `teslaVehicleId` once the VIN is known.

        `phases` is what the meter reported, used when `supplyPhases` is `auto`.
        """
        if settings.mqtt_url is None:
            return None
        car = Car(
            vin=vin or settings.tesla_vehicle_id,
            min_amps=math.ceil(settings.charger_min_amps),
            max_amps=math.floor(settings.charger_max_amps),
        )
        return cls(
            url=parse_mqtt_url(settings.mqtt_url.get_secret_value()),
            cars=(car,),
            topic_prefix=settings.mqtt_topic_prefix,
            discovery_prefix=settings.mqtt_discovery_prefix,
            home_max_amps=settings.home_max_amps,
            supply_phases=(
                settings.supply_phases if isinstance(settings.supply_phases, int) else (phases or 1)
            ),
            grid_limit_topic=settings.grid_limit_topic,
            capacity=settings.import_limit_kw is not None,
        )

    @property
    def device_id(self) -> str:
        """Stable id of the daemon's device, from the (first) car's VIN."""
        return "tsc_" + _ID_SAFE.sub("_", self.cars[0].vin).lower()

    @property
    def status_topic(self) -> str:
        """Availability: `online` while connected, `offline` as last will and on shutdown."""
        return f"{self.topic_prefix}/status"

    @property
    def state_topic(self) -> str:
        """The daemon's JSON state (sensors and binary sensors)."""
        return f"{self.topic_prefix}/state"

    @property
    def ha_status_topic(self) -> str:
        """Home Assistant's birth/last-will topic: `online` means it wants discovery again."""
        return f"{self.discovery_prefix}/status"

    def car_topic(self, car: Car) -> str:
        """Root of one car's topics."""
        return f"{self.topic_prefix}/car/{_ID_SAFE.sub('_', car.vin)}"

    def command_topics(self) -> dict[str, tuple[Car, Literal["driver_limit", "mode"]]]:
        """Every topic we accept commands on, with what it controls."""
        out: dict[str, tuple[Car, Literal["driver_limit", "mode"]]] = {}
        for car in self.cars:
            out[f"{self.car_topic(car)}/driver_limit/set"] = (car, "driver_limit")
            out[f"{self.car_topic(car)}/mode/set"] = (car, "mode")
        return out


# --- pure builders ---------------------------------------------------------------------------


def _amps(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 1)


def _on_off(value: bool | None) -> str | None:
    return None if value is None else ("ON" if value else "OFF")


def _supply(status: DaemonStatus) -> list[float]:
    """The supply phases of the last valid reading (empty while the meter is silent)."""
    meter = status.meter
    if meter is None or not meter.valid or not meter.amps:
        return []
    return list(meter.amps)


def car_link(status: DaemonStatus) -> bool | None:
    """True while the daemon reaches the car, as its own link health says; None: cannot tell.

    The car link (the proxy and Tesla's Fleet API) is up when its dependency is ok, or when
    the BLE bridge, the other road, is; a Tesla login that is needed cuts every road. Without
    a car link of our own the car's last known state is all there is.
    """
    deps = status.dependencies
    if status.auth.state in ("reauth_required", "missing"):
        return False
    roads = [d for d in (deps.car_link, deps.ble_bridge) if d is not None]
    if roads:
        return any(d.state == "ok" for d in roads)
    state = status.vehicle.state
    if state in ("online", "asleep"):
        return True
    return False if state == "offline" else None


def _car_status(status: DaemonStatus, car: Car) -> tuple[int | None, str]:
    """The car's driver's ceiling and mode: its /status `vehicles` entry, else the controller's."""
    for entry in status.vehicles:
        if entry.vin == car.vin:
            return entry.driver_limit_amps, entry.mode
    return status.controller.driver_limit_amps, status.controller.charge_mode


def daemon_state(cfg: BridgeConfig, status: DaemonStatus) -> dict[str, Any]:
    """The daemon's JSON state: what each sensor's value_template reads."""
    supply = _supply(status)
    out: dict[str, Any] = {}
    for i in range(cfg.supply_phases):
        out[f"supply_l{i + 1}"] = _amps(supply[i]) if i < len(supply) else None
    meter = status.meter
    car = meter.car_amps if meter is not None and meter.car_amps is not None else None
    if car is None and status.vehicle.amps_actual is not None:
        car = float(status.vehicle.amps_actual)
    out["car_amps"] = _amps(car)
    controller = status.controller
    out["setpoint"] = _amps(controller.setpoint_amps)
    out["target"] = _amps(controller.target_amps)
    # homeMaxAmps minus the worst phase, as /metrics' headroom_amps; negative while overloaded
    out["headroom"] = _amps(cfg.home_max_amps - max(supply)) if supply else None
    out["cost_today"] = round(status.api_calls.cost_last_24h_usd, 4)
    out["reason"] = controller.reason[:STATE_MAX_LEN]
    out["overload"] = _on_off(max(supply) > cfg.home_max_amps if supply else None)
    out["failsafe"] = _on_off(controller.failsafe)
    out["car_link"] = _on_off(car_link(status))
    if cfg.capacity:
        capacity = status.capacity
        for key, name in CAPACITY_FIELDS:
            value = getattr(capacity, name) if capacity is not None else None
            out[key] = None if value is None else round(value, 3)
        out["capacity_active"] = _on_off(capacity.active if capacity is not None else None)
    return out


# The capacity tariff's sensors: (state key, /status `capacity` field).
CAPACITY_FIELDS = (
    ("capacity_window_avg", "window_avg_kw"),
    ("capacity_projection", "projection_kw"),
    ("capacity_month_peak", "month_peak_kw"),
)


def car_state(car: Car, status: DaemonStatus) -> dict[str, Any]:
    """One car's JSON state: the driver's ceiling and the mode."""
    limit, mode = _car_status(status, car)
    return {"driver_limit": limit, "mode": mode if mode in MODES else "fast"}


def state_messages(cfg: BridgeConfig, status: DaemonStatus) -> dict[str, str]:
    """Topic → JSON payload for every state topic (all retained)."""
    out = {cfg.state_topic: json.dumps(daemon_state(cfg, status), sort_keys=True)}
    for car in cfg.cars:
        out[f"{cfg.car_topic(car)}/state"] = json.dumps(car_state(car, status), sort_keys=True)
    return out


def _device(cfg: BridgeConfig, sw_version: str) -> dict[str, Any]:
    return {
        "identifiers": [cfg.device_id],
        "name": cfg.name,
        "manufacturer": "tesla-smart-charger",
        "model": "Smart charge controller",
        "sw_version": sw_version,
    }


def discovery_messages(cfg: BridgeConfig, status: DaemonStatus | None = None) -> dict[str, str]:
    """Topic → retained discovery config for every entity, all on one device."""
    sw_version = status.daemon.version if status is not None else __version__
    common: dict[str, Any] = {
        "device": _device(cfg, sw_version),
        "origin": {"name": "tesla-smart-charger", "sw_version": sw_version},
        "availability": [
            {
                "topic": cfg.status_topic,
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
            }
        ],
    }
    amps = {
        "device_class": "current",
        "state_class": "measurement",
        "unit_of_measurement": "A",
        "suggested_display_precision": 1,
    }
    out: dict[str, str] = {}

    def add(component: str, key: str, config: dict[str, Any], unique: str | None = None) -> None:
        unique_id = unique or f"{cfg.device_id}_{key}"
        topic = f"{cfg.discovery_prefix}/{component}/{cfg.device_id}/{key}/config"
        payload = {**common, "unique_id": unique_id, **config}
        out[topic] = json.dumps(payload, sort_keys=True)

    def sensor(key: str, name: str, extra: dict[str, Any]) -> None:
        add(
            "sensor",
            key,
            {
                "name": name,
                "state_topic": cfg.state_topic,
                "value_template": f"{{{{ value_json.{key} }}}}",
                **extra,
            },
        )

    for i in range(1, cfg.supply_phases + 1):
        label = "Supply current" if cfg.supply_phases == 1 else f"Supply current L{i}"
        sensor(f"supply_l{i}", label, amps)
    sensor("car_amps", "Car current", amps)
    sensor("setpoint", "Setpoint", {**amps, "icon": "mdi:ev-station"})
    sensor("target", "Target", {**amps, "icon": "mdi:target"})
    sensor("headroom", "Headroom", {**amps, "icon": "mdi:gauge"})
    sensor(
        "cost_today",
        "Fleet API cost today",
        {
            "device_class": "monetary",
            "state_class": "total",
            "unit_of_measurement": "USD",
            "suggested_display_precision": 3,
            "entity_category": "diagnostic",
        },
    )
    sensor("reason", "Controller reason", {"icon": "mdi:information-outline"})
    if cfg.capacity:
        power = {
            "device_class": "power",
            "state_class": "measurement",
            "unit_of_measurement": "kW",
            "suggested_display_precision": 2,
        }
        sensor("capacity_window_avg", "Capacity window average", power)
        sensor("capacity_projection", "Capacity window projection", power)
        sensor("capacity_month_peak", "Capacity month peak", power)
    for key, name, device_class in (
        ("overload", "Overload", "problem"),
        ("failsafe", "Fail-safe", "problem"),
        ("car_link", "Car link", "connectivity"),
        *((("capacity_active", "Capacity limit active", "running"),) if cfg.capacity else ()),
    ):
        add(
            "binary_sensor",
            key,
            {
                "name": name,
                "device_class": device_class,
                "state_topic": cfg.state_topic,
                "value_template": f"{{{{ value_json.{key} }}}}",
                "payload_on": "ON",
                "payload_off": "OFF",
            },
        )
    for car in cfg.cars:
        vin_id = _ID_SAFE.sub("_", car.vin).lower()
        suffix = "" if len(cfg.cars) == 1 else f" {car.vin[-6:]}"
        car_topic = cfg.car_topic(car)
        add(
            "number",
            f"{vin_id}_driver_limit",
            {
                "name": f"Amps ceiling{suffix}",
                "device_class": "current",
                "unit_of_measurement": "A",
                "min": car.min_amps,
                "max": car.max_amps,
                "step": 1,
                "mode": "slider",
                "state_topic": f"{car_topic}/state",
                "value_template": "{{ value_json.driver_limit }}",
                "command_topic": f"{car_topic}/driver_limit/set",
                "icon": "mdi:car-electric",
            },
            unique=f"tsc_{vin_id}_driver_limit",
        )
        add(
            "select",
            f"{vin_id}_mode",
            {
                "name": f"Charge mode{suffix}",
                "options": list(MODES),
                "state_topic": f"{car_topic}/state",
                "value_template": "{{ value_json.mode }}",
                "command_topic": f"{car_topic}/mode/set",
                "icon": "mdi:solar-power",
            },
            unique=f"tsc_{vin_id}_mode",
        )
    return out


@dataclass(frozen=True)
class Command:
    """A validated command from Home Assistant."""

    vin: str
    kind: Literal["driver_limit", "mode"]
    value: int | str


def parse_command(cfg: BridgeConfig, topic: str, payload: bytes) -> Command | None:
    """The command a message carries, None when the topic is not a command topic.

    Raises ValueError naming the entity and the rule when the payload is not acceptable.
    """
    target = cfg.command_topics().get(topic)
    if target is None:
        return None
    car, kind = target
    text = payload.decode("utf-8", errors="replace").strip()
    if kind == "mode":
        if text not in MODES:
            raise ValueError(f"mode for {car.vin}: {text[:40]!r} is not one of {', '.join(MODES)}")
        return Command(car.vin, kind, text)
    # The same validation as POST /vehicles/{vin}/limit.
    amps = parse_driver_limit(
        text, min_amps=car.min_amps, max_amps=car.max_amps, name=f"amps ceiling for {car.vin}"
    )
    return Command(car.vin, kind, amps)


class TopicLimiter:
    """Publish on change, at most once per `interval` per topic; the newest value wins.

    `offer` records what a topic should say; `due(now)` returns what may go out now and
    `next_due()` when the next held-back value may. `forget()` makes everything new again
    (after a reconnect: a broker without persistence lost our retained values).
    """

    def __init__(self, interval: float = PUBLISH_INTERVAL) -> None:
        self._interval = interval
        self._sent: dict[str, str] = {}
        self._sent_at: dict[str, float] = {}
        self._pending: dict[str, str] = {}

    def offer(self, topic: str, payload: str) -> None:
        """Remember `payload` for `topic` unless it is what the topic already says."""
        if self._sent.get(topic) == payload:
            self._pending.pop(topic, None)
        else:
            self._pending[topic] = payload

    def due(self, now: float) -> list[tuple[str, str]]:
        """Pending values whose topic has been quiet for `interval`; marked as sent."""
        out = []
        for topic, payload in list(self._pending.items()):
            last = self._sent_at.get(topic)
            if last is None or now - last >= self._interval:
                out.append((topic, payload))
                self._sent[topic] = payload
                self._sent_at[topic] = now
                del self._pending[topic]
        return out

    def next_due(self) -> float | None:
        """When the earliest held-back value may go out; None when nothing waits."""
        times = [self._sent_at.get(t, -math.inf) + self._interval for t in self._pending]
        return min(times) if times else None

    def forget(self) -> None:
        """Treat every topic as never published (keeps the timing, so the rate still holds)."""
        for topic, payload in self._sent.items():
            self._pending.setdefault(topic, payload)
        self._sent.clear()


class Backoff:
    """Capped exponential backoff with jitter: 1 s, 2 s, 4 s … up to the cap, each 50-100 %.

    One small class so the shared retry policy can replace it.
    """

    def __init__(
        self,
        initial: float = BACKOFF_INITIAL,
        cap: float = BACKOFF_CAP,
        rng: random.Random | None = None,
    ) -> None:
        self._initial = initial
        self._cap = cap
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self.attempt = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; grows until `reset()`."""
        base = min(self._cap, self._initial * 2**self.attempt)
        self.attempt += 1
        return float(max(self._initial, base * self._rng.uniform(0.5, 1.0)))

    def reset(self) -> None:
        """Back to the shortest wait (after a success)."""
        self.attempt = 0


# --- the shell -------------------------------------------------------------------------------


class ChargerControls(Protocol):
    """What Home Assistant may change; implemented by the daemon (queues a controller event).

    Each returns None when accepted, else a short reason for the log. Must not block.
    """

    def set_driver_limit(self, vin: str, amps: int) -> str | None:
        """Cap the car at `amps` (already validated to chargerMinAmps..chargerMaxAmps)."""
        ...

    def set_mode(self, vin: str, mode: str) -> str | None:
        """Switch the car's mode (already validated to one of MODES)."""
        ...


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_T = TypeVar("_T")


async def _bounded(call: Awaitable[_T], secs: float) -> _T:
    """`call` within `secs`; a timeout is raised as the MqttError aiomqtt would raise.

    asyncio.timeout keeps a cancellation that races the deadline; Python 3.11's wait_for
    (aiomqtt's own deadline) may drop it.
    """
    try:
        async with asyncio.timeout(secs):
            return await call
    except TimeoutError:
        raise aiomqtt.MqttError("Operation timed out") from None


class Client(aiomqtt.Client):
    """aiomqtt's client without a race that a busy machine hits when the broker goes away.

    aiomqtt (2.5) registers the socket's writer with `call_soon_threadsafe`. When the broker
    drops the connection before that runs, the descriptor is already closed and asyncio logs
    "Exception in callback ... Bad file descriptor" with a traceback. The disconnect is noticed
    anyway, so a socket closed by then is simply not registered.
    """

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def write() -> None:
            # As aiomqtt's: a failed write is the connection breaking.
            try:
                client.loop_write()
            except Exception as exc:  # noqa: BLE001 (handed on as the disconnect's cause)
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        fileno = sock.fileno()

        def register() -> None:
            if fileno < 0 or sock.fileno() != fileno:
                return  # closed meanwhile
            with contextlib.suppress(OSError, ValueError):
                self._loop.add_writer(fileno, write)

        self._loop.call_soon_threadsafe(register)


class MqttBridge:
    """The MQTT client task: one connection, re-established for as long as the daemon runs."""

    def __init__(
        self,
        cfg: BridgeConfig,
        snapshot: Callable[[], DaemonStatus],
        controls: ChargerControls,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        client_id: str | None = None,
        timeout: float = MQTT_TIMEOUT,
        grid_signal: Callable[[bool | None, str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        # gridLimitTopic: told each ON/OFF (True/False), and None with the cause in words
        # when the broker is lost (the limit then counts as on).
        self._grid_signal = grid_signal
        self._snapshot = snapshot
        self._controls = controls
        self._clock = clock
        self._wall = wall
        self._backoff = backoff or Backoff()
        self._timeout = timeout
        self._client_id = client_id or f"{cfg.device_id}-{random.getrandbits(32):08x}"
        self._changed = asyncio.Event()
        self._limiter = TopicLimiter()
        self.connected = False
        self.failures = 0  # failed connection attempts since the last success
        self._rediscover = False
        self._lost_at: float | None = None  # monotonic; None while connected or never lost
        self._since_wall = wall()
        self.last_error: str | None = None
        if cfg.url.password:
            register_secret(cfg.url.password)

    # -- what the daemon calls ----------------------------------------------------------------

    def changed(self) -> None:
        """Something changed: publish soon. Never blocks (a service listener)."""
        self._changed.set()

    def reconfigure(self, cfg: BridgeConfig) -> None:
        """New entities (the meter's phases became known): announce them on the next publish."""
        if cfg != self.cfg:
            self.cfg = cfg
            self._rediscover = True
            self._changed.set()

    def health(self) -> Health:
        """The broker link as a dependency: /status `dependencies.mqtt` and /metrics."""
        state = self.state()["state"]
        return Health(state, self._since_wall, self.last_error, self.failures)

    def state(self) -> dict[str, Any]:
        """Health of the broker link: ok, degraded (lost, retrying) or down (lost > 30 s)."""
        if self.connected:
            state = "ok"
        elif self._lost_at is not None and self._clock() - self._lost_at > DOWN_AFTER:
            state = "down"
        else:
            state = "degraded"
        return {
            "state": state,
            "since": _iso(self._since_wall),
            "broker": str(self.cfg.url),
            "last_error": self.last_error,
        }

    # -- the task ------------------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        url = self.cfg.url
        tls = ssl.create_default_context() if url.tls else None
        return Client(
            url.host,
            url.port,
            username=url.username,
            password=url.password,
            identifier=self._client_id,
            will=aiomqtt.Will(self.cfg.status_topic, OFFLINE, qos=1, retain=True),
            # Our own deadlines (`_bounded`) instead of aiomqtt's: it uses asyncio.wait_for,
            # which on Python 3.11 can swallow a cancellation that arrives as the call
            # completes; the task then runs on and the daemon's stop waits for it.
            timeout=math.inf,
            keepalive=30,
            tls_context=tls,
        )

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[aiomqtt.Client]:
        """A connected client whose disconnect is bounded.

        aiomqtt waits for the broker's acknowledgement of a disconnect without a deadline; a
        broker that restarted meanwhile may never send it (seen under load), and the stop of the
        task, and so of the daemon, would hang on it.
        """
        client = self._client()
        await _bounded(client.__aenter__(), self._timeout)
        try:
            yield client
        finally:
            try:
                async with asyncio.timeout(OFFLINE_TIMEOUT):
                    await client.__aexit__(None, None, None)
            except TimeoutError:
                _LOG.info(
                    "MQTT: the broker did not confirm the disconnect within %g s; leaving anyway",
                    OFFLINE_TIMEOUT,
                )

    async def run(self) -> None:
        """Connect, serve, reconnect; returns only by cancellation (publishing `offline` first)."""
        while True:
            try:
                async with self._session() as client:
                    await self._serve(client)
            except aiomqtt.MqttError as err:
                self._lost(err)
            except (OSError, ValueError, RuntimeError) as err:
                # MQTT is optional: nothing it meets may end the task (and so the daemon).
                self._lost(err)
            delay = self._backoff.next_delay()
            _LOG.debug("MQTT: next attempt in %.1f s", delay)
            await asyncio.sleep(delay)

    def _lost(self, err: Exception) -> None:
        message = str(err) or type(err).__name__
        self.last_error = message
        self.failures += 1
        if self.connected or self._lost_at is None:
            self.connected = False
            self._lost_at = self._clock()
            self._since_wall = self._wall()
            hint = (
                "check the user and password in mqttUrl"
                if "authoriz" in message.lower() or "password" in message.lower()
                else "retrying"
            )
            _LOG.warning(
                "MQTT broker %s not available (%s): Home Assistant shows the charger as "
                "unavailable; charging control goes on; %s",
                self.cfg.url,
                message,
                hint,
            )
        if self._grid_signal is not None and self.cfg.grid_limit_topic:
            self._grid_signal(None, f"the MQTT broker {self.cfg.url} is not available ({message})")

    def _up(self) -> None:
        if self._lost_at is not None:
            _LOG.warning(
                "MQTT broker %s reachable again after %.0f s: Home Assistant is up to date",
                self.cfg.url,
                self._clock() - self._lost_at,
            )
        else:
            _LOG.info(
                "MQTT: connected to %s; Home Assistant discovery under %s/",
                self.cfg.url,
                self.cfg.discovery_prefix,
            )
        self.connected = True
        self.failures = 0
        self._lost_at = None
        self.last_error = None
        self._since_wall = self._wall()
        self._backoff.reset()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection's life; on cancellation it says `offline` before disconnecting.

        A clean disconnect suppresses the last will, so `offline` must be published by hand,
        whenever the stop comes, even while we are still announcing ourselves.
        """
        try:
            await _bounded(
                client.publish(self.cfg.status_topic, ONLINE, qos=1, retain=True, timeout=NONE),
                self._timeout,
            )
            await _bounded(
                client.subscribe(self.cfg.ha_status_topic, qos=1, timeout=NONE), self._timeout
            )
            for topic in self.cfg.command_topics():
                await _bounded(client.subscribe(topic, qos=1, timeout=NONE), self._timeout)
            if self.cfg.grid_limit_topic:
                # Its retained value arrives right after; until then the last word stands.
                await _bounded(
                    client.subscribe(self.cfg.grid_limit_topic, qos=1, timeout=NONE),
                    self._timeout,
                )
            await self._publish_discovery(client)
            self._up()
            self._limiter.forget()
            self._changed.set()
            await self._serve_connected(client)
        except asyncio.CancelledError:
            self.connected = False
            try:
                await _bounded(
                    client.publish(
                        self.cfg.status_topic, OFFLINE, qos=1, retain=True, timeout=NONE
                    ),
                    OFFLINE_TIMEOUT,
                )
            except aiomqtt.MqttError as err:
                _LOG.info("MQTT: could not say offline on the way out (%s)", err)
            else:
                _LOG.info("MQTT: told Home Assistant we are offline")
            raise

    async def _serve_connected(self, client: aiomqtt.Client) -> None:
        receiver = asyncio.create_task(self._receive(client), name="mqtt-receive")
        publisher = asyncio.create_task(self._publish_states(client), name="mqtt-publish")
        try:
            done, _ = await asyncio.wait((receiver, publisher), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it (MqttError on a lost broker)
        finally:
            for task in (receiver, publisher):
                task.cancel()
            await asyncio.gather(receiver, publisher, return_exceptions=True)

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        for topic, payload in discovery_messages(self.cfg, self._snapshot()).items():
            await _bounded(
                client.publish(topic, payload, qos=1, retain=True, timeout=NONE), self._timeout
            )

    async def _publish_states(self, client: aiomqtt.Client) -> None:
        while True:
            wake = self._limiter.next_due()
            timeout = None if wake is None else max(0.0, wake - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            if self._changed.is_set():
                self._changed.clear()
                if self._rediscover:
                    self._rediscover = False
                    _LOG.info("MQTT: the meter's phases are known: announcing the device again")
                    await self._publish_discovery(client)
                for topic, payload in state_messages(self.cfg, self._snapshot()).items():
                    self._limiter.offer(topic, payload)
            for topic, payload in self._limiter.due(self._clock()):
                await _bounded(
                    client.publish(topic, payload, qos=0, retain=True, timeout=NONE),
                    self._timeout,
                )

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = (
                message.payload
                if isinstance(message.payload, bytes)
                else str(message.payload).encode()
            )
            if topic == self.cfg.ha_status_topic:
                if payload.strip() == ONLINE.encode():
                    _LOG.info("MQTT: Home Assistant restarted; announcing the device again")
                    await self._publish_discovery(client)
                    self._limiter.forget()
                    self._changed.set()
                continue
            if topic == self.cfg.grid_limit_topic:
                self._handle_grid_limit(payload)
                continue
            self._handle_command(topic, payload)

    def _handle_grid_limit(self, payload: bytes) -> None:
        """gridLimitTopic: ON/OFF, true/false, 1/0; anything else is said and ignored."""
        try:
            on = parse_switch(payload)
        except ValueError as err:
            _LOG.warning("MQTT gridLimitTopic %s: ignored: %s", self.cfg.grid_limit_topic, err)
            return
        if self._grid_signal is not None:
            self._grid_signal(on, "")

    def _handle_command(self, topic: str, payload: bytes) -> None:
        try:
            command = parse_command(self.cfg, topic, payload)
        except ValueError as err:
            _LOG.warning("MQTT command ignored: %s", err)
            return
        if command is None:
            return
        if command.kind == "driver_limit":
            assert isinstance(command.value, int)  # noqa: S101 (parse_command's contract)
            error = self._controls.set_driver_limit(command.vin, command.value)
        else:
            error = self._controls.set_mode(command.vin, str(command.value))
        if error:
            _LOG.warning("MQTT command %s = %s not applied: %s", command.kind, command.value, error)
        else:
            _LOG.info("Home Assistant set %s of %s to %s", command.kind, command.vin, command.value)
        self._changed.set()
