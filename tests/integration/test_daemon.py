"""Lifecycle in-process: a dying task ends the daemon with 1; check-config prints redacted JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.app.daemon import Daemon, run_daemon
from tesla_smart_charger.cli.main import main
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.errors import ConfigError
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import WAIT_SECS

WriteConfig = Callable[..., Path]


async def test_a_dead_background_task_ends_the_daemon_with_exit_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with World(car=CarModel()) as world:
        loaded = load_config(world.write_config(tmp_path))

        async def started(daemon: Daemon) -> None:
            async def boom() -> None:
                raise RuntimeError("simulated bug in a loop")

            daemon.tasks["boom"] = asyncio.create_task(boom(), name="boom")

        with caplog.at_level(logging.ERROR):
            code = await asyncio.wait_for(
                run_daemon(loaded, monitor=False, started=started), WAIT_SECS
            )
    assert code == 1
    assert "background task boom stopped" in caplog.text
    assert "simulated bug in a loop" in caplog.text


async def test_monitor_without_meter_address_is_a_config_error(tmp_path: Path) -> None:
    async with World(car=CarModel()) as world:
        loaded = load_config(world.write_config(tmp_path, energyMonitorIp=""))
        with pytest.raises(ConfigError, match="energyMonitorIp: required with --monitor"):
            await run_daemon(loaded, monitor=True)


def test_check_config_prints_redacted_json(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(apiToken="api-SECRET-9")
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["homeMaxAmps"] == 30.0
    assert data["teslaAccessToken"] == "***"
    assert data["apiToken"] == "***"
    assert "SECRET" not in out.out + out.err
    assert "configuration is valid" in out.err


def test_check_config_bad_value_exits_2(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(upStepPercentage=0)
    assert main(["--config", str(path), "check-config"]) == 2
    assert "upStepPercentage = 0" in capsys.readouterr().err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("tesla-smart-charger ")


async def test_api_port_0_takes_a_free_port_and_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Suites side by side never race for a port: the OS picks it, the daemon says which."""
    port_file = tmp_path / "daemon.port"
    seen: dict[str, object] = {}
    async with World(car=CarModel()) as world:
        loaded = load_config(world.write_config(tmp_path, apiPort=0))
        assert loaded.settings.api_port == 0

        async def started(daemon: Daemon) -> None:
            port = int(port_file.read_text(encoding="utf-8"))
            seen["port"] = port
            seen["api_port"] = daemon.api_port
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"http://127.0.0.1:{port}/health") as reply,
            ):
                seen["health"] = reply.status
            os.kill(os.getpid(), signal.SIGTERM)

        with caplog.at_level(logging.INFO):
            code = await asyncio.wait_for(
                run_daemon(loaded, monitor=False, started=started, port_file=port_file),
                WAIT_SECS,
            )
    assert code == 0
    port = seen["port"]
    assert isinstance(port, int)
    assert port > 0
    assert seen["api_port"] == port
    assert seen["health"] in (200, 503)
    assert f"listening on http://127.0.0.1:{port}," in caplog.text


def test_api_port_below_0_is_refused(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError, match="apiPort = -1"):
        load_config(write_config(apiPort=-1))


def test_port_file_that_cannot_be_written_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever asked for the port would wait for it in vain: say so and stop."""

    async def go() -> int:
        async with World(car=CarModel()) as world:
            loaded = load_config(world.write_config(tmp_path))
            missing = tmp_path / "no-such-folder" / "daemon.port"
            return await asyncio.wait_for(
                run_daemon(loaded, monitor=False, port_file=missing), WAIT_SECS
            )

    assert asyncio.run(go()) == 1
    assert "cannot write the port file" in caplog.text
