"""Process lifecycle: one event loop, one ClientSession, tracked tasks, clean SIGTERM.

Start-up builds every part, passes the shared session in, starts the HTTP server and the
background tasks (charge controller, meter poller, token refresh, watchdog). A task that dies
ends the process with exit code 1 so systemd or the container restarts it; SIGTERM/SIGINT
cancel and await everything and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tesla_smart_charger import __version__
from tesla_smart_charger.breaker import BreakerMonitor
from tesla_smart_charger.config import LoadedConfig, redacted
from tesla_smart_charger.const import SHUTDOWN_TIMEOUT
from tesla_smart_charger.controller import ControlConfig
from tesla_smart_charger.dashboard import dashboard_routes
from tesla_smart_charger.errors import ConfigError
from tesla_smart_charger.events import CarLinkBack, Event, EventQueue
from tesla_smart_charger.logging_setup import register_secret
from tesla_smart_charger.meters import create_meter
from tesla_smart_charger.metrics import metrics_routes
from tesla_smart_charger.openapi import openapi_routes
from tesla_smart_charger.retry import Health
from tesla_smart_charger.sdnotify import Notifier, watchdog_loop
from tesla_smart_charger.server import (
    ApiContext,
    build_app,
    connection_cap,
    listen,
    make_runner,
    raise_fd_limit,
)
from tesla_smart_charger.service import ChargeService, MeterPoller
from tesla_smart_charger.tesla import ApiCallCounter, TeslaClient, ssl_context_for
from tesla_smart_charger.tokens import TokenManager, TokenStore

_LOG = logging.getLogger(__name__)

QUEUE_SIZE = 1024  # kept for callers; the EventQueue coalesces and never fills
# On SIGTERM, a cut in flight gets this long to land before it is persisted instead
# (inside the 5 s exit budget, leaving time to cancel tasks and close the server).
DRAIN_SECS = 2.5
# Our setpoint and the driver's own setting, kept beside the token store across restarts.
STATE_FILE = "charger-state.json"


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

    # --- what the endpoints show -------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The /status document."""
        out = self.service.status()
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
        if self.vehicle is not None:
            out["car_link"] = self.vehicle.policy.health()
        token = self.tokens.policy.health()
        if self.tokens.state in ("reauth_required", "missing"):
            token = Health(
                "down", token.since, f"Tesla login required ({self.tokens.state})", token.failures
            )
        out["token_endpoint"] = token
        dead = [name for name, task in self.tasks.items() if task.done()]
        out["tasks"] = Health(
            "down" if dead else "ok",
            None,
            f"stopped: {', '.join(dead)}" if dead else None,
            len(dead),
        )
        return out

    def health(self) -> list[str]:
        """Reasons the daemon is not fully working; empty when healthy."""
        problems = [
            f"{name} task is not running" for name, task in self.tasks.items() if task.done()
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
        problems += self._cut_blocked()
        hot = self.breaker.problem() if self.breaker is not None else None
        if hot is not None:
            problems.append(hot)
        return problems

    def _cut_blocked(self) -> list[str]:
        """A cut is needed but cannot be sent: the breaker is not protected."""
        s = self.service.state
        if not self.service.cut_needed:
            return []
        if self.vehicle is not None and self.vehicle.policy.state_now() != "ok":
            cause = self.vehicle.policy.last_error or "failing"
            return [f"a reduction is needed but the car link is down: {cause}"]
        if self.tokens.policy.failing or not s.auth_ok:
            cause = self.tokens.policy.last_error or s.reason
            return [f"a reduction is needed but Tesla authorization is failing: {cause}"]
        return []

    def tasks_alive(self) -> bool:
        """True while every background task runs (what the systemd watchdog checks)."""
        return all(not t.done() for t in self.tasks.values())

    def one_line(self) -> str:
        """A short status for sd_notify STATUS= and the demo's terminal view."""
        s = self.service.state
        return f"{self.service.cfg.mode}: setpoint {s.setpoint if s.setpoint is not None else '-'} A; {s.reason}"


def _register_secrets(loaded: LoadedConfig) -> None:
    """Defence in depth: the log handler masks these values wherever they appear."""
    s = loaded.settings
    for secret in (
        s.tesla_access_token,
        s.tesla_refresh_token,
        s.tesla_client_secret,
        s.api_token,
        s.energy_monitor_password,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())


async def build_daemon(
    loaded: LoadedConfig, session: aiohttp.ClientSession, *, monitor: bool
) -> Daemon:
    """Wire every part onto the shared session (no tasks started yet)."""
    s = loaded.settings
    if monitor and s.energy_monitor_ip is None:
        raise ConfigError(
            [
                f"{loaded.path}: energyMonitorIp: required with --monitor (the meter's host, host:port or http:// URL)"
            ]
        )
    store = TokenStore(loaded.token_file)
    store.seed_from_config(s)
    tokens = TokenManager(store, session, token_url=s.tesla_token_url, client_id=s.tesla_client_id)
    counter = ApiCallCounter()
    vehicle = TeslaClient(
        session,
        s.tesla_http_proxy,
        s.tesla_vehicle_id,
        tokens,
        counter,
        ssl_context=ssl_context_for(s.tesla_http_proxy, loaded.proxy_ca_file),
    )
    queue: asyncio.Queue[Event] = EventQueue()
    poller = (
        MeterPoller(create_meter(s, session), queue, s.energy_monitor_poll_secs)
        if monitor
        else None
    )
    cfg = ControlConfig.from_settings(s, measured=monitor)
    service = ChargeService(
        cfg,
        vehicle,
        queue,
        kick_meter=poller.kick if poller else None,
        state_file=loaded.token_file.parent / STATE_FILE,
    )
    breaker = BreakerMonitor(s.home_max_amps) if monitor else None
    if breaker is not None:  # fed every reading the controller handles; it never steers
        service.add_listener(lambda: breaker.observe(service.state.reading))
    return Daemon(
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
    )


def api_context(daemon: Daemon) -> ApiContext:
    """Bind the HTTP handlers to the daemon's parts."""
    token = daemon.loaded.settings.api_token
    return ApiContext(
        overload=daemon.service.overload,
        status=daemon.status,
        config=lambda: redacted(daemon.loaded.settings),
        health=daemon.health,
        api_token=token.get_secret_value() if token else None,
        extra_routes=daemon.extra_routes,
    )


def start_tasks(daemon: Daemon) -> None:
    """Start the tracked background tasks: controller, meter, tokens, watchdog."""
    daemon.tasks["controller"] = asyncio.create_task(daemon.service.run(), name="controller")
    if daemon.poller is not None:
        daemon.tasks["meter"] = asyncio.create_task(daemon.poller.run(), name="meter")
    daemon.tasks["tokens"] = asyncio.create_task(
        daemon.tokens.run(daemon.service.queue), name="tokens"
    )
    if daemon.vehicle is not None:
        # After a long proxy outage the cut goes within seconds of recovery, not a minute.
        queue = daemon.service.queue
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


async def wait_and_stop(daemon: Daemon, stop: asyncio.Event) -> int:
    """Wait for a stop signal or a dead task, then cancel and await every task."""
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait(
        {stopper, *daemon.tasks.values()}, return_when=asyncio.FIRST_COMPLETED
    )
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
    return code


async def run_daemon(
    loaded: LoadedConfig,
    *,
    monitor: bool,
    started: Callable[[Daemon], Awaitable[None]] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until a background task dies (exit 1)."""
    _register_secrets(loaded)
    s = loaded.settings
    fd_soft, _ = raise_fd_limit()
    try:
        # A kill between writing and renaming may have left the only copy of rotated tokens.
        TokenStore(loaded.token_file).recover_leftovers()
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
        daemon = await build_daemon(loaded, session, monitor=monitor)
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
        mode = (
            f"measured mode, meter {daemon.poller.meter.name}"
            if daemon.poller
            else "push mode (/overload)"
        )
        _LOG.info(
            "tesla-smart-charger %s listening on http://%s:%s, %s",
            __version__,
            s.api_host,
            s.api_port,
            mode,
        )

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
