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
from typing import TYPE_CHECKING

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
from tesla_smart_charger.config.control import controller_config
from tesla_smart_charger.config.settings import LoadedConfig, Settings, VehicleSettings, redacted
from tesla_smart_charger.const import CUT_LATE_SECS, SHUTDOWN_TIMEOUT
from tesla_smart_charger.control import ControlConfig, unresolved_problem
from tesla_smart_charger.control.capacity import CapacityConfig
from tesla_smart_charger.control.events import CarLinkBack, Event, GridLimitChanged
from tesla_smart_charger.control.grid_limit import SourceReading, SourceState
from tesla_smart_charger.control.interfaces import Vehicle
from tesla_smart_charger.control.supervisor import ESCALATION_LEVELS
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
from tesla_smart_charger.runtime.breaker_monitor import BreakerMonitor
from tesla_smart_charger.runtime.capacity import CapacityGuard, StartDelay
from tesla_smart_charger.runtime.driver import DriverControls
from tesla_smart_charger.runtime.fleet import Fleet, FleetCar, car_label
from tesla_smart_charger.runtime.grid_limit import (
    GridLimitWatch,
    input_policy,
    poll_input,
    watch_pending,
)
from tesla_smart_charger.runtime.journal import JOURNAL_FILE, Journal, JournalWatch, Readings
from tesla_smart_charger.runtime.queue import EventQueue
from tesla_smart_charger.runtime.safety import (
    AlertWatch,
    Escalator,
    SharedRelay,
    build_relay,
    build_roads,
    escalation_config,
)
from tesla_smart_charger.runtime.service import ChargeService, MeterPoller
from tesla_smart_charger.runtime.status import (
    DaemonInfo,
    DaemonStatus,
    VehicleEntry,
    alerts_view,
    api_calls_view,
    auth_view,
    breaker_view,
    capacity_view,
    command_view,
    controller_view,
    dependencies_view,
    meter_view,
    road_view,
    vehicle_entry,
    vehicle_view,
)
from tesla_smart_charger.shelly.build import create_meter
from tesla_smart_charger.shelly.input import ShellyInput

if TYPE_CHECKING:
    from tesla_smart_charger.homeassistant.mqtt import MqttBridge

_LOG = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class DaemonCar:
    """One car as the daemon holds it: its controller (in the fleet) and how commands reach it."""

    car: FleetCar
    client: TeslaClient  # its cloud link: health, the recovery probe, the VIN lookup
    roads: FailoverVehicle | None = None  # BLE first, then the cloud (teslaBleProxy)
    ble_policy: RetryPolicy | None = None  # that bridge's pace and health

    @property
    def road(self) -> Vehicle:
        """What its controller and escalation command: the roads when a bridge is configured."""
        return self.roads if self.roads is not None else self.client

    @property
    def vin(self) -> str:
        """The VIN once known (a numeric Fleet id is looked up), else the configured id."""
        return self.client.vin or self.car.vin


