"""Wall-clock figures of the real daemon: how fast, measured here rather than asserted in tests.

The test suite proves that a cut, an exit or a config error happens, with deadlines generous
enough for a loaded CI machine. How fast they happen on this machine is measured here, against
the targets below: the daemon runs as a child process (as systemd runs it) against the simulated
proxy, Shelly and token endpoint on 127.0.0.1. Exit 1 when a median misses its target.

    python -m tesla_smart_charger.bench.timing            # 5 runs of each
    python -m tesla_smart_charger.bench.timing --runs 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World

# What an idle 2-core machine gives, with room: the figures the suite once asserted.
TARGETS = {
    "config error: exit 2": 2.0,  # nothing heavy is imported before the config is checked
    "start: listening": 5.0,
    "/overload -> cut at the proxy": 2.0,
    "SIGTERM -> exit 0": 5.0,  # the daemon's own shutdown budget
}
DEADLINE = 60.0  # for a figure that never comes (then the run fails, it does not hang)


@dataclass
class Figures:
    """Seconds per measured step, one list entry per run."""

    runs: dict[str, list[float]]

    def add(self, name: str, secs: float) -> None:
        self.runs.setdefault(name, []).append(secs)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}


def config_error_secs(folder: Path) -> float:
    """Seconds until the CLI reports a bad config.json (exit 2)."""
    path = folder / "bad.json"
    path.write_text(json.dumps({"homeMaxAmps": 30, "chargerMinAmps": 20, "chargerMaxAmps": 16}))
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "tesla_smart_charger", "--config", str(path)],
        capture_output=True,
        timeout=DEADLINE,
        check=False,
        env=_env(),
    )
    secs = time.monotonic() - started
    if result.returncode != 2:
        raise RuntimeError(f"expected exit 2, got {result.returncode}: {result.stderr[-500:]!r}")
    return secs


async def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {DEADLINE} s")
        await asyncio.sleep(0.005)


async def daemon_round(folder: Path, figures: Figures) -> None:
    """Start the daemon (push mode), send /overload, time the cut, then SIGTERM."""
    car = CarModel(request_amps=16, charging_state="Charging", ramp_delay=0.5, capacity_kwh=None)
    async with World(car=car) as world:
        config = world.write_config(folder)
        port_file = folder / "daemon.port"
        port_file.unlink(missing_ok=True)
        with (folder / "daemon.log").open("wb") as log:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tesla_smart_charger", "--config", str(config),
                "--port-file", str(port_file),
                stdout=log, stderr=asyncio.subprocess.STDOUT, env=_env(), cwd=folder,
            )  # fmt: skip
        try:
            await _until(lambda: port_file.exists() or proc.returncode is not None, "start")
            if proc.returncode is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}")
            figures.add("start: listening", time.monotonic() - started)
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            async with aiohttp.ClientSession() as session:
                sent = time.monotonic()
                async with session.get(url + "/overload") as reply:
                    if reply.status != 202:
                        raise RuntimeError(f"/overload answered {reply.status}")
                await world.proxy.wait_for_command("set_charging_amps", timeout=DEADLINE)
                figures.add("/overload -> cut at the proxy", time.monotonic() - sent)
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), DEADLINE)
            figures.add("SIGTERM -> exit 0", time.monotonic() - stopping)
            if code != 0:
                raise RuntimeError(f"SIGTERM: exit {code}")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def report(figures: Figures) -> tuple[str, bool]:
    """One row per figure: median, max and the target; ok False when a median misses."""
    lines = [f"{'step':<32} {'runs':>4} {'median s':>9} {'max s':>7} {'target s':>9}"]
    ok = True
    for name, target in TARGETS.items():
        values = figures.runs.get(name, [])
        if not values:
            continue
        median = statistics.median(values)
        missed = median > target
        ok = ok and not missed
        lines.append(
            f"{name:<32} {len(values):>4} {median:>9.2f} {max(values):>7.2f} {target:>9.1f}"
            + ("  MISS" if missed else "")
        )
    return "\n".join(lines), ok


async def measure(runs: int) -> Figures:
    """`runs` rounds of every figure, one after the other (never two daemons at once)."""
    figures = Figures({})
    with tempfile.TemporaryDirectory(prefix="tsc-bench-timing-") as tmp:
        for i in range(runs):
            folder = Path(tmp) / f"run{i}"
            folder.mkdir()
            figures.add("config error: exit 2", await asyncio.to_thread(config_error_secs, folder))
            await daemon_round(folder, figures)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; exit 1 when a median misses its target."""
    parser = argparse.ArgumentParser(
        prog="python -m tesla_smart_charger.bench.timing",
        description="Wall-clock figures of the real daemon on this machine.",
    )
    parser.add_argument("--runs", type=int, default=5, help="rounds of each figure (default 5)")
    args = parser.parse_args(argv)
    text, ok = report(asyncio.run(measure(max(1, args.runs))))
    print(text)
    if not ok:
        print("a median missed its target (MISS above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
