"""The real daemon signs its own commands: no tesla-http-proxy, the simulated car verifies.

Black-box against the simulated Fleet (`SimulatedProxy.signed_command`), whose cars hold their
own key pairs and check every tag, counter, expiry and VIN. Fault tests count the requests a
fault costs and watch the log and /health.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tesla_smart_charger.car.signing import crypto
from tesla_smart_charger.car.signing.cache import CACHE_FILE
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.signed import SignedCar
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import DaemonProcess, run_daemon

pytestmark = pytest.mark.slow

VIN = "5YJ3E1EA7KF000001"
WATCH_SECS = 8.0  # how long a fault is watched for a retry storm


def charging_car() -> CarModel:
    return CarModel(vin=VIN, request_amps=16, ramp_delay=0.5, capacity_kwh=None)


def signed_posts(world: World) -> int:
    return sum(1 for r in world.proxy.requests if r[2].endswith("/signed_command"))


def policy_lines(log: str, words: str) -> int:
    """Lines the car link's retry policy wrote about `words` (the log-once rule)."""
    return sum(
        1 for line in log.splitlines() if "car link (the Fleet API at" in line and words in line
    )


def car(world: World) -> SignedCar:
    return world.proxy.signed[VIN]


async def meter_valid(daemon: DaemonProcess) -> None:
    await daemon.wait_status(lambda s: s["meter"] is not None and s["meter"]["valid"], 20.0)


async def test_cut_is_signed_by_the_daemon_and_a_restart_costs_no_handshake(
    tmp_path: Path,
) -> None:
    async with World(car=charging_car(), manual_house=(10.0,)) as world:
        path = world.write_config(tmp_path, apiPort=0, sleepTimeSecs=5)
        assert "teslaHttpProxy" not in json.loads(path.read_text())
        async with run_daemon(tmp_path, path, "--monitor") as daemon:
            await meter_valid(daemon)
            world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main
            stepped = time.monotonic()
            _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=5.0)
            cut_secs = time.monotonic() - stepped
            assert 6 <= body["charging_amps"] <= 9
            await daemon.wait_status(lambda s: s["controller"]["command_in_flight"] is False)
            assert "car commands: signed by this charger" in daemon.log()
        assert car(world).handshakes == 1
        assert not [r for r in world.proxy.requests if "/command/" in r[2]]  # no proxy route
        # One billed request per command, plus the one handshake.
        first_commands = len(world.proxy.commands)
        assert world.proxy.signed_requests == 1 + first_commands
        assert world.proxy.billing.command == 1 + first_commands
        cache = tmp_path / CACHE_FILE
        assert cache.stat().st_mode & 0o777 == 0o600

        async with run_daemon(tmp_path, path, "--monitor", log_mode="ab") as daemon:
            await meter_valid(daemon)
            since = len(world.proxy.commands)
            world.set_house(23.5)  # the cut must go further: a command after the restart
            await world.proxy.wait_for_command("set_charging_amps", timeout=10.0, since=since)
        assert car(world).handshakes == 1  # the cached session was used
        assert car(world).faults == []
        assert world.proxy.signed_requests == 1 + len(world.proxy.commands)
        assert world.car.wakes == 0
    print(f"signed cut landed {cut_secs:.2f} s after the step")


async def watch(world: World, daemon: DaemonProcess, secs: float = WATCH_SECS) -> int:
    """Signed requests made while the fault lasts, over `secs`; /health must stay 503."""
    before = signed_posts(world)
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        code, _ = await daemon.get("/health")
        assert code == 503
        await asyncio.sleep(0.5)
    return signed_posts(world) - before


async def cut_refused(tmp_path: Path, world: World, words: str) -> tuple[int, int, str]:
    """Overload the house; (requests until the error was logged, during the watch, log)."""
    path = world.write_config(tmp_path, apiPort=0, sleepTimeSecs=5)
    async with run_daemon(tmp_path, path, "--monitor") as daemon:
        await meter_valid(daemon)
        world.set_house(20.0)
        deadline = time.monotonic() + 15.0
        while words not in daemon.log():
            assert time.monotonic() < deadline, daemon.log()[-3000:]
            await asyncio.sleep(0.1)
        first = signed_posts(world)
        later = await watch(world, daemon)
        return first, later, daemon.log()


async def test_unpaired_key_is_one_clear_error_and_no_retry_storm(tmp_path: Path) -> None:
    async with World(car=charging_car(), manual_house=(10.0,)) as world:
        car(world).paired.clear()  # the owner never approved our key
        first, later, log = await cut_refused(tmp_path, world, "does not know our key")
    assert first == 1  # the refused handshake
    assert later == 0  # the policy holds the link at its cap (60 s)
    assert policy_lines(log, "does not know our key") == 1
    assert log.count("does not know our key") <= 3  # policy, controller, escalation: once each
    assert world.proxy.commands == []


async def test_expired_commands_are_a_clear_error_after_one_resync(tmp_path: Path) -> None:
    async with World(car=charging_car(), manual_house=(10.0,)) as world:
        car(world).transit_secs = 60.0  # each command reaches the car a minute late
        first, later, log = await cut_refused(tmp_path, world, "rejected the command twice")
    assert first == 3  # handshake, command, one retry with the car's fresh clock
    assert later == 0
    assert car(world).faults == [17, 17]
    assert world.proxy.commands == []
    assert policy_lines(log, "rejected the command twice") == 1


async def test_tampered_session_info_is_discarded(tmp_path: Path) -> None:
    async with World(car=charging_car(), manual_house=(10.0,)) as world:
        car(world).corrupt_session_tags = True
        first, later, log = await cut_refused(tmp_path, world, "tag does not verify")
    assert first == 1
    assert later == 0
    assert policy_lines(log, "tag does not verify") == 1
    assert world.proxy.commands == []
    assert not (tmp_path / CACHE_FILE).exists()


async def test_stale_counter_after_restart_resyncs_once(tmp_path: Path) -> None:
    async with World(car=charging_car(), manual_house=(10.0,)) as world:
        path = world.write_config(tmp_path, apiPort=0, sleepTimeSecs=5)
        async with run_daemon(tmp_path, path, "--monitor") as daemon:
            await meter_valid(daemon)
            world.set_house(20.0)
            await world.proxy.wait_for_command("set_charging_amps", timeout=5.0)
        # Another client with our key (a restored backup) used later counters meanwhile.
        ours = crypto.public_bytes(world.client_key)
        car(world)._counters[ours] += 5
        async with run_daemon(tmp_path, path, "--monitor", log_mode="ab") as daemon:
            await meter_valid(daemon)
            since, posts = len(world.proxy.commands), signed_posts(world)
            world.set_house(23.5)
            await world.proxy.wait_for_command("set_charging_amps", timeout=10.0, since=since)
            log = daemon.log()
        assert car(world).faults == [6]
        assert car(world).handshakes == 1
        assert signed_posts(world) - posts == len(world.proxy.commands) - since + 1
        assert log.count("re-synchronised its session") == 1
