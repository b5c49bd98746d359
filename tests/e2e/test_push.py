"""Push mode, black-box: the real daemon process against a simulated proxy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.const import SHUTDOWN_TIMEOUT
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, STARTUP_SECS, world_and_daemon
from tests.helpers.fixtures import SEED_CONFIG

pytestmark = pytest.mark.slow


def charging_car(amps: int = 16) -> CarModel:
    return CarModel(request_amps=amps, charging_state="Charging", ramp_delay=0.5)


async def test_overload_halves_the_current_at_once(tmp_path: Path) -> None:
    # "within 2 s" on an idle machine: bench_timing measures it (docs/benchmarks.md)
    async with world_and_daemon(tmp_path, World(car=charging_car(16))) as (world, daemon):
        code, body = await daemon.get("/overload")
        assert code == 202
        assert body["accepted"] is True
        _, _, payload = await world.proxy.wait_for_command("set_charging_amps", timeout=2 * LOADED)
        assert payload == {"charging_amps": 8}
        status = await daemon.status()
        assert status["controller"]["target_amps"] == 8
        assert status["last_command"]["amps"] == 8
        # One billed request for the command (plus the session handshake on the signed road).
        handshakes = world.proxy.signed[world.car.vin].handshakes
        assert status["api_calls"]["command"] == 1 + handshakes
        assert status["api_calls"]["by_outcome"]["command"] == {"ok": 1, "handshake": 1}


async def test_fifty_concurrent_overloads_make_one_reduction(tmp_path: Path) -> None:
    async with world_and_daemon(tmp_path, World(car=charging_car(16))) as (world, daemon):
        async with aiohttp.ClientSession() as s:

            async def hit() -> int:
                async with s.get(daemon.url + "/overload") as r:
                    return r.status

            codes = await asyncio.gather(*(hit() for _ in range(50)))
        assert codes == [202] * 50
        await world.proxy.wait_for_command("set_charging_amps", timeout=2 * LOADED)
        # The burst is fully handled once /status shows the reduction; then nothing else may follow
        # within the settle window (sleepTimeSecs is 20 s).
        await daemon.wait_status(lambda st: st["controller"]["setpoint_amps"] == 8)
        await daemon.wait_status(
            lambda st: (
                st["vehicle"]["checked_secs_ago"] is not None
                and st["vehicle"]["checked_secs_ago"] >= 1.0
            )
        )
        assert [c[2] for c in world.proxy.commands_named("set_charging_amps")] == [
            {"charging_amps": 8}
        ]


async def test_asleep_car_gets_nothing_and_is_never_woken(tmp_path: Path) -> None:
    car = CarModel(state="asleep", charging_state="Stopped")
    async with world_and_daemon(tmp_path, World(car=car)) as (world, daemon):
        code, _ = await daemon.get("/overload")
        assert code == 202
        status = await daemon.wait_status(lambda st: st["vehicle"]["state"] == "asleep")
        assert "asleep" in status["controller"]["reason"]
        assert world.proxy.commands == []
        assert car.wakes == 0
        assert not [r for r in world.proxy.requests if "wake_up" in r[2]]
        assert car.state == "asleep"


async def test_no_token_reaches_config_status_or_log(tmp_path: Path) -> None:
    world = World(car=charging_car(16))
    async with world_and_daemon(tmp_path, world, apiToken="api-token-SECRET-123") as (_, daemon):
        cfg = json.loads(daemon.config_path.read_text())
        secrets = [cfg["teslaAccessToken"], cfg["teslaRefreshToken"], "api-token-SECRET-123"]
        code, _ = await daemon.get(
            "/overload", headers={"Authorization": "Bearer api-token-SECRET-123"}
        )
        assert code == 202
        await world.proxy.wait_for_command("set_charging_amps")
        _, config_body = await daemon.get("/config")
        status = await daemon.status()
        assert config_body["teslaAccessToken"] == "***"
        assert config_body["apiToken"] == "***"
    # after shutdown the whole log is written
    texts = [json.dumps(config_body), json.dumps(status), daemon.log()]
    for secret in secrets:
        for text in texts:
            assert secret not in text
    assert "set_charging_amps" in daemon.log() or "8 A" in daemon.log()


async def test_api_token_is_required_when_set(tmp_path: Path) -> None:
    async with world_and_daemon(
        tmp_path, World(car=charging_car(16)), apiToken="tok-SECRET-456"
    ) as (world, daemon):
        code, body = await daemon.get("/overload")
        assert code == 401
        assert "token" in body["error"]
        code, _ = await daemon.get("/overload?token=wrong")
        assert code == 401
        code, _ = await daemon.get("/overload?token=tok-SECRET-456")
        assert code == 202
        await world.proxy.wait_for_command("set_charging_amps")


async def test_sigterm_exits_zero_by_itself(tmp_path: Path) -> None:
    # The daemon's own budget is SHUTDOWN_TIMEOUT (5 s, on its clock); terminate() kills it
    # after a loaded machine's deadline, and a killed daemon exits -9, not 0.
    async with world_and_daemon(tmp_path, World(car=charging_car(16))) as (_, daemon):
        code, seconds = await daemon.terminate()
    assert code == 0
    assert seconds < SHUTDOWN_TIMEOUT * LOADED


def test_min_above_max_exits_two_naming_both_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({**SEED_CONFIG, "chargerMinAmps": 20, "chargerMaxAmps": 16}), encoding="utf-8"
    )
    # How fast (under 2 s on an idle machine: nothing heavy is imported before the check) is
    # measured by bench_timing, not here: three suites at once made it 5 s.
    result = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "tesla_smart_charger", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECS,
        check=False,
    )
    assert result.returncode == 2
    assert "chargerMinAmps" in result.stderr
    assert "chargerMaxAmps" in result.stderr
    assert str(path) in result.stderr
