"""The token store, black-box: read-only or full storage, and two daemons on one store.

The real daemon runs against the simulated token endpoint with strict single-use refresh
tokens (no 24 h grace): a refresh sent with any but the newest refresh token is
`login_required`, so "the login was not lost" is checked by the endpoint itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.doctor import doctor_rows
from tests.helpers.e2e import DaemonProcess, run_daemon
from tests.helpers.storage import Storage, tiny_tmpfs

pytestmark = pytest.mark.slow

TTL = 5.0  # access tokens live 5 s: the daemon rotates the pair every 4 s
DEADLINE = 60.0
START_LINE = "Saving the Tesla tokens: cannot write token store"
END_LINE = "is writable again and holds the newest tokens"


def make_world() -> World:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    return World(car=car, manual_house=(8.0,), access_ttl=TTL, refresh_reuse_grace=0.0)


async def refreshes(world: World, count: int, daemon: DaemonProcess) -> None:
    """Wait until the endpoint has rotated the pair `count` times in all."""
    try:
        async with asyncio.timeout(DEADLINE):
            await world.oauth.wait_refreshes(count)
    except TimeoutError:
        pytest.fail(f"only {world.oauth.refresh_count} rotations:\n{daemon.log()}")


def unsaved(status: dict[str, Any]) -> bool:
    return status["auth"].get("saved") is False and (
        status["dependencies"]["token_store"]["state"] != "ok"
    )


def saved(status: dict[str, Any]) -> bool:
    return "saved" not in status["auth"] and status["dependencies"]["token_store"]["state"] == "ok"


async def hold_through_a_bad_store(
    world: World, daemon: DaemonProcess, storage: Storage, *, spoil: str, error: str
) -> dict[str, Any]:
    """Spoil the store, watch two rotations from memory, then repair it; what was seen."""
    await refreshes(world, world.oauth.refresh_count + 1, daemon)  # it runs and rotates
    mark = len(daemon.log())
    getattr(storage, spoil)()
    rotations = world.oauth.refresh_count
    await refreshes(world, rotations + 2, daemon)  # the second one needs the unsaved token
    status = await daemon.wait_status(unsaved, timeout=DEADLINE)
    code, health = await daemon.get("/health")
    alive = daemon.proc.returncode is None
    storage.writable()
    back = await daemon.wait_status(saved, timeout=DEADLINE)
    return {
        "mark": mark,
        "status": status,
        "health": (code, health),
        "alive": alive,
        "back": back,
        "error": error,
    }


def check_the_episode(seen: dict[str, Any], daemon: DaemonProcess, world: World) -> None:
    status, (code, health) = seen["status"], seen["health"]
    assert seen["alive"]
    assert seen["error"] in status["auth"]["store_problem"]
    assert "restart" in status["auth"]["store_problem"]
    assert status["auth"]["state"] == "ok"
    assert seen["error"] in status["dependencies"]["token_store"]["last_error"]
    # The breaker is still protected (commands go with the tokens in memory): 200, a warning.
    assert code == 200, health
    assert health["status"] == "ok"
    assert len(health["warnings"]) == 1
    assert "cannot be saved" in health["warnings"][0]
    assert seen["back"]["auth"]["state"] == "ok"
    assert world.oauth.login_required_count == 0
    log = daemon.log()[seen["mark"] :]
    assert log.count(START_LINE) == 1, log  # said once when it starts ...
    assert log.count(END_LINE) == 1, log  # ... and once when it ends
    assert seen["error"] in log


def newest_on_disk(store: Path, world: World) -> None:
    """The daemon is stopped: the file holds the one refresh token never used yet."""
    stored = json.loads(store.read_text())
    assert world.oauth.is_live_refresh(stored["refresh_token"])
    assert world.oauth.is_valid_access(stored["access_token"])


async def test_a_read_only_store_keeps_the_login_in_memory_and_a_start_still_works(
    tmp_path: Path,
) -> None:
    store = tmp_path / "state" / "tokens.json"
    with tiny_tmpfs(store.parent) as storage:
        async with make_world() as world:
            config = world.write_config(tmp_path, apiPort=0, tokenFile=str(store))
            async with run_daemon(tmp_path, config) as daemon:
                seen = await hold_through_a_bad_store(
                    world, daemon, storage, spoil="read_only", error="Read-only file system"
                )
            assert daemon.proc.returncode == 0
            check_the_episode(seen, daemon, world)
            newest_on_disk(store, world)

            # A start on a read-only store works with what it can read, and keeps rotating.
            storage.read_only()
            mark = len(daemon.log())
            rotations = world.oauth.refresh_count
            async with run_daemon(tmp_path, config, log_mode="ab") as again:
                await refreshes(world, rotations + 2, again)
                status = await again.wait_status(unsaved, timeout=DEADLINE)
                code, health = await again.get("/health")
                assert again.proc.returncode is None
            storage.writable()
        log = again.log()[mark:]
        assert code == 200
        assert "cannot be saved" in health["warnings"][0]
        assert status["auth"]["state"] == "ok"
        assert world.oauth.login_required_count == 0
        assert log.count(START_LINE) == 1, log
        # Stopped while still read-only: said once, with what to do if the login is gone.
        assert log.count("stopping with the newest Tesla tokens not saved") == 1, log


async def test_a_full_store_keeps_the_rotated_pair_and_writes_it_once_there_is_space(
    tmp_path: Path,
) -> None:
    store = tmp_path / "state" / "tokens.json"
    with tiny_tmpfs(store.parent) as storage:
        async with make_world() as world:
            config = world.write_config(tmp_path, apiPort=0, tokenFile=str(store))
            async with run_daemon(tmp_path, config) as daemon:
                seen = await hold_through_a_bad_store(
                    world, daemon, storage, spoil="full", error="No space left on device"
                )
            assert daemon.proc.returncode == 0
            check_the_episode(seen, daemon, world)
            newest_on_disk(store, world)
            assert not list(store.parent.glob(".tokens.json.*.tmp"))


async def test_a_second_daemon_on_the_same_store_refuses_to_start(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    store = first_dir / "tokens.json"
    async with make_world() as world:
        config = world.write_config(first_dir, apiPort=0)
        other = json.loads(config.read_text())
        other.update(apiPort=0, tokenFile=str(store))  # its own port, the same store
        (second_dir / "config.json").write_text(json.dumps(other))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")}
        async with run_daemon(first_dir, config) as first:
            await refreshes(world, 1, first)
            rotations = world.oauth.refresh_count
            second = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tesla_smart_charger", "--config",
                str(second_dir / "config.json"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
                cwd=second_dir,
            )  # fmt: skip
            try:
                async with asyncio.timeout(DEADLINE):
                    out, _ = await second.communicate()
            finally:
                if second.returncode is None:  # it did not refuse: stop it, then fail
                    second.kill()
                    await second.wait()
            code, health = await first.get("/health")
            status = await first.status()
            first_alive = first.proc.returncode is None
            pid = first.proc.pid

            # The setup commands while the daemon runs: refresh refused, doctor reads only.
            refresh = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tesla_smart_charger", "--config", str(config),
                "auth", "refresh",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
                cwd=first_dir,
            )  # fmt: skip
            async with asyncio.timeout(DEADLINE):
                _, refresh_err = await refresh.communicate()
            doctor = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tesla_smart_charger", "--config", str(config), "doctor",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
                cwd=first_dir,
            )  # fmt: skip
            async with asyncio.timeout(DEADLINE):
                doctor_out, _ = await doctor.communicate()
            # The setup commands asked the endpoint nothing (the daemon may have rotated).
            login_required = world.oauth.login_required_count

        # Once the first has stopped, the lock is free: the same config starts.
        async with run_daemon(second_dir, second_dir / "config.json") as later:
            await refreshes(world, world.oauth.refresh_count + 1, later)

    text = out.decode()
    assert second.returncode == 2, text
    refusals = [line for line in text.splitlines() if "already uses the token store" in line]
    assert len(refusals) == 1, text
    assert f"pid {pid}" in refusals[0]
    assert "tokens.json.daemon.lock" in refusals[0]
    assert "listening" not in text  # refused before anything started
    assert first_alive
    assert code == 200, health
    assert status["auth"]["state"] == "ok"
    assert world.oauth.refresh_count >= rotations
    assert refresh.returncode == 1
    assert f"pid {pid}" in refresh_err.decode()
    assert "renews the tokens itself" in refresh_err.decode()
    row = doctor_rows(doctor_out.decode())["token refresh works"]
    assert "skip" in row
    assert "renews them itself" in row
    vehicle = doctor_rows(doctor_out.decode())["vehicle found"]
    assert vehicle.startswith("ok ")  # the stored access token works without a refresh
    assert login_required == 0
    assert world.oauth.login_required_count == 0
