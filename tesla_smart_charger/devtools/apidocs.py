"""Real `/status` and `/health` replies for docs/api.md, taken from a running daemon.

`python -m tesla_smart_charger.devtools.docgen --api` starts the simulated house, meter, car, proxy and
token endpoint on 127.0.0.1, runs the real daemon on them in this process and writes what its
endpoints answer into docs/api.md between `<!-- BEGIN generated: NAME -->` and
`<!-- END generated: NAME -->`. tests/integration/test_docgen.py compares the committed examples with a
fresh run, so a key added to /status shows up as a failing test until the docs are regenerated.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tesla_smart_charger.app.daemon import api_context, build_daemon, start_tasks, wait_and_stop
from tesla_smart_charger.cli.demo import story_evening
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.httpapi.server import build_app
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World

API_DOC = Path("docs/api.md")
DEADLINE_SECS = 120.0  # a deadline for failures: generous, for a busy machine
Replies = dict[str, Any]
LIMIT_AMPS = 30.0  # the simulated World's homeMaxAmps


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        return resp.status, await resp.json()


async def _with_daemon(
    world: World,
    config: dict[str, Any],
    until: Callable[[aiohttp.ClientSession, str], Awaitable[Replies | None]],
) -> Replies:
    """Run the daemon on `world` until `until` returns the replies it wanted."""
    async with world:
        with tempfile.TemporaryDirectory(prefix="tsc-apidocs-") as tmp:
            loaded = load_config(world.write_config(Path(tmp), **config))
            async with aiohttp.ClientSession() as daemon_session, aiohttp.ClientSession() as client:
                daemon = await build_daemon(loaded, daemon_session, monitor=True)
                runner = web.AppRunner(build_app(api_context(daemon)), shutdown_timeout=1.0)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", 0).start()  # any free port: no race
                port = runner.addresses[0][1]
                start_tasks(daemon)
                stop = asyncio.Event()
                try:
                    deadline = time.monotonic() + DEADLINE_SECS
                    while time.monotonic() < deadline:
                        replies = await until(client, f"http://127.0.0.1:{port}")
                        if replies is not None:
                            return replies
                        await asyncio.sleep(0.2)
                    raise TimeoutError(
                        f"the daemon did not reach the documented state in {DEADLINE_SECS} s"
                    )
                finally:
                    stop.set()
                    await wait_and_stop(daemon, stop)
                    await runner.cleanup()


async def capture() -> Replies:
    """`status` and `health` after the demo's kettle cut; `unhealthy` with a wrong meter password."""

    async def after_the_cut(client: aiohttp.ClientSession, url: str) -> Replies | None:
        _, status = await _get(client, url + "/status")
        last = status.get("last_command")
        if last is None or last.get("result") != "ok" or status["controller"]["command_in_flight"]:
            return None  # wait for the cut to land
        # The car has followed it when the meter shows the supply back within its limit (the
        # car's own figure, amps_actual, changes only when the car is next looked at).
        amps = (status.get("meter") or {}).get("amps") or []
        if not amps or max(amps) > LIMIT_AMPS:
            return None
        code, health = await _get(client, url + "/health")
        return {"status": status, "health": health} if code == 200 else None

    car = CarModel(request_amps=16, charging_state="Charging", ramp_delay=1.0, capacity_kwh=None)
    world = World(house=story_evening(), car=car, time_scale=5.0)
    cut = _with_daemon(
        world,
        {"energyMonitorPollSecs": 0.5, "supplyPhases": "auto"},
        after_the_cut,
    )

    async def unhealthy(client: aiohttp.ClientSession, url: str) -> Replies | None:
        code, health = await _get(client, url + "/health")
        return (
            {"unhealthy": health} if code == 503 and len(health.get("problems", [])) > 1 else None
        )

    locked = World(meter_password="the-right-password", car=CarModel(capacity_kwh=None))  # noqa: S106 (simulated meter)
    failing = _with_daemon(
        locked,
        {
            "energyMonitorPassword": "a-wrong-password",
            "energyMonitorStaleSecs": 2,
            "energyMonitorPollSecs": 0.5,
        },
        unhealthy,
    )
    first, second = await asyncio.gather(cut, failing)  # two daemons, two ports: in parallel
    return first | second


def _block(name: str, text: str) -> str:
    return f"<!-- BEGIN generated: {name} -->\n```json\n{text}\n```\n<!-- END generated: {name} -->"


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"<!-- BEGIN generated: {name} -->\n```json\n(.*?)\n```\n<!-- END generated: {name} -->",
        re.S,
    )


def examples(text: str) -> Replies:
    """The generated examples in docs/api.md, parsed."""
    out: Replies = {}
    for name in ("status", "health", "unhealthy"):
        match = _pattern(name).search(text)
        if match is None:
            raise ValueError(f"{API_DOC}: no generated block {name!r}")
        out[name] = json.loads(match.group(1))
    return out


def render(text: str, replies: Replies) -> str:
    """`text` with every generated block replaced by the replies."""
    for name, reply in replies.items():
        block = _block(name, json.dumps(reply, indent=2))
        text, count = _pattern(name).subn(lambda _m, b=block: b, text)  # type: ignore[misc]
        if count != 1:
            raise ValueError(f"{API_DOC}: expected one generated block {name!r}, found {count}")
    return text


def shape(value: Any, path: str = "") -> set[str]:
    """Every key path in a JSON value (lists by their first element): what must not drift."""
    if isinstance(value, dict):
        paths = {path} if path else set()
        for key, item in value.items():
            paths |= shape(item, f"{path}.{key}" if path else key)
        return paths
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return shape(value[0], path + "[]")
    return {path} if path else set()


def write(path: Path = API_DOC) -> Replies:
    """Regenerate the examples in `path` from a real run; returns the replies."""
    replies = asyncio.run(capture())
    path.write_text(render(path.read_text(encoding="utf-8"), replies), encoding="utf-8")
    return replies
