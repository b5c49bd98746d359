"""Process lifecycle: one event loop, one ClientSession, tracked tasks, clean SIGTERM.

Start-up builds every part, passes the shared session in, starts the HTTP server and the
background tasks (charge controller, meter poller, token refresh, watchdog). A task that dies
ends the process with exit code 1 so systemd or the container restarts it; SIGTERM/SIGINT
cancel and await everything and exit 0. The optional MQTT bridge is the exception: control
never depends on it, so it only ever ends by cancellation and its state is a dependency's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from tesla_smart_charger import __version__
from tesla_smart_charger.app.sdnotify import Notifier, watchdog_loop
from tesla_smart_charger.car.failover import FailoverVehicle
from tesla_smart_charger.car.fleet_api import ApiCallCounter, TeslaClient, client_for, describe_road
from tesla_smart_charger.car.tokens import (
    DaemonLock,
    StoreInUse,
    TokenManager,
    TokenPair,
    TokenStore,
)
from tesla_smart_charger.config.settings import LoadedConfig, Settings, VehicleSettings, redacted
from tesla_smart_charger.const import CUT_LATE_SECS, SHUTDOWN_TIMEOUT
from tesla_smart_charger.control import ControlConfig, unresolved_problem
from tesla_smart_charger.control.breaker import BreakerMonitor
from tesla_smart_charger.control.events import CarLinkBack, Event, EventQueue
from tesla_smart_charger.control.interfaces import Vehicle
from tesla_smart_charger.errors import ChargerError, ConfigError
from tesla_smart_charger.httpapi.dashboard import dashboard_routes
from tesla_smart_charger.httpapi.metrics import metrics_routes
from tesla_smart_charger.httpapi.openapi import openapi_routes
from tesla_smart_charger.httpapi.server import (
    ApiContext,
    HostPolicy,
    build_app,
    connection_cap,
    listen,
    make_runner,
    raise_fd_limit,
)
from tesla_smart_charger.logging_setup import register_config_secrets
from tesla_smart_charger.retry import Health, RetryPolicy
from tesla_smart_charger.runtime.alerts import AlertSender
from tesla_smart_charger.runtime.driver import DriverControls
from tesla_smart_charger.runtime.fleet import Fleet, FleetCar
from tesla_smart_charger.runtime.journal import JOURNAL_FILE, Journal, JournalWatch
from tesla_smart_charger.runtime.safety import (
    ESCALATION_LEVELS,
    AlertWatch,
    Escalator,
    SharedRelay,
    build_relay,
    build_roads,
    escalation_config,
)
from tesla_smart_charger.runtime.service import ChargeService, MeterPoller, car_status
from tesla_smart_charger.shelly.build import create_meter

if TYPE_CHECKING:
    from tesla_smart_charger.homeassistant.mqtt import MqttBridge

_LOG = logging.getLogger(__name__)

QUEUE_SIZE = 1024  # kept for callers; the EventQueue coalesces and never fills
# On SIGTERM, a cut in flight gets this long to land before it is persisted instead
# (inside the 5 s exit budget, leaving time to cancel tasks and close the server).
DRAIN_SECS = 2.5
# Our setpoint and the driver's own setting, kept beside the token store across restarts.
STATE_FILE = "charger-state.json"
# Tasks whose end never stops the daemon: the breaker is protected without them.
OPTIONAL_TASKS = frozenset({"mqtt"})
# With supplyPhases auto, MQTT discovery waits this long for the meter's phase count.
PHASES_WAIT_SECS = 3.0
# Another daemon already runs on this token store (the code of a refused start).
EXIT_STORE_IN_USE = 2


@dataclass
class Daemon:
    """Everything the running process holds, for the HTTP handlers and for tests."""

    loaded: LoadedConfig
    monitor: bool
    session: aiohttp.ClientSession
    service: ChargeService
    counter: ApiCallCounter
    tokens: TokenManager
    poller: MeterPoller | None
    vehicle: TeslaClient | None
    notifier: Notifier
    started_at: float = field(default_factory=time.monotonic)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    breaker: BreakerMonitor | None = None  # the main breaker's heat, from meter readings
    controls: DriverControls | None = None  # the driver's ceiling (HTTP, MQTT)
    mqtt: MqttBridge | None = None  # Home Assistant, once the VIN is known
    fleet: Fleet | None = None  # several cars (issue 14): one controller per car
    journal: Journal | None = None  # every protective action, on disk beside tokens.json

    # issue 11: the BLE road (teslaBleProxy), the escalation, the safety relay, alerts
    roads: FailoverVehicle | None = None
    ble_policy: RetryPolicy | None = None
    escalator: Escalator | None = None
    relay_policy: RetryPolicy | None = None
    alerts: AlertSender | None = None
    alert_watch: AlertWatch | None = None
    api_port: int | None = None  # the port the API listens on (apiPort 0: the one the OS chose)

    @property
    def queue(self) -> asyncio.Queue[Event]:
        """The one queue every source feeds (the fleet's when there are several cars)."""
        return self.fleet.queue if self.fleet is not None else self.service.queue

    def escalations(self) -> list[tuple[str, Escalator]]:
        """Each car's escalation with the car in words (name or VIN); empty in push mode."""
        if self.fleet is not None:
            return [
                (c.label, c.service.escalation)
                for c in self.fleet.cars
                if c.service.escalation is not None
            ]
        if self.escalator is None:
            return []
        return [(self.vehicles()[0]["vin"] or "the car", self.escalator)]

    def worst_escalation(self) -> str:
        """The furthest step any car's escalation is at (`none` when none is in force)."""
        levels = [e.level for _, e in self.escalations()]
        return max(levels, key=ESCALATION_LEVELS.index, default="none")

    # --- what the endpoints show -------------------------------------------------------------
    def vehicles(self) -> list[dict[str, Any]]:
        """Each car's entry of /status `vehicles` (also per-car /metrics and the dashboard)."""
        if self.fleet is not None:
            return [car_status(c.service, c.vin, c.name) for c in self.fleet.cars]
        settings = self.loaded.settings
        first = settings.vehicles[0] if settings.vehicles else None
        vin = self.vehicle.vin if self.vehicle is not None else None
        return [
            car_status(
                self.service, vin or settings.tesla_vehicle_id, first.name if first else None
            )
        ]

    def status(self) -> dict[str, Any]:
        """The /status document."""
        out = self.service.status()
        out["controller"]["escalation"] = self.worst_escalation()  # every car's, worst first
        out["vehicles"] = self.vehicles()
        out["api_calls"] = self.counter.as_dict()
        out["auth"] = self.tokens.status()
        out["meter"] = (
            self.poller.status(self.loaded.settings.energy_monitor_type) if self.poller else None
        )
        if out["meter"] is not None:
            out["meter"]["supply_phases"] = self.loaded.settings.supply_phases  # 1, 3 or "auto"
        out["daemon"] = {
            "version": __version__,
            "uptime_secs": round(time.monotonic() - self.started_at, 1),
        }
        out["breaker"] = self.breaker.status() if self.breaker is not None else None
        out["auth"]["state"] = self.auth_state()
        out["dependencies"] = {name: h.as_dict() for name, h in self.dependencies().items()}
        if self.roads is not None:
            out["roads"] = {name: st.as_dict() for name, st in self.roads.stats().items()}
        if self.alerts is not None:
            out["alerts"] = self.alerts.as_dict()
        return out

    def auth_state(self) -> str:
        """/status `auth.state`: the token manager's state, or `expired`/`refresh_failing`."""
        state = self.tokens.state
        if state != "ok" or not self.tokens.policy.failing:
            return state
        expires = self.tokens.status()["access_expires_in_secs"]
        return "expired" if expires == 0 else "refresh_failing"

    def dependencies(self) -> dict[str, Health]:
        """Per dependency: ok / degraded / down, since when, last error in words, failures."""
        out: dict[str, Health] = {}
        if self.poller is not None:
            out["meter"] = self.poller.policy.health()
        if self.ble_policy is not None:
            out["ble_bridge"] = self.ble_policy.health()
        if self.vehicle is not None:
            out["car_link"] = self.vehicle.policy.health()
        if self.relay_policy is not None:
            out["safety_relay"] = self.relay_policy.health()
        token = self.tokens.policy.health()
        if self.tokens.state in ("reauth_required", "missing"):
            token = Health(
                "down", token.since, f"Tesla login required ({self.tokens.state})", token.failures
            )
        out["token_endpoint"] = token
        out["token_store"] = self.tokens.store_policy.health()
        if self.loaded.settings.mqtt_url is not None:
            out["mqtt"] = self._mqtt_health()
        dead = [
            name for name, task in self.tasks.items() if task.done() and name not in OPTIONAL_TASKS
        ]
        out["tasks"] = Health(
            "down" if dead else "ok",
            None,
            f"stopped: {', '.join(dead)}" if dead else None,
            len(dead),
        )
        return out

    def _mqtt_health(self) -> Health:
        """The broker link; never a /health problem (the breaker is protected without it)."""
        task = self.tasks.get("mqtt")
        if task is not None and task.done():
            return Health("down", None, "the MQTT task stopped: Home Assistant is not updated", 1)
        if self.mqtt is None:
            return Health("degraded", None, "not connected yet (waiting for the car's VIN)", 0)
        return self.mqtt.health()

    def warnings(self) -> list[str]:
        """Conditions worth a look that leave the breaker protected (/health stays 200).

        Tokens held only in memory: commands still go, but a restart would lose the login. A
        503 here would invite a container runtime to restart the daemon, causing that loss.
        """
        problem = self.tokens.store_problem()
        return [problem] if problem is not None else []

    def health(self) -> list[str]:
        """Reasons the daemon is not fully working; empty when healthy.

        MQTT is left out on purpose: a broker that is down does not put the breaker at risk.
        """
        problems = [
            f"{name} task is not running"
            for name, task in self.tasks.items()
            if task.done() and name not in OPTIONAL_TASKS
        ]
        state = self.service.state
        if state.failsafe:
            # Built here, not taken from state.reason, which a later car error may replace.
            poller = self.poller
            cause = (
                poller.last_error
                if poller is not None and poller.last_error
                else "no valid reading"
            )
            problems.append(f"fail-safe: meter silent or invalid ({cause}): holding chargerMinAmps")
        if self.poller is not None and self.poller.auth_failed and self.poller.last_error:
            problems.append(f"meter authentication: {self.poller.last_error}")
        if self.tokens.state in ("reauth_required", "missing"):
            problems.append(
                f"Tesla login required ({self.tokens.state}): "
                "run `tesla-smart-charger auth url`, then `auth exchange CODE`"
            )
        elif not state.auth_ok:
            problems.append(state.reason)
        clients = self.fleet.clients if self.fleet is not None else [self.vehicle]
        problems += [c.unknown_vehicle for c in clients if c is not None and c.unknown_vehicle]
        problems += self._cut_blocked()
        for label, escalator in self.escalations():
            if escalator.state.active:
                who = label if self.fleet else "the car"
                # Said as it is: a car that ignores cuts, or one no road reaches.
                car = (
                    f"{who} did not follow a cut"
                    if escalator.state.road_up
                    else f"no road reaches {who}"
                )
                problems.append(
                    f"escalation {escalator.level}: {car} (see the log and docs/relay.md)"
                )
        stuck = self._unresolved_overload()
        if stuck is not None:
            problems.append(stuck)
        hot = self.breaker.problem() if self.breaker is not None else None
        if hot is not None:
            problems.append(hot)
        return problems

    def _unresolved_overload(self) -> str | None:
        """The supply is over homeMaxAmps and the cars at their minimum cannot bring it down."""
        if self.service.cfg.mode != "measured":
            return None
        if self.fleet is not None:
            states = tuple(c.service.state for c in self.fleet.cars)
            real = self.fleet.last_reading
        else:
            states = (self.service.state,)
            real = self.service.state.reading
        return unresolved_problem(states, real, self.service.cfg)

    def _cut_blocked(self) -> list[str]:
        """A cut is needed but cannot be sent, or has not landed in time: not protected."""
        s = self.service.state
        services = [c.service for c in self.fleet.cars] if self.fleet else [self.service]
        late = [
            f"{svc.label + ': ' if svc.label else ''}a reduction has waited {secs:.0f} s and "
            f"has not landed (the car link is slow or failing): {svc.state.reason}"
            for svc in services
            if (secs := svc.cut_late_secs()) > CUT_LATE_SECS
        ]
        if not self.service.cut_needed:
            return late
        ble_ok = self.ble_policy is not None and self.ble_policy.state_now() == "ok"
        if self.vehicle is not None and self.vehicle.policy.state_now() != "ok" and not ble_ok:
            cause = self.vehicle.policy.last_error or "failing"
            return [*late, f"a reduction is needed but the car link is down: {cause}"]
        if self.tokens.policy.failing or not s.auth_ok:
            cause = self.tokens.policy.last_error or s.reason
            return [*late, f"a reduction is needed but Tesla authorization is failing: {cause}"]
        return late

    def tasks_alive(self) -> bool:
        """True while every needed background task runs (what the systemd watchdog checks)."""
        return all(not t.done() for n, t in self.tasks.items() if n not in OPTIONAL_TASKS)

    def one_line(self) -> str:
        """A short status for sd_notify STATUS= and the demo's terminal view."""
        s = self.service.state
        return f"{self.service.cfg.mode}: setpoint {s.setpoint if s.setpoint is not None else '-'} A; {s.reason}"


def car_activity(services: list[ChargeService]) -> tuple[float | None, float, bool]:
    """What the meter must show of the cars: the latest big change, its size, any charging."""
    moves = [(svc.moved_at, svc.moved_amps) for svc in services if svc.moved_at is not None]
    latest = max(moves, default=(None, 0.0), key=lambda m: m[0] or 0.0)
    return latest[0], latest[1], any(svc.charging for svc in services)


def watch_for_frozen_meter(daemon: Daemon) -> None:
    """Let the meter poller see what the cars did, so it can tell a frozen meter."""
    if daemon.poller is None:
        return
    services = [c.service for c in daemon.fleet.cars] if daemon.fleet else [daemon.service]
    daemon.poller.car_activity = lambda: car_activity(services)


def car_config(cfg: ControlConfig, s: Settings, v: VehicleSettings, *, ble: bool) -> ControlConfig:
    """One car's controller settings: its own keys in `vehicles`, else the top-level ones."""
    return replace(
        cfg,
        charger_min_amps=math.ceil(v.charger_min_amps or s.charger_min_amps),
        charger_max_amps=math.floor(v.charger_max_amps or s.charger_max_amps),
        charger_phase=v.charger_phase or s.charger_phase,
        # its own channel; the top-level one measures it only when it is the only car
        charger_measured=v.meter_charger_channel is not None
        or (cfg.charger_measured and len(s.vehicles or ()) <= 1),
        cloud_budget=None if ble else s.cloud_commands_per_hour,  # BLE commands are free
    )


def build_fleet(
    loaded: LoadedConfig,
    session: aiohttp.ClientSession,
    *,
    queue: asyncio.Queue[Event],
    cfg: ControlConfig,
    tokens: TokenManager,
    counter: ApiCallCounter,
    poller: MeterPoller | None,
) -> Fleet:
    """One TeslaClient (and BLE road) and one ChargeService per entry of `vehicles`.

    One token store for the account; the first car keeps charger-state.json, the others get
    charger-state-<VIN>.json.
    """
    s = loaded.settings
    assert s.vehicles is not None  # noqa: S101 (the caller checked)
    cars: list[FleetCar] = []
    clients: list[TeslaClient] = []
    roads: list[Vehicle] = []
    policies: list[RetryPolicy | None] = []  # each car's BLE bridge policy (None: cloud only)
    for i, v in enumerate(s.vehicles):
        client = client_for(loaded, session, v.vin, tokens, counter)
        ble = v.tesla_ble_proxy or s.tesla_ble_proxy
        road: Vehicle = client
        policy = None
        if ble:
            road, policy = build_roads(session, ble, client)
        car_cfg = car_config(cfg, s, v, ble=bool(ble))
        state_name = STATE_FILE if i == 0 else f"charger-state-{v.vin}.json"
        service = ChargeService(
            car_cfg,
            road,
            EventQueue(),
            kick_meter=poller.kick if poller else None,
            state_file=loaded.token_file.parent / state_name,
            charge_mode=v.mode or s.mode,
            label=v.name or v.vin,  # several cars: each log line names its car
        )
        cars.append(FleetCar(v.vin, v.name, v.priority, service, v.meter_charger_channel))
        clients.append(client)
        roads.append(road)
        policies.append(policy)
    fleet = Fleet(queue, cars, limit=cfg.limit, pause_when_overloaded=cfg.pause_when_overloaded)
    fleet.clients = clients
    fleet.roads = roads
    fleet.ble_policies = policies
    return fleet


def build_tokens(
    loaded: LoadedConfig, session: aiohttp.ClientSession, recovered: TokenPair | None
) -> TokenManager:
    """The token manager; a pair found at start that cannot be written yet is held in memory."""
    s = loaded.settings
    store = TokenStore(loaded.token_file)
    store.seed_from_config(s)
    tokens = TokenManager(store, session, token_url=s.tesla_token_url, client_id=s.tesla_client_id)
    unsaved = recovered or store.unsaved
    if unsaved is not None:
        tokens.hold_unsaved(unsaved)  # saved as soon as the store is writable
    return tokens


async def build_daemon(
    loaded: LoadedConfig,
    session: aiohttp.ClientSession,
    *,
    monitor: bool,
    recovered: TokenPair | None = None,
) -> Daemon:
    """Wire every part onto the shared session (no tasks started yet)."""
    s = loaded.settings
    if monitor and s.energy_monitor_ip is None:
        raise ConfigError(
            [
                f"{loaded.path}: energyMonitorIp: required with --monitor (the meter's host, host:port or http:// URL)"
            ]
        )
    tokens = build_tokens(loaded, session, recovered)
    counter = ApiCallCounter()
    # One entry in `vehicles`: that car, with its own keys over the top-level ones.
    one = s.vehicles[0] if s.vehicles and len(s.vehicles) == 1 else None
    ble_url = (one.tesla_ble_proxy if one else None) or s.tesla_ble_proxy
    queue: asyncio.Queue[Event] = EventQueue()
    poller = (
        MeterPoller(
            create_meter(s, session),
            queue,
            s.energy_monitor_poll_secs,
            settle_secs=s.car_settle_secs,
            stale_secs=s.energy_monitor_stale_secs,
        )
        if monitor
        else None
    )
    cfg = ControlConfig.from_settings(s, measured=monitor)
    if one is not None:
        cfg = car_config(cfg, s, one, ble=bool(ble_url))
    fleet = None
    car: Vehicle
    if s.vehicles and len(s.vehicles) > 1:
        fleet = build_fleet(
            loaded, session, queue=queue, cfg=cfg, tokens=tokens, counter=counter, poller=poller
        )
        service = fleet.cars[0].service
        vehicle = fleet.clients[0]
        car = fleet.roads[0]
        # /status `roads`, the ble_bridge dependency and /health describe the first car's own
        # roads, as the other single-car objects do.
        roads = car if isinstance(car, FailoverVehicle) else None
        ble_policy = fleet.ble_policies[0]
    else:
        vehicle = client_for(
            loaded, session, one.vin if one else s.tesla_vehicle_id, tokens, counter
        )
        roads, ble_policy = build_roads(session, ble_url, vehicle) if ble_url else (None, None)
        car = roads if roads is not None else vehicle  # BLE first when configured
        service = ChargeService(
            cfg,
            car,
            queue,
            kick_meter=poller.kick if poller else None,
            state_file=loaded.token_file.parent / STATE_FILE,
            charge_mode=(s.vehicles[0].mode if s.vehicles else None) or s.mode,
        )
    fleet_vins = tuple(c.vin for c in fleet.cars) if fleet else ()
    controls = DriverControls(
        queue,
        lambda: fleet_vins or tuple(v for v in (vehicle.vin, s.tesla_vehicle_id) if v),
        min_amps=cfg.charger_min_amps,
        max_amps=cfg.charger_max_amps,
    )
    breaker = BreakerMonitor(s.home_max_amps) if monitor else None
    if breaker is not None:  # fed every reading the controller handles; it never steers
        # the real meter reading: with several cars each controller sees its own share
        service.add_listener(
            lambda: breaker.observe(fleet.last_reading if fleet else service.state.reading)
        )
    alerts = AlertSender(session, s.alert_webhook.get_secret_value()) if s.alert_webhook else None
    relay = build_relay(session, s)
    escalator = None
    if monitor and fleet is not None:
        # Every car escalates on its own; the one relay is off while any car's episode needs it.
        shared = SharedRelay(relay[0]) if relay else None
        if shared is not None:
            fleet.circuit_off = lambda: bool(shared.holders)
        for fc, road in zip(fleet.cars, fleet.roads, strict=True):
            fc.service.escalation = Escalator(
                escalation_config(s, fc.service.cfg, several=True),
                road,
                roads=road if isinstance(road, FailoverVehicle) else None,
                relay=shared.for_car(fc.label) if shared else None,
                relay_policy=relay[1] if relay else None,
                alerts=alerts,
                record=fc.service._record,
                label=fc.label,
            )
        escalator = service.escalation
    elif monitor:  # a failed cut is seen on the meter: push mode has none
        escalator = Escalator(
            escalation_config(s, cfg),  # one `vehicles` entry: its own chargerMinAmps
            car,
            roads=roads,
            relay=relay[0] if relay else None,
            relay_policy=relay[1] if relay else None,
            alerts=alerts,
            record=service._record,  # its commands show in /status too
        )
        service.escalation = escalator
    daemon = Daemon(
        loaded=loaded,
        monitor=monitor,
        session=session,
        service=service,
        counter=counter,
        tokens=tokens,
        poller=poller,
        vehicle=vehicle,
        notifier=Notifier(),
        breaker=breaker,
        controls=controls,
        roads=roads,
        ble_policy=ble_policy,
        escalator=escalator,
        relay_policy=relay[1] if relay else None,
        alerts=alerts,
    )
    daemon.fleet = fleet
    daemon.journal = build_journal(loaded, service, fleet)
    if alerts is not None:
        daemon.alert_watch = AlertWatch(
            alerts,
            failsafe=lambda: service.state.failsafe,
            login_required=lambda: tokens.state in ("reauth_required", "missing"),
            house_amps=lambda: (
                real.phase_amps
                if (real := fleet.last_reading if fleet else service.state.reading) is not None
                else ()
            ),
            limit=s.home_max_amps,
            roads=roads if fleet is None else None,
            car_roads=tuple(
                (fc.label, road)
                for fc, road in zip(fleet.cars, fleet.roads, strict=True)
                if isinstance(road, FailoverVehicle)
            )
            if fleet is not None
            else (),
        )
    return daemon


def build_journal(loaded: LoadedConfig, service: ChargeService, fleet: Fleet | None) -> Journal:
    """The journal beside tokens.json, filled from each car's controller."""
    journal = Journal(loaded.token_file.parent / JOURNAL_FILE)
    s = loaded.settings
    if fleet is not None:
        cars: list[tuple[str | None, ChargeService]] = [(c.label, c.service) for c in fleet.cars]
    else:
        one = s.vehicles[0] if s.vehicles else None
        cars = [((one.name or one.vin) if one else s.tesla_vehicle_id, service)]
    JournalWatch(
        journal,
        cars,
        real_reading=lambda: fleet.last_reading if fleet is not None else service.state.reading,
    )
    return journal


def api_context(daemon: Daemon) -> ApiContext:
    """Bind the HTTP handlers to the daemon's parts."""
    token = daemon.loaded.settings.api_token
    return ApiContext(
        overload=daemon.fleet.overload if daemon.fleet is not None else daemon.service.overload,
        status=daemon.status,
        config=lambda: redacted(daemon.loaded.settings),
        health=daemon.health,
        warnings=daemon.warnings,
        api_token=token.get_secret_value() if token else None,
        extra_routes=daemon.extra_routes,
        controls=daemon.controls,
        hosts=HostPolicy.for_bind(
            daemon.loaded.settings.api_host, daemon.loaded.settings.api_allowed_hosts
        ),
    )


def start_tasks(daemon: Daemon) -> None:
    """Start the tracked background tasks: controller, meter, tokens, watchdog."""
    watch_for_frozen_meter(daemon)
    main = daemon.fleet.run() if daemon.fleet is not None else daemon.service.run()
    daemon.tasks["controller"] = asyncio.create_task(main, name="controller")
    if daemon.poller is not None:
        daemon.tasks["meter"] = asyncio.create_task(daemon.poller.run(), name="meter")
    daemon.tasks["tokens"] = asyncio.create_task(daemon.tokens.run(daemon.queue), name="tokens")
    if daemon.alerts is not None:
        daemon.tasks["alerts"] = asyncio.create_task(daemon.alerts.run(), name="alerts")
    if daemon.alert_watch is not None:
        daemon.tasks["alert_watch"] = asyncio.create_task(
            daemon.alert_watch.run(), name="alert_watch"
        )
    if daemon.vehicle is not None:
        # After a long proxy outage the cut goes within seconds of recovery, not a minute.
        queue = daemon.queue
        daemon.tasks["probe"] = asyncio.create_task(
            daemon.vehicle.watch_link(
                daemon.service.cut_waits_for_link,
                lambda: queue.put_nowait(CarLinkBack(at=time.monotonic())),
            ),
            name="probe",
        )
    if daemon.notifier.watchdog_interval() is not None:
        watchdog = watchdog_loop(daemon.notifier, daemon.tasks_alive, daemon.one_line)
        daemon.tasks["watchdog"] = asyncio.create_task(watchdog, name="watchdog")
    if daemon.loaded.settings.mqtt_url is not None:
        daemon.tasks["mqtt"] = asyncio.create_task(run_mqtt(daemon), name="mqtt")


async def run_mqtt(daemon: Daemon) -> None:
    """The Home Assistant bridge: announce once the VIN (and the meter's phases) are known.

    Optional: it ends only by cancellation. Whatever goes wrong is logged and retried; control
    goes on regardless.
    """
    from tesla_smart_charger.homeassistant.mqtt import BridgeConfig, MqttBridge  # noqa: PLC0415 (aiomqtt only when used)

    s = daemon.loaded.settings
    vin = await _known_vin(daemon)
    cfg = BridgeConfig.from_settings(s, vin=vin, phases=await _meter_phases(daemon))
    if cfg is None or daemon.controls is None:
        return
    bridge = MqttBridge(cfg, daemon.status, daemon.controls)
    daemon.mqtt = bridge
    daemon.service.add_listener(bridge.changed)
    if s.supply_phases == "auto" and daemon.poller is not None:
        poller = daemon.poller

        def follow_phases() -> None:
            """supplyPhases auto: the meter's phase count may become known later."""
            last = poller.last
            if last is not None and last.valid and len(last.phase_amps) != bridge.cfg.supply_phases:
                new = BridgeConfig.from_settings(s, vin=vin, phases=len(last.phase_amps))
                if new is not None:
                    bridge.reconfigure(new)

        daemon.service.add_listener(follow_phases)
    while True:
        try:
            await bridge.run()
        except Exception:  # noqa: BLE001 (MQTT must never end the daemon; logged, retried)
            _LOG.exception("MQTT bridge failed: restarting it in 10 s (charging control goes on)")
        await asyncio.sleep(10.0)


async def _known_vin(daemon: Daemon) -> str:
    """The VIN for stable Home Assistant ids; looked up (once) if teslaVehicleId is numeric."""
    vehicle = daemon.vehicle
    if vehicle is None:
        return daemon.loaded.settings.tesla_vehicle_id
    while vehicle.vin is None:
        try:
            return await vehicle.resolve_vin()
        except ChargerError as err:  # the car link's policy logs it once
            await asyncio.sleep(max(5.0, err.retry_after, vehicle.policy.wait_secs()))
    return vehicle.vin


async def _meter_phases(daemon: Daemon) -> int | None:
    """supplyPhases auto: the phases of the first valid reading (waits PHASES_WAIT_SECS at most)."""
    poller = daemon.poller
    if daemon.loaded.settings.supply_phases != "auto" or poller is None:
        return None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PHASES_WAIT_SECS
    while loop.time() < deadline:
        last = poller.last
        if last is not None and last.valid and last.phase_amps:
            return len(last.phase_amps)
        await asyncio.sleep(0.1)
    return None  # announced with one phase; follow_phases re-announces once known


async def wait_and_stop(daemon: Daemon, stop: asyncio.Event) -> int:
    """Wait for a stop signal or a dead task, then cancel and await every task."""
    stopper = asyncio.create_task(stop.wait(), name="stop")
    needed = [t for name, t in daemon.tasks.items() if name not in OPTIONAL_TASKS]
    done, _ = await asyncio.wait({stopper, *needed}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is stopper:
            continue
        code = 1
        exc = task.exception() if not task.cancelled() else None
        _LOG.error(
            "background task %s stopped%s: exiting so the service manager restarts us",
            task.get_name(),
            f" with {exc!r}" if exc else "",
            exc_info=exc,
        )
    _LOG.info("shutting down")
    daemon.notifier.stopping()
    stopper.cancel()
    controller = daemon.tasks.get("controller")
    service = daemon.service
    budget = SHUTDOWN_TIMEOUT
    if controller is not None and not controller.done() and service.in_flight is not None:
        # A cut (or the look before it) is on its way: let it land rather than drop it.
        service.request_stop()
        await asyncio.wait([controller], timeout=DRAIN_SECS)
        budget = max(0.5, SHUTDOWN_TIMEOUT - DRAIN_SECS)
    for task in daemon.tasks.values():
        task.cancel()
    _, still = await asyncio.wait([*daemon.tasks.values(), stopper], timeout=budget)
    if still:
        _LOG.error("%d task(s) did not stop in time", len(still))
        code = code or 1
    service.persist_pending()
    daemon.tokens.save_at_exit()
    return code


def write_port_file(path: Path, port: int) -> None:
    """Write the bound port for whoever started us (tests, scripts); whole or not at all."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(temp, path)


async def run_daemon(
    loaded: LoadedConfig,
    *,
    monitor: bool,
    started: Callable[[Daemon], Awaitable[None]] | None = None,
    port_file: Path | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until a background task dies (exit 1).

    `port_file` receives the port once the API listens: with apiPort 0 the OS picks a free one,
    so daemons started side by side (the test suite) never race for a port.
    A second daemon on the same token store exits at once with 2: both would send every
    command, and both would rotate the single-use refresh tokens.
    """
    register_config_secrets(loaded.settings)
    lock = DaemonLock(loaded.token_file)
    try:
        lock.acquire()
    except StoreInUse as err:
        _LOG.error("%s", err)  # one line, no traceback: the reason is complete
        return EXIT_STORE_IN_USE
    try:
        return await _run_locked(loaded, monitor=monitor, started=started, port_file=port_file)
    finally:
        lock.release()


async def _run_locked(
    loaded: LoadedConfig,
    *,
    monitor: bool,
    started: Callable[[Daemon], Awaitable[None]] | None,
    port_file: Path | None,
) -> int:
    """run_daemon, with this process the only daemon on its token store."""
    s = loaded.settings
    fd_soft, _ = raise_fd_limit()
    recovery = TokenStore(loaded.token_file)
    try:
        # A kill between writing and renaming may have left the only copy of rotated tokens.
        recovery.recover_leftovers()
    except OSError as err:
        _LOG.warning(
            "token store %s: cannot check for leftover temp files: %s", loaded.token_file, err
        )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Per-host limits: a hung proxy cannot take the sockets the meter or token endpoint need.
    connector = aiohttp.TCPConnector(limit=32, limit_per_host=8, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector) as session:
        daemon = await build_daemon(loaded, session, monitor=monitor, recovered=recovery.unsaved)
        daemon.extra_routes += (
            metrics_routes(daemon) + dashboard_routes(daemon) + openapi_routes(daemon)
        )
        app = build_app(api_context(daemon))
        runner = make_runner(app)
        await runner.setup()
        try:
            listener, _ = await listen(
                runner, s.api_host, s.api_port, max_connections=connection_cap(fd_soft)
            )
        except OSError as err:
            _LOG.error(
                "cannot listen on %s:%s: %s (change apiHost/apiPort)",
                s.api_host,
                s.api_port,
                err.strerror,
            )
            await runner.cleanup()
            return 1
        daemon.api_port = int(listener.sockets[0].getsockname()[1])
        mode = (
            f"measured mode, meter {daemon.poller.meter.name}"
            if daemon.poller
            else "push mode (/overload)"
        )
        _LOG.info(
            "tesla-smart-charger %s listening on http://%s:%s, %s",
            __version__,
            s.api_host,
            daemon.api_port,
            mode,
        )
        _LOG.info("car commands: %s", describe_road(loaded))
        if port_file is not None:
            try:
                write_port_file(port_file, daemon.api_port)
            except OSError as err:
                _LOG.error("cannot write the port file %s: %s", port_file, err.strerror)
                listener.close()
                await runner.cleanup()
                return 1

        start_tasks(daemon)
        daemon.notifier.ready(daemon.one_line())
        if started is not None:
            await started(daemon)

        code = await wait_and_stop(daemon, stop)
        listener.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TIMEOUT / 2):
                await runner.cleanup()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    _LOG.info("stopped")
    return code
