"""Escalation, black-box: a car that ignores cuts is stopped, then its circuit is
switched off by the safety relay, which goes back on only after a minute of room.

Its own file: the minute of room makes it the suite's longest test after the fault window, and
`--dist loadfile` hands it to a worker of its own from the start (tests/e2e/faults/conftest.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tesla_smart_charger.control.escalation import RESUME_AFTER_SECS
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, world_and_daemon
from tests.helpers.escalation import ESCALATE, charging_car, meter_valid, poll
from tests.helpers.webhook import Receiver

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)  # a minute of room, plus deadlines for a loaded machine
async def test_ignored_cut_escalates_to_charge_stop_then_relay_and_back(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    world = World(car=charging_car(fault="ignores_commands"), manual_house=(10.0,), relay_gen=2)
    try:
        async with world_and_daemon(
            tmp_path,
            world,
            "--monitor",
            escalateAfterSecs=ESCALATE,
            carSettleSecs=2,
            alertWebhook=receiver.url,
        ) as (world, daemon):
            relay = world.relay
            assert relay is not None
            await meter_valid(daemon)
            world.set_house(20.0)  # 36 A on 30 A, and the car will not follow any cut
            # escalateAfterSecs runs on the daemon's clock; the rest is a loaded machine's slack
            await world.proxy.wait_for_command("charge_stop", timeout=ESCALATE + 5 * LOADED)
            code, health = await daemon.get("/health")
            assert code == 503
            assert any("escalation" in p for p in health["problems"])
            status = await daemon.status()
            assert status["controller"]["escalation"] in ("charge_stop", "relay_off")

            await poll(lambda: (0, False) in relay.switches, ESCALATE + 5 * LOADED, daemon)
            off_at = time.monotonic()
            assert world.car.current_draw(time.monotonic()) == 0.0
            status = await daemon.wait_status(
                lambda st: st["controller"]["escalation"] == "relay_off"
            )
            assert status["dependencies"]["safety_relay"]["state"] == "ok"
            code, _ = await daemon.get("/health")
            assert code == 503
            code, text = await daemon.get("/metrics")
            assert 'tesla_smart_charger_escalation_level{level="relay_off"} 1.0' in text

            # Room for chargerMinAmps (house 20 A, car off) must last a minute first.
            await daemon.wait_status(
                lambda st: st["controller"]["escalation"] == "none",
                timeout=RESUME_AFTER_SECS + 15 * LOADED,
            )
            assert time.monotonic() - off_at >= RESUME_AFTER_SECS - 1
            assert relay.switches[:2] == [(0, False), (0, True)]
            await receiver.wait_for(lambda: len(receiver.bodies) >= 5)
    finally:
        await receiver.stop()
    events = [b["event"] for b in receiver.bodies]
    assert events[:5] == ["cut_failed", "charge_stop", "relay_off", "relay_on", "resolved"]
    first = receiver.bodies[0]
    assert first["limit"] == 30.0
    assert first["house_amps"][0] > 30
    assert world.car.wakes == 0
    assert world.proxy.billing.wake == 0
    log = daemon.log()
    assert log.count("asking the car to stop charging") == 1  # each step logged once
    assert log.count("the charger circuit is switched off") == 1