@dataclass
class Daemon:
    """Everything the running process holds, for the HTTP handlers and for tests.

    One car is a fleet of one: every car, however many, is in `fleet` (its controller) and in
    `cars` (its link). The top level of /status, the car_link dependency and the recovery
    probe describe the first car, as they always did.
    """

    loaded: LoadedConfig
    monitor: bool
    session: aiohttp.ClientSession
    fleet: Fleet  # one controller per car, behind the one queue every source feeds
    cars: tuple[DaemonCar, ...]  # in the fleet's order
    counter: ApiCallCounter
    tokens: TokenManager
    poller: MeterPoller | None
    notifier: Notifier
    started_at: float = field(default_factory=time.monotonic)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    breaker: BreakerMonitor | None = None  # the main breaker's heat, from meter readings
    controls: DriverControls | None = None  # the driver's ceiling (HTTP, MQTT)
    mqtt: MqttBridge | None = None  # Home Assistant, once the VIN is known
    capacity: CapacityGuard | None = None  # the capacity tariff guard (importLimitKw)
    relay_policy: RetryPolicy | None = None  # the safety relay's health
    journal: Journal | None = None  # every protective action, on disk beside tokens.json
    alerts: AlertSender | None = None
    alert_watch: AlertWatch | None = None
    api_port: int | None = None  # the port the API listens on (apiPort 0: the one the OS chose)
    # the grid operator's limit: its sources combined, and the Shelly input when configured
    grid_limit: GridLimitWatch | None = None
    grid_input: ShellyInput | None = None
    grid_input_policy: RetryPolicy | None = None

    # --- the first car: what /status shows at its top level ---------------------------------
    @property
    def service(self) -> ChargeService:
        """The first car's controller (/status `vehicle`, `controller`, `last_command`)."""
        return self.cars[0].car.service

    @property
    def vehicle(self) -> TeslaClient:
        """The first car's cloud link (the car_link dependency, the recovery probe)."""
        return self.cars[0].client

    @property
    def roads(self) -> FailoverVehicle | None:
        """The first car's command roads, when it has a BLE bridge (/status `roads`)."""
        return self.cars[0].roads

    @property
    def ble_policy(self) -> RetryPolicy | None:
        """The first car's BLE bridge (the ble_bridge dependency)."""
        return self.cars[0].ble_policy

    @property
    def escalator(self) -> Escalator | None:
        """The first car's escalation (None in push mode: a failed cut is seen on the meter)."""
        return self.service.escalation

    @property
    def queue(self) -> asyncio.Queue[Event]:
        """The one queue every source feeds; the fleet hands each car its events."""
        return self.fleet.queue

    def escalations(self) -> list[tuple[str, Escalator]]:
        """Each car's escalation with the car in words (its name or VIN, or "the car" when it
        is the only one); empty in push mode."""
        return [
            (c.service.label or "the car", c.service.escalation)
            for c in self.fleet.cars
            if c.service.escalation is not None
        ]

    def worst_escalation(self) -> str:
        """The furthest step any car's escalation is at (`none` when none is in force)."""
        levels = [e.level for _, e in self.escalations()]
        return max(levels, key=ESCALATION_LEVELS.index, default="none")

    # --- what the endpoints show -------------------------------------------------------------
    def vehicles(self) -> list[VehicleEntry]:
        """Each car's entry of /status `vehicles` (also per-car /metrics and the dashboard)."""
        return [vehicle_entry(c.car.service, c.vin, c.car.name) for c in self.cars]

    def status(self) -> DaemonStatus:
        """What the daemon knows: /status, /metrics, MQTT and the dashboard all read this."""
        s = self.loaded.settings
        last = self.service.last_command
        return DaemonStatus(
            vehicle=vehicle_view(self.service),
            controller=controller_view(self.service, self.worst_escalation()),
            last_command=command_view(last) if last is not None else None,
            vehicles=self.vehicles(),
            api_calls=api_calls_view(self.counter),
            auth=auth_view(self.tokens.status(), self.auth_state()),
            meter=(
                meter_view(self.poller, s.energy_monitor_type, s.supply_phases)
                if self.poller is not None
                else None
            ),
            daemon=DaemonInfo(
                version=__version__, uptime_secs=round(time.monotonic() - self.started_at, 1)
            ),
            breaker=breaker_view(self.breaker) if self.breaker is not None else None,
            dependencies=dependencies_view(self.dependencies()),
            roads=(
                {name: road_view(st) for name, st in self.roads.stats().items()}
                if self.roads is not None
                else None
            ),
            alerts=alerts_view(self.alerts) if self.alerts is not None else None,
            capacity=capacity_view(self.capacity) if self.capacity is not None else None,
            grid_limit=(
                self.grid_limit.status()
                if self.grid_limit is not None and self.grid_limit.in_use
                else None
            ),
        )

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
        out["car_link"] = self.vehicle.policy.health()
        if self.relay_policy is not None:
            out["safety_relay"] = self.relay_policy.health()
        if self.grid_input_policy is not None:
            out["grid_limit_input"] = self.grid_input_policy.health()
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
        out = [problem] if problem is not None else []
        # A grid limit source we cannot read holds the chargers low (fail-safe): worth a look.
        grid = self.grid_limit.warning() if self.grid_limit is not None else None
        return out if grid is None else [*out, grid]

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
        problems += [c.client.unknown_vehicle for c in self.cars if c.client.unknown_vehicle]
        problems += self._cut_blocked()
        for who, escalator in self.escalations():
            if escalator.state.active:
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
        states = tuple(c.service.state for c in self.fleet.cars)
        return unresolved_problem(states, self.fleet.last_reading, self.service.cfg)

    def _cut_blocked(self) -> list[str]:
        """A cut is needed but cannot be sent, or has not landed in time: not protected."""
        s = self.service.state
        services = [c.service for c in self.fleet.cars]
        late = [
            f"{svc.label + ': ' if svc.label else ''}a reduction has waited {secs:.0f} s and "
            f"has not landed (the car link is slow or failing): {svc.state.reason}"
            for svc in services
            if (secs := svc.cut_late_secs()) > CUT_LATE_SECS
        ]
        if not self.service.cut_needed:
            return late
        ble_ok = self.ble_policy is not None and self.ble_policy.state_now() == "ok"
        if self.vehicle.policy.state_now() != "ok" and not ble_ok:
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
    services = [c.service for c in daemon.fleet.cars]
    daemon.poller.car_activity = lambda: car_activity(services)


