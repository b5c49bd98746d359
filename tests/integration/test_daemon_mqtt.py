"""MQTT is optional: a broker that is not there, or a dead mqtt task, never stops control."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from tesla_smart_charger.app.daemon import Daemon, run_daemon
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import WAIT_SECS


async def until(check: object, timeout: float, what: str) -> None:
    """Poll `check()` with a deadline."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def test_no_broker_and_a_dead_mqtt_task_leave_control_and_health_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, refused_port: int
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: dict[str, object] = {}
    async with World(car=CarModel()) as world:
        nobody = refused_port  # the broker is "down"
        loaded = load_config(
            world.write_config(tmp_path, mqttUrl=f"mqtt://u:pa55-SECRET@127.0.0.1:{nobody}")
        )

        async def check(daemon: Daemon) -> None:
            await until(
                lambda: daemon.mqtt is not None and daemon.mqtt.failures > 0, WAIT_SECS, "a try"
            )
            mqtt = daemon.dependencies()["mqtt"]
            seen["unreachable"] = (mqtt.state, bool(mqtt.last_error), daemon.health())
            # Now the task itself dies (a bug): the daemon must go on controlling.
            daemon.tasks["mqtt"].cancel()

            async def boom() -> None:
                raise RuntimeError("simulated bug in the bridge")

            daemon.tasks["mqtt"] = asyncio.create_task(boom(), name="mqtt")
            await until(daemon.tasks["mqtt"].done, WAIT_SECS, "the mqtt task ended")
            daemon.service.overload("test")  # control still works
            await until(lambda: world.proxy.commands_named("set_charging_amps"), WAIT_SECS, "a cut")
            deps = daemon.dependencies()
            seen["dead"] = (
                deps["mqtt"].state,
                deps["tasks"].state,
                daemon.health(),
                daemon.tasks_alive(),
                daemon.tasks["controller"].done(),
            )
            os.kill(os.getpid(), signal.SIGTERM)

        checker: list[asyncio.Task[None]] = []

        async def started(daemon: Daemon) -> None:
            checker.append(asyncio.create_task(check(daemon)))

        code = await asyncio.wait_for(
            run_daemon(loaded, monitor=False, started=started), 2 * WAIT_SECS
        )
        checker[0].result()  # re-raises a failed assertion
    assert code == 0
    assert seen["unreachable"] == ("degraded", True, [])
    assert seen["dead"] == ("down", "ok", [], True, False)
    assert "not available" in caplog.text  # the outage was logged …
    assert "pa55-SECRET" not in caplog.text  # … without the broker password
