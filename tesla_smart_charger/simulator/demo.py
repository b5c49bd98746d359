"""`tesla-smart-charger demo` (and `make demo`): the real daemon on a simulated evening.

Starts a simulated Shelly EM, car, tesla-http-proxy and token endpoint on 127.0.0.1, writes a
config pointing at them into a temporary folder, runs the real daemon in measured mode and
prints a one-line live view. The house would trip a 30 A main without us within a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from tesla_smart_charger.config import load_config
from tesla_smart_charger.daemon import Daemon, run_daemon
from tesla_smart_charger.logging_setup import configure_logging
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.house import demo_evening
from tesla_smart_charger.simulator.world import World

DEFAULT_PORT = 8000
HOME_MAX_AMPS = 30.0
DRIVER_AMPS = 16


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(wanted: int) -> int:
    """`wanted` if free, else any free port on 127.0.0.1."""
    if _port_free("127.0.0.1", wanted):
        return wanted
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def live_line(world: World, daemon: Daemon, started: float) -> str:
    """House, car, supply against the limit, and the last action, in one line."""
    now = time.monotonic()
    house = world.house_amps()[0]
    car = world.car.current_draw(now)
    supply = house + car
    unthrottled = house + DRIVER_AMPS  # what an uncontrolled car at the driver's setting would add
    last = daemon.service.last_command
    action = f"{last.command} {last.amps} A ({last.reason})" if last else "none yet"
    flag = "OVER" if supply > HOME_MAX_AMPS else "ok  "
    active = ",".join(world.house.active(world.house_time)) if world.house else ""
    return (
        f"{now - started:5.0f}s  house {house:5.1f} A  car {car:4.1f} A  "
        f"supply {supply:5.1f}/{HOME_MAX_AMPS:.0f} A {flag} (without us {unthrottled:5.1f} A)  "
        f"last: {action}  [{active}]"
    )


async def _live_view(world: World, daemon: Daemon, out: TextIO, period: float = 1.0) -> None:
    """Redraw one line on a terminal; print a line per second when piped (logs, CI)."""
    started = time.monotonic()
    tty = out.isatty()
    while True:
        line = live_line(world, daemon, started)
        if tty:
            print(f"\r\x1b[K{line}", end="", file=out, flush=True)
        else:
            print(line, file=out, flush=True)
        await asyncio.sleep(period)


async def run_demo(port: int, out: TextIO = sys.stdout, duration: float | None = None) -> int:
    """Run the simulated world and the real daemon until Ctrl-C (or `duration` seconds)."""
    car = CarModel(
        request_amps=DRIVER_AMPS, charging_state="Charging", ramp_delay=3.0, capacity_kwh=None
    )
    async with World(house=demo_evening(), car=car) as world:
        with tempfile.TemporaryDirectory(prefix="tsc-demo-") as tmp:
            path = world.write_config(
                Path(tmp), apiPort=port, homeMaxAmps=HOME_MAX_AMPS, sleepTimeSecs=15
            )
            loaded = load_config(path)
            url = f"http://127.0.0.1:{port}"

            async def started(daemon: Daemon) -> None:
                print(
                    f"\nDemo running: a simulated house, Shelly EM and Tesla on 127.0.0.1 ({tmp})",
                    file=out,
                )
                print(f"  dashboard: {url}/", file=out)
                print(
                    f"  status:    {url}/status   health: {url}/health   metrics: {url}/metrics",
                    file=out,
                )
                print(
                    "  The evening's appliances push the house past its 30 A main within a minute;",
                    file=out,
                )
                print(
                    "  watch the car's current go down at once and come back when there is room.",
                    file=out,
                )
                print("  Ctrl-C stops everything.\n", file=out, flush=True)
                daemon.tasks["demo-view"] = asyncio.create_task(
                    _live_view(world, daemon, out), name="demo-view"
                )
                if duration is not None:
                    # Stop exactly as Ctrl-C would, through the daemon's own signal handling.
                    asyncio.get_running_loop().call_later(
                        duration, os.kill, os.getpid(), signal.SIGINT
                    )

            code = await run_daemon(loaded, monitor=True, started=started)
    print("demo stopped", file=out)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    """Entry point of `tesla-smart-charger demo`."""
    configure_logging(
        getattr(args, "log_level", "INFO") or "INFO",
        getattr(args, "log_format", "plain") or "plain",
    )
    port = pick_port(args.port)
    if port != args.port:
        print(f"port {args.port} is busy: using {port}", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(port, duration=args.duration))
    return 0


DEMO_HELP = """\
Run the real daemon against a simulated house, Shelly EM, tesla-http-proxy, Tesla
and token endpoint, all on 127.0.0.1: no car, account or configuration needed.
Open the dashboard URL it prints. Writes only a temporary folder (removed on exit)."""


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `demo` on the CLI (only the options it uses: no --config)."""
    demo = sub.add_parser(
        "demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run the daemon on a built-in simulated house and car",
        description=DEMO_HELP,
    )
    demo.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"HTTP port (default {DEFAULT_PORT}; another free one if busy)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level (default: INFO)",
    )
    demo.set_defaults(func=cmd_demo)