def install_capacity(daemon: Daemon, delay: StartDelay | None = None) -> None:
    """The capacity tariff guard on the meter poller, and the random delay of the first raise.

    The daemon's start is a boundary like a new window: with randomStartDelaySecs each car's
    first start or raise waits a random part of it (cuts never wait).
    """
    s = daemon.loaded.settings
    delay = delay or StartDelay(s.random_start_delay_secs)
    services = [c.service for c in daemon.fleet.cars]
    for svc in services:
        wait = delay.draw()
        if wait > 0:
            svc.state = replace(svc.state, raise_hold_until=svc.state.started_at + wait)
    if s.import_limit_kw is None or daemon.poller is None:
        return
    guard = CapacityGuard(CapacityConfig(s.import_limit_kw, s.import_window_mins), delay=delay)
    guard.bound = lambda: any(svc.state.capacity_bound for svc in services)
    daemon.poller.capacity = guard
    daemon.capacity = guard


def car_config(cfg: ControlConfig, s: Settings, v: VehicleSettings, *, ble: bool) -> ControlConfig:
    """One car's controller settings: its own keys in `vehicles`, else the top-level ones."""
    return replace(
        cfg,
        charger_min_amps=math.ceil(v.charger_min_amps or s.charger_min_amps),
        charger_max_amps=math.floor(v.charger_max_amps or s.charger_max_amps),
        charger_phase=v.charger_phase or s.charger_phase,
        # its own channel; the top-level one measures it only when it is the only car
        charger_measured=v.meter_charger_channel is not None
        or (cfg.charger_measured and len(s.cars) == 1),
        cloud_budget=None if ble else s.cloud_commands_per_hour,  # BLE commands are free
    )


def _looked_up(client: TeslaClient) -> Callable[[], str | None]:
    """The VIN `client` looked up for a numeric teslaVehicleId, once it has."""
    return lambda: client.vin


