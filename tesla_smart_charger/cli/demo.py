"""`tesla-smart-charger demo` (and `make demo`): the real daemon on a simulated evening.

Starts a simulated Shelly EM, car (behind a simulated Fleet API) and token endpoint on
127.0.0.1, writes a config pointing at them into a temporary folder, runs the real daemon in
measured mode and prints a live view. The daemon signs its commands itself with a key the
simulated car has paired, as a real setup without tesla-http-proxy does. The whole story (a cut, the raise, a second overload) is told within 90 s,
so a new user sees it before losing interest; it then repeats every two minutes.

`--scenario two-cars` puts two cars behind the one Fleet API (the same evening, both asking for
16 A); `--scenario solar` a 6 kWp roof on a cloudy afternoon and a car waiting for surplus. The
config gets `vehicles` / `mode` only when this build's settings know those keys;
until then the banner says what the daemon will not do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tesla_smart_charger.app.daemon import Daemon, run_daemon
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.logging_setup import configure_logging
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.house import (
    BASE_LOAD,
    FRIDGE,
    KETTLE,
    Appliance,
    ApplianceRun,
    House,
)
from tesla_smart_charger.simulator.pv import PvArray, solar_day
from tesla_smart_charger.simulator.world import World, settings_keys

DEFAULT_PORT = 8000
HOME_MAX_AMPS = 30.0
DRIVER_AMPS = 16
SLEEP_SECS = 10  # room must last this long before a raise: short, so the story fits 90 s

# The story, in seconds from start (the banner tells the user when to look).
KETTLE_ON, KETTLE_OFF = 10.0, 35.0
OVEN_ON, OVEN_OFF = 60.0, 85.0
STORY_PERIOD = 120.0


def story_evening() -> House:
    """Heat pump and base load (~9.6 A) all along; a kettle at 10 s, the oven at 60 s.

    With the car at 16 A, either appliance pushes the 30 A main over, and the gap between them
    is long enough for the raise after `SLEEP_SECS`. Repeats every `STORY_PERIOD` seconds.
    """
    runs = [
        ApplianceRun(BASE_LOAD, 0.0, STORY_PERIOD, amps=1.6),
        ApplianceRun(Appliance("heat pump", 8.0), 0.0, STORY_PERIOD),
        ApplianceRun(KETTLE, KETTLE_ON, KETTLE_OFF - KETTLE_ON, amps=12.0),
        ApplianceRun(Appliance("oven", 13.0), OVEN_ON, OVEN_OFF - OVEN_ON),
    ]
    return House(1, runs, name="demo evening", period=STORY_PERIOD)


BANNER_STORY = (
    f"  ~{KETTLE_ON:.0f} s  a kettle pushes the house past its {HOME_MAX_AMPS:.0f} A main:"
    " the car is cut at once",
    f"  ~{KETTLE_OFF:.0f} s  the kettle is done; {SLEEP_SECS} s later the car goes back up",
    f"  ~{OVEN_ON:.0f} s  the oven starts: a second overload, a second cut",
    f"  then it all repeats every {STORY_PERIOD / 60:.0f} minutes",
)


SCENARIOS = ("evening", "two-cars", "solar")
SECOND_VIN = "5YJ3E1EA7KF000002"
SOLAR_SEED = 4  # a cloudy afternoon whose clouds make a good story
SOLAR_LEAD = 40.0  # seconds of full sun before the first thick cloud


@dataclass
class Scenario:
    """What one `--scenario` runs: the house, the cars, the roof, the story and the config."""

    name: str
    house: House
    cars: list[CarModel]
    banner: tuple[str, ...]
    pv: PvArray | None = None
    pv_offset: float = 0.0
    config: dict[str, Any] | None = None  # extra config.json keys (only ones the build knows)


def _demo_car(vin: str = "5YJ3E1EA7KF000001", **kwargs: Any) -> CarModel:
    base: dict[str, Any] = {
        "request_amps": DRIVER_AMPS,
        "charging_state": "Charging",
        "ramp_delay": 3.0,
        "capacity_kwh": None,
    }
    base.update(kwargs)
    return CarModel(vin=vin, **base)


def solar_house(period: float = 3600.0) -> House:
    """An afternoon at home: base load and the fridge (about 2 A): the roof exports the rest."""
    runs = [
        ApplianceRun(BASE_LOAD, 0.0, period, amps=1.2),
        ApplianceRun(FRIDGE, 0.0, period, seed=1),
    ]
    return House(1, runs, name="demo afternoon", period=period)


def solar_start(pv: PvArray) -> float:
    """The PV-day second to start at: full sun, the first thick cloud `SOLAR_LEAD` s later."""
    for cloud in pv.clouds:
        lead = [pv.fraction(cloud.start - s) for s in range(1, int(SOLAR_LEAD) + 20)]
        if cloud.start > 11 * 3600 and cloud.opacity >= 0.6 and min(lead) > 0.7:
            return cloud.start - SOLAR_LEAD
    raise ValueError("this PV day has no thick cloud after a sunny spell")


def build_scenario(name: str, keys: frozenset[str] | None = None) -> Scenario:
    """The named scenario; `keys` are the config keys the settings model knows."""
    keys = settings_keys() if keys is None else keys
    banner: tuple[str, ...]
    if name == "evening":
        return Scenario(name, story_evening(), [_demo_car()], BANNER_STORY)
    if name == "two-cars":
        cars = [_demo_car(), _demo_car(SECOND_VIN, numeric_id=100022, display_name="Second car")]
        banner = (
            f"  two cars ask for {DRIVER_AMPS} A each on top of a ~10 A house: the total is"
            f" cut below {HOME_MAX_AMPS:.0f} A at once",
            "  the first car has priority 1, the second 0: when there is no room for both,",
            "  the second is the one cut (the kettle at ~10 s, the oven at ~60 s), and paused",
            "  after 5 s when even both minimums do not fit (pauseWhenOverloaded, on by default)",
        )
        config: dict[str, Any] = {}
        if "vehicles" not in keys:
            banner += (
                "  NOTE: this build has no `vehicles` key yet: only the first car is controlled,",
                "  the second charges uncontrolled (watch the OVER flag)",
            )
        return Scenario(name, story_evening(), cars, banner, config=config)
    if name == "solar":
        pv = solar_day("cloudy", seed=SOLAR_SEED)
        car = _demo_car(charging_state="Stopped", sleep_after=1e9)
        banner = (
            "  a 6 kWp roof exports ~15 A; the car (plugged in, not charging) starts on the",
            "  surplus after 10 s of it (solarStartSecs) and follows it",
            f"  ~{SOLAR_LEAD:.0f} s  a thick cloud passes: the car slows down, then stops if the"
            " surplus stays gone",
        )
        if "vehicles" not in keys and "mode" not in keys:
            banner += (
                "  NOTE: this build has no solar mode yet: the car is left alone (it does not",
                "  start on surplus); the live line still shows the export",
            )
        return Scenario(
            name, solar_house(), [car], banner, pv=pv, pv_offset=solar_start(pv), config={}
        )
    raise ValueError(f"unknown scenario {name!r} (use one of {', '.join(SCENARIOS)})")


def scenario_config(scenario: Scenario, world: World, keys: frozenset[str]) -> dict[str, Any]:
    """The `vehicles` / `mode` keys for this scenario, only those the settings model knows."""
    extra: dict[str, Any] = dict(scenario.config or {})
    if scenario.name == "two-cars" and "vehicles" in keys:
        extra["vehicles"] = world.vehicles(priorities=[1, 0])
        # The story's second act: when even both minimums do not fit, the second car pauses
        # (pauseWhenOverloaded is on by default); sooner than the shipped 120 s, for the story.
        extra.update(pauseAfterSecs=5)
    if scenario.name == "solar":
        if "vehicles" in keys:
            extra["vehicles"] = world.vehicles(modes=["solar"])
        elif "mode" in keys:
            extra["mode"] = "solar"
        if "solarStartSecs" in keys:
            # A short story: start after 10 s of surplus, stop after 30 s without it.
            extra.update(solarStartSecs=10, solarStopSecs=30)
    return extra


def _port_free(host: str, port: int) -> bool:
    """Free as the daemon binds it (SO_REUSEADDR): the connections of the last run, still in
    TIME_WAIT, do not make the port busy, so a dashboard tab left open finds the demo again."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(wanted: int) -> int:
    """`wanted` if free, else any free port on 127.0.0.1 (0 stays 0: the daemon picks one)."""
    if wanted == 0 or _port_free("127.0.0.1", wanted):
        return wanted
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_SHORT_COMMAND = {"set_charging_amps": "set", "charge_start": "start", "charge_stop": "stop"}


