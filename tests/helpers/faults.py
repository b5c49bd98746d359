"""Run many real daemons at once, each against its own failing dependency, for one window.

Every fault scenario needs 60 s of the real daemon; run one after the other that would take
many minutes. `run_window` starts all of them concurrently in one event loop, lets the window
pass, samples what each daemon did (requests to the failing server, log lines, RSS, exit) and
stops everything. The tests then assert per scenario on the collected `Outcome`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tesla_smart_charger.simulator.world import World
from tests.helpers import e2e
from tests.helpers.e2e import DaemonProcess

WINDOW_SECS = 60.0


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Outcome:
    """What one scenario's daemon did during the window."""

    name: str
    requests: int | None = None  # requests that reached (or tried) the failing dependency
    log_lines: int = 0  # daemon log lines after the fault started
    log: str = ""
    rss_growth_kib: int = 0
    alive: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a scenario's own assertion or crash, with its traceback


@dataclass
class Running:
    """A started scenario, sampled at the end of the window."""

    world: World
    daemon: DaemonProcess
    count: Callable[[], Awaitable[int | None]]
    started: float = 0.0
    log_mark: int = 0
    rss_start: int = 0


async def get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    """GET and parse JSON (status, body)."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r,
    ):
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def poll(
    predicate: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.1
) -> float:
    """Await `predicate()` until true; the seconds it took. AssertionError at the deadline."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - started


async def start_fault(
    stack: contextlib.AsyncExitStack,
    directory: Path,
    world: World,
    *args: str,
    **config: Any,
) -> tuple[World, DaemonProcess]:
    """Start a world and a daemon on it, kept running until `stack` closes."""
    directory.mkdir(parents=True, exist_ok=True)
    await stack.enter_async_context(world)
    path = world.write_config(directory, **config)
    daemon = await stack.enter_async_context(run_daemon(directory, path, *args))
    return world, daemon


async def window_end(run: Running) -> tuple[int | None, str]:
    """The requests and the log at the window's end, before anything else asks the daemon.

    Taken first: on a busy machine the /status, /metrics … reads after it take seconds, and a
    backoff's next attempt (at 63 s for 5xx) would be counted in a 60 s window.
    """
    return await run.count(), run.daemon.log()


async def sample(
    name: str, run: Running, notes: dict[str, Any], end: tuple[int | None, str]
) -> Outcome:
    """The window is over: collect what the daemon did (`end` from `window_end`)."""
    out = Outcome(name, notes=notes)
    out.alive = run.daemon.proc.returncode is None
    out.requests, out.log = end
    out.log_lines = len(out.log[run.log_mark :].splitlines())
    if out.alive:
        out.rss_growth_kib = rss_kib(run.daemon.proc.pid) - run.rss_start
    return out


async def guarded(name: str, body: Awaitable[Outcome]) -> Outcome:
    """A scenario that fails reports its traceback instead of ending the whole window."""
    try:
        return await body
    except Exception:
        return Outcome(name, error=traceback.format_exc())


def run_daemon(
    directory: Path, config_path: Path, *args: str
) -> contextlib.AbstractAsyncContextManager[DaemonProcess]:
    """`tests.helpers.e2e.run_daemon` with a start-up allowance for many concurrent daemons."""
    return e2e.run_daemon(directory, config_path, *args, log_mode="ab")