def build_cars(
    loaded: LoadedConfig,
    session: aiohttp.ClientSession,
    *,
    cfg: ControlConfig,
    tokens: TokenManager,
    counter: ApiCallCounter,
    poller: MeterPoller | None,
) -> tuple[DaemonCar, ...]:
    """One TeslaClient (and BLE road) and one ChargeService per car of `Settings.cars`.

    One token store for the account; the first car keeps charger-state.json, the others get
    charger-state-<VIN>.json.
    """
    s = loaded.settings
    entries = s.cars
    cars: list[DaemonCar] = []
    for i, v in enumerate(entries):
        client = client_for(loaded, session, v.vin, tokens, counter)
        ble = v.tesla_ble_proxy or s.tesla_ble_proxy
        roads, policy = build_roads(session, ble, client) if ble else (None, None)
        state_name = STATE_FILE if i == 0 else f"charger-state-{v.vin}.json"
        service = ChargeService(
            car_config(cfg, s, v, ble=bool(ble)),
            roads if roads is not None else client,  # BLE first when configured
            EventQueue(),
            kick_meter=poller.kick if poller else None,
            state_file=loaded.token_file.parent / state_name,
            charge_mode=v.mode or s.mode,
            label=car_label(v.name, v.vin, cars=len(entries)),
        )
        car = FleetCar(
            v.vin,
            v.name,
            v.priority,
            service,
            v.meter_charger_channel,
            looked_up=_looked_up(client),
        )
        cars.append(DaemonCar(car, client, roads, policy))
    return tuple(cars)


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
    cfg = controller_config(s, measured=monitor)
    cars = build_cars(loaded, session, cfg=cfg, tokens=tokens, counter=counter, poller=poller)
    relay = build_relay(session, s)
    # One safety relay for every car: off while any car's episode needs it off.
    shared = SharedRelay(relay[0]) if relay else None
    fleet = Fleet(
        queue,
        [c.car for c in cars],
        limit=cfg.limit,
        pause_when_overloaded=cfg.pause_when_overloaded,
        circuit_off=lambda: shared is not None and bool(shared.holders),
    )
    service = fleet.cars[0].service  # the first car: the top level of /status
    controls = DriverControls(
        queue,
        # each car by its configured id or its VIN (a numeric id's is looked up once)
        lambda: tuple(dict.fromkeys(n for c in cars for n in (c.client.vin, c.car.vin) if n)),
        min_amps=min(c.car.service.cfg.charger_min_amps for c in cars),
        max_amps=max(c.car.service.cfg.charger_max_amps for c in cars),
    )
    breaker = BreakerMonitor(s.home_max_amps) if monitor else None
    if breaker is not None:  # fed every reading the controller handles; it never steers
        # the real meter reading: with several cars each controller sees its own share
        service.add_listener(lambda: breaker.observe(fleet.last_reading))
    alerts = AlertSender(session, s.alert_webhook.get_secret_value()) if s.alert_webhook else None
    if monitor:  # a failed cut is seen on the meter: push mode has none
        for c in cars:  # every car escalates on its own
            svc = c.car.service
            svc.escalation = Escalator(
                escalation_config(s, svc.cfg, several=fleet.shared),  # its own chargerMinAmps
                c.road,
                roads=c.roads,
                relay=shared.for_car(c.car.label) if shared else None,
                relay_policy=relay[1] if relay else None,
                alerts=alerts,
                record=svc._record,  # its commands show in /status too
                label=svc.label,
            )
    daemon = Daemon(
        loaded=loaded,
        monitor=monitor,
        session=session,
        fleet=fleet,
        cars=cars,
        counter=counter,
        tokens=tokens,
        poller=poller,
        notifier=Notifier(),
        breaker=breaker,
        controls=controls,
        relay_policy=relay[1] if relay else None,
        alerts=alerts,
    )
    build_grid_limit(daemon, session)
    install_capacity(daemon)
    daemon.journal = build_journal(loaded, fleet)
    if alerts is not None:
        daemon.alert_watch = AlertWatch(
            alerts,
            failsafe=lambda: service.state.failsafe,
            login_required=lambda: tokens.state in ("reauth_required", "missing"),
            house_amps=lambda: real.phase_amps if (real := fleet.last_reading) is not None else (),
            limit=s.home_max_amps,
            # each car's own roads, named after it (a car alone: no name, as always)
            car_roads=tuple(
                (c.car.service.label or "", c.roads) for c in cars if c.roads is not None
            ),
        )
    return daemon


def build_grid_limit(daemon: Daemon, session: aiohttp.ClientSession) -> None:
    """The grid operator's limit: POST /grid-limit always, the input and topic when set."""
    s = daemon.loaded.settings
    sources = ["api"]
    if s.grid_limit_input is not None:
        sources.append("input")
        password = s.grid_limit_input_password
        daemon.grid_input = ShellyInput(
            s.grid_limit_input,
            session,
            input_id=s.grid_limit_input_id,
            password=password.get_secret_value() if password else None,
        )
        daemon.grid_input_policy = input_policy()
    if s.grid_limit_topic is not None:
        sources.append("mqtt")

    def send(event: Event) -> None:
        """To the controller, and to the journal: the watch sends only the limit's start and end."""
        daemon.queue.put_nowait(event)
        if isinstance(event, GridLimitChanged) and daemon.journal is not None:
            on = event.car_watts is not None
            daemon.journal.record(
                "grid_limit_on" if on else "grid_limit_off",
                event.reason or ("grid limit on" if on else "grid limit ended"),
                before=Readings.of(daemon.fleet.last_reading),
            )

    daemon.grid_limit = GridLimitWatch(
        limit_kw=s.grid_limit_total_kw, cars=len(daemon.fleet.cars), send=send, sources=sources
    )