def live_parts(world: World, daemon: Daemon, started: float) -> list[str]:
    """The live view's pieces, most important first: supply against the limit, last action."""
    now = time.monotonic()
    house = world.house_amps()[0]
    car = world.car.current_draw(now)
    supply = house + car
    unthrottled = house + DRIVER_AMPS  # what an uncontrolled car at the driver's setting would add
    last = daemon.service.last_command
    if last is None:
        action = "last: none yet"
    else:
        amps = f" {last.amps} A" if last.amps is not None else ""
        ago = max(0.0, time.time() - last.at)
        action = f"last: {_SHORT_COMMAND.get(last.command, last.command)}{amps} {ago:.0f}s ago"
    flag = "OVER" if supply > HOME_MAX_AMPS else "ok"
    active = ", ".join(world.house.active(world.house_time)) if world.house else ""
    return [
        f"{now - started:3.0f}s house {house:4.1f} + car {car:4.1f}"
        f" = {supply:4.1f}/{HOME_MAX_AMPS:.0f} A {flag}",
        action,
        f"without us {unthrottled:4.1f} A",
        active,
    ]


def scenario_parts(world: World, daemon: Daemon, started: float) -> list[str]:
    """The live view for several cars and PV: each car's draw, PV, and the signed supply."""
    now = time.monotonic()
    house = world.house_amps()[0]
    cars = [car.current_draw(now) for car in world.cars]
    pv = world.pv_amps()[0]
    supply = world.supply_amps()[0]
    flag = "OVER" if supply > HOME_MAX_AMPS else ("export" if supply < 0 else "ok")
    head = f"{now - started:3.0f}s house {house:4.1f} + car{'s' if len(cars) > 1 else ''} "
    head += "+".join(f"{c:4.1f}" for c in cars)
    if world.pv is not None:
        head += f" - pv {pv:4.1f}"
    head += f" = {supply:5.1f}/{HOME_MAX_AMPS:.0f} A {flag}"
    last = daemon.service.last_command
    action = "last: none yet"
    if last is not None:
        amps = f" {last.amps} A" if last.amps is not None else ""
        ago = max(0.0, time.time() - last.at)
        action = f"last: {_SHORT_COMMAND.get(last.command, last.command)}{amps} {ago:.0f}s ago"
    active = ", ".join(world.house.active(world.house_time)) if world.house else ""
    return [head, action, active]


