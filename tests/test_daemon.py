"""Lifecycle in-process: a dying task ends the daemon with 1; check-config prints redacted JSON."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tesla_smart_charger.cli import main
from tesla_smart_charger.config import load_config
from tesla_smart_charger.daemon import Daemon, run_daemon
from tesla_smart_charger.errors import ConfigError
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.e2e import free_port

WriteConfig = Callable[..., Path]


async def test_a_dead_background_task_ends_the_daemon_with_exit_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with World(car=CarModel()) as world:
        loaded = load_config(world.write_config(tmp_path, apiPort=free_port()))

        async def started(daemon: Daemon) -> None:
            async def boom() -> None:
                raise RuntimeError("simulated bug in a loop")

            daemon.tasks["boom"] = asyncio.create_task(boom(), name="boom")

        with caplog.at_level(logging.ERROR):
            code = await asyncio.wait_for(run_daemon(loaded, monitor=False, started=started), 10)
    assert code == 1
    assert "background task boom stopped" in caplog.text
    assert "simulated bug in a loop" in caplog.text


async def test_monitor_without_meter_address_is_a_config_error(tmp_path: Path) -> None:
    async with World(car=CarModel()) as world:
        loaded = load_config(world.write_config(tmp_path, apiPort=free_port(), energyMonitorIp=""))
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