async def run_grid_limit(daemon: Daemon) -> None:
    """Poll the grid limit's input (when configured) and age silent sources into lost ones."""
    watch = daemon.grid_limit
    assert watch is not None  # noqa: S101 (started only with one)
    if daemon.grid_input is None or daemon.grid_input_policy is None:
        await watch_pending(watch)
        return
    s = daemon.loaded.settings
    await poll_input(
        watch,
        daemon.grid_input,
        daemon.grid_input_policy,
        every=s.grid_limit_input_poll_secs,
        inverted=s.grid_limit_input_inverted,
    )


def build_journal(loaded: LoadedConfig, fleet: Fleet) -> Journal:
    """The journal beside tokens.json, filled from each car's controller."""
    journal = Journal(loaded.token_file.parent / JOURNAL_FILE)
    cars: list[tuple[str | None, ChargeService]] = [
        (c.label or c.name or c.vin, c.service) for c in fleet.cars
    ]
    # the real meter: the fleet keeps every reading as measured (each car sees its share)
    JournalWatch(journal, cars, real_reading=lambda: fleet.last_reading)
    return journal


def api_context(daemon: Daemon) -> ApiContext:
    """Bind the HTTP handlers to the daemon's parts."""
    token = daemon.loaded.settings.api_token
    return ApiContext(
        overload=daemon.fleet.overload,
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
        grid_limit=daemon.grid_limit,
    )


def start_tasks(daemon: Daemon) -> None:
    """Start the tracked background tasks: controller, meter, tokens, watchdog."""
    watch_for_frozen_meter(daemon)
    daemon.tasks["controller"] = asyncio.create_task(daemon.fleet.run(), name="controller")
    if daemon.poller is not None:
        daemon.tasks["meter"] = asyncio.create_task(daemon.poller.run(), name="meter")
    daemon.tasks["tokens"] = asyncio.create_task(daemon.tokens.run(daemon.queue), name="tokens")
    if daemon.alerts is not None:
        daemon.tasks["alerts"] = asyncio.create_task(daemon.alerts.run(), name="alerts")
    if daemon.alert_watch is not None:
        daemon.tasks["alert_watch"] = asyncio.create_task(
            daemon.alert_watch.run(), name="alert_watch"
        )
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
    if daemon.grid_limit is not None and (
        daemon.grid_input is not None or daemon.loaded.settings.grid_limit_topic is not None
    ):
        daemon.tasks["grid_limit"] = asyncio.create_task(run_grid_limit(daemon), name="grid_limit")


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
    watch = daemon.grid_limit

    def grid_signal(on: bool | None, detail: str) -> None:
        """gridLimitTopic's word (None: the broker is lost, which counts as on)."""
        if watch is not None:
            state: SourceState = "lost" if on is None else "active" if on else "inactive"
            watch.report("mqtt", SourceReading(state, detail))

    bridge = MqttBridge(cfg, daemon.status, daemon.controls, grid_signal=grid_signal)
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
            if s.grid_limit_topic is not None:
                grid_signal(None, "the MQTT bridge failed (see the log); restarting it")
        await asyncio.sleep(10.0)


async def _known_vin(daemon: Daemon) -> str:
    """The VIN for stable Home Assistant ids; looked up (once) if teslaVehicleId is numeric."""
    vehicle = daemon.vehicle
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
    fleet = daemon.fleet
    budget = SHUTDOWN_TIMEOUT
    if controller is not None and not controller.done() and fleet.in_flight:
        # A cut (or the look before it) is on its way: let it land rather than drop it.
        fleet.request_stop()
        await asyncio.wait([controller], timeout=DRAIN_SECS)
        budget = max(0.5, SHUTDOWN_TIMEOUT - DRAIN_SECS)
    for task in daemon.tasks.values():
        task.cancel()
    _, still = await asyncio.wait([*daemon.tasks.values(), stopper], timeout=budget)
    if still:
        _LOG.error("%d task(s) did not stop in time", len(still))
        code = code or 1
    fleet.persist_pending()
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
