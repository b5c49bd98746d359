"""The real daemon, in-process, with the observe routes, against a simulated World.

Built from the daemon's own parts (build_daemon, build_app, start_tasks, wait_and_stop), so the
tests see exactly what the process serves, and can also look at the Daemon object itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tesla_smart_charger.app.daemon import (
    Daemon,
    api_context,
    build_daemon,
    start_tasks,
    wait_and_stop,
)
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.httpapi.dashboard import HEARTBEAT_SECS, Dashboard
from tesla_smart_charger.httpapi.metrics import metrics_routes
from tesla_smart_charger.httpapi.openapi import openapi_routes
from tesla_smart_charger.httpapi.server import build_app
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World

TIMEOUT = aiohttp.ClientTimeout(total=5)


@dataclass
class Running:
    """A started daemon and how to reach it."""

    world: World
    daemon: Daemon
    dashboard: Dashboard
    app: web.Application
    url: str
    session: aiohttp.ClientSession  # a client session for the test's own requests
    overloads: list[str]  # every /overload the handlers passed on to the daemon (a spy)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        """GET `path`: (status, parsed JSON or text)."""
        async with self.session.get(self.url + path, timeout=TIMEOUT, **kwargs) as r:
            body: Any = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


def charging_car(amps: int = 16) -> CarModel:
    """A car that is plugged in and charging."""
    return CarModel(request_amps=amps, charging_state="Charging", ramp_delay=0.5)


@contextlib.asynccontextmanager
async def observed_daemon(
    tmp_path: Path,
    world: World,
    *,
    monitor: bool = True,
    heartbeat: float = HEARTBEAT_SECS,
    **config: Any,
) -> AsyncIterator[Running]:
    """Start `world` and a daemon on it serving every route, /metrics, / and /openapi.json too."""
    async with world:
        path = world.write_config(tmp_path, **config)
        loaded = load_config(path)
        async with aiohttp.ClientSession() as daemon_session, aiohttp.ClientSession() as client:
            daemon = await build_daemon(loaded, daemon_session, monitor=monitor)
            dashboard = Dashboard(daemon, heartbeat=heartbeat)
            daemon.extra_routes += (
                metrics_routes(daemon) + dashboard.routes() + openapi_routes(daemon)
            )
            ctx = api_context(daemon)
            overloads: list[str] = []
            queue_overload = ctx.overload

            def spy(source: str) -> bool:
                overloads.append(source)
                return queue_overload(source)

            ctx.overload = spy
            app = build_app(ctx)
            app.on_shutdown.append(dashboard.on_shutdown)
            runner = web.AppRunner(app, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)  # the OS picks a free port
            await site.start()
            port = runner.addresses[0][1]
            start_tasks(daemon)
            stop = asyncio.Event()
            try:
                url = f"http://127.0.0.1:{port}"
                yield Running(world, daemon, dashboard, app, url, client, overloads)
            finally:
                stop.set()
                await wait_and_stop(daemon, stop)
                await runner.cleanup()


async def read_events(
    response: aiohttp.ClientResponse, count: int
) -> list[tuple[str, dict[str, Any]]]:
    """Parse SSE framing until `count` events (comments and `retry:` skipped)."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    while len(events) < count:
        raw = await response.content.readline()
        if not raw:
            raise AssertionError(f"stream ended after {len(events)} events")
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                events.append((name, json.loads(data)))
            name, data = "message", ""
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").strip()
    return events