def fit(parts: list[str], width: int) -> str:
    """The first part (cut if need be), then each later part that still fits in `width`."""
    if not parts:
        return ""
    first = parts[0]
    line = first if len(first) <= width else first[: max(0, width - 1)] + "…"
    for part in parts[1:]:
        candidate = f"{line} | {part}"
        if part and len(candidate) <= width:
            line = candidate
    return line


class LiveView:
    """A status line redrawn in place on a terminal, plain lines when piped.

    On a terminal the line is cleared before anything else is printed (log records, the
    banner), so a log line never starts at the end of the status line, and it is cut to the
    terminal's width minus one column, so it never wraps.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.drawn = False

    def width(self) -> int:
        """Columns available (re-read each time: the user may resize the terminal)."""
        return max(20, shutil.get_terminal_size((80, 24)).columns - 1)

    def show(self, world: World, daemon: Daemon, started: float) -> None:
        """Redraw the status line (terminal) or print one more line (pipe)."""
        simple = len(world.cars) == 1 and world.pv is None
        parts = (live_parts if simple else scenario_parts)(world, daemon, started)
        self.draw(parts)

    def draw(self, parts: list[str]) -> None:
        """Redraw in place, cut to the width (terminal), or print a whole line (pipe)."""
        if self.tty:
            line = fit(parts, self.width())
            print(f"\r\x1b[K{line}", end="", file=self.out, flush=True)
            self.drawn = True
        else:
            print(" | ".join(p for p in parts if p), file=self.out, flush=True)

    def end_line(self) -> None:
        """Clear the status line so the next output starts on an empty line."""
        if self.drawn:
            print("\r\x1b[K", end="", file=self.out, flush=True)
            self.drawn = False


class _EndLiveLine(logging.Filter):
    """Clears the live view before a log record is written (the filter runs before emit)."""

    def __init__(self, view: LiveView) -> None:
        super().__init__()
        self.view = view

    def filter(self, record: logging.LogRecord) -> bool:
        self.view.end_line()
        return True


class _FitFormatter(logging.Formatter):
    """Short log lines for the demo's terminal: time and message, wrapped to its width.

    Our own line breaks (indented continuation) instead of the terminal's hard wrap keep an
    80-column terminal readable.
    """

    def __init__(self, view: LiveView) -> None:
        super().__init__("%(asctime)s %(message)s", "%H:%M:%S")
        self.view = view

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        width = self.view.width()
        lines: list[str] = []
        for raw in text.splitlines() or [""]:
            lines.extend(
                textwrap.wrap(raw, width, subsequent_indent=" " * 9, break_on_hyphens=False) or [""]
            )
        return "\n".join(lines)


@contextlib.contextmanager
def logs_end_the_live_line(view: LiveView) -> Iterator[None]:
    """While the demo runs, every root handler clears the live line before it writes.

    On a terminal the handlers also write short lines that fit its width.
    """
    handlers = list(logging.getLogger().handlers)
    guard = _EndLiveLine(view)
    formatters = [h.formatter for h in handlers]
    for handler in handlers:
        handler.addFilter(guard)
        if view.tty:
            handler.setFormatter(_FitFormatter(view))
    try:
        yield
    finally:
        for handler, formatter in zip(handlers, formatters, strict=True):
            handler.removeFilter(guard)
            handler.setFormatter(formatter)
        view.end_line()


async def _live_view(
    world: World, daemon: Daemon, view: LiveView, started: float, period: float = 1.0
) -> None:
    """Redraw every `period` seconds; a log record in between clears the line at once."""
    while True:
        view.show(world, daemon, started)
        await asyncio.sleep(period)


async def run_demo(
    port: int,
    out: TextIO = sys.stdout,
    duration: float | None = None,
    scenario: str = "evening",
) -> int:
    """Run the simulated world and the real daemon until Ctrl-C (or `duration` seconds)."""
    chosen = build_scenario(scenario)
    view = LiveView(out)
    with logs_end_the_live_line(view):
        code = await _run_world(port, out, duration, chosen, view)
    print("demo stopped", file=out)
    return code


async def _run_world(
    port: int, out: TextIO, duration: float | None, scenario: Scenario, view: LiveView
) -> int:
    world_ = World(
        house=scenario.house, cars=scenario.cars, pv=scenario.pv, pv_offset=scenario.pv_offset
    )
    async with world_ as world:
        started_at = time.monotonic()  # the house's clock starts with the world
        with tempfile.TemporaryDirectory(prefix="tsc-demo-") as tmp:
            extra = scenario_config(scenario, world, settings_keys())
            path = world.write_config(
                Path(tmp),
                apiPort=port,
                homeMaxAmps=HOME_MAX_AMPS,
                sleepTimeSecs=SLEEP_SECS,
                **extra,
            )
            loaded = load_config(path)

            async def started(daemon: Daemon) -> None:
                url = f"http://127.0.0.1:{daemon.api_port or port}"  # --port 0: the OS's pick
                view.end_line()
                lines = [
                    "",
                    f"Demo ({scenario.name}): a simulated house, Shelly EM and Tesla on 127.0.0.1",
                    "  car commands: signed by the charger, verified by the simulated car",
                    f"  dashboard: {url}/",
                    f"  status:    {url}/status",
                    f"  metrics:   {url}/metrics",
                    "What happens when (seconds on the left of the live line):",
                    *scenario.banner,
                    "Ctrl-C stops everything.",
                    "",
                ]
                print("\n".join(lines), file=out, flush=True)
                daemon.tasks["demo-view"] = asyncio.create_task(
                    _live_view(world, daemon, view, started_at), name="demo-view"
                )
                if duration is not None:
                    # Stop exactly as Ctrl-C would, through the daemon's own signal handling.
                    asyncio.get_running_loop().call_later(
                        duration, os.kill, os.getpid(), signal.SIGINT
                    )

            return await run_daemon(loaded, monitor=True, started=started)


def cmd_demo(args: argparse.Namespace) -> int:
    """Entry point of `tesla-smart-charger demo`."""
    configure_logging(getattr(args, "log_level", "INFO") or "INFO", "plain")
    port = pick_port(args.port)
    if port != args.port:
        print(f"port {args.port} is busy: using {port}", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(port, duration=args.duration, scenario=args.scenario))
    return 0


DEMO_HELP = """\
Run the real daemon against a simulated house, Shelly EM, Fleet API, Tesla and token
endpoint, all on 127.0.0.1: no car, account or configuration needed. Commands are
signed by the daemon itself and verified by the simulated car (no tesla-http-proxy).
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
        help=f"HTTP port (default {DEFAULT_PORT}; another free one if busy; 0: any free one)",
    )
    demo.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="evening",
        help="evening: one car and a kettle (default); two-cars: two cars on one supply;"
        " solar: a PV roof on a cloudy afternoon",
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
