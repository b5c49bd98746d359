"""Black-box: while no road reaches the car, the relay it switched off stays off.

The Fleet API starts answering 500 and the house goes over its limit: the controller's cut
fails, and with no road to the car the relay goes off after escalateAfterSecs. The old code
switched it back on after 60 s of room and the car, still at 16 A, overloaded the house again,
every minute. Now it stays off for as long as no road can set the car's current; once the proxy
recovers the car is set to chargerMinAmps first and then the charger circuit is powered. Its own
file: the minute of room makes it one of the suite's longest tests (tests/e2e/faults/conftest.py
hands it out first).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tesla_smart_charger.control.escalation import RESUME_AFTER_SECS
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import world_and_daemon
from tests.helpers.escalation import ESCALATE, charging_car, poll
from tests.helpers.webhook import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LIMIT = 30.0


async def test_relay_stays_off_until_a_road_sets_the_car_safe(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    world = World(car=charging_car(), manual_house=(10.0,), relay_gen=2)
    try:
        async with world_and_daemon(
            tmp_path, world, "--monitor", escalateAfterSecs=ESCALATE, alertWebhook=receiver.url
        ) as (world, daemon):
            relay, car, proxy = world.relay, world.car, world.proxy
            assert relay is not None
            await daemon.wait_status(
                lambda st: st["vehicle"]["charging_state"] == "Charging", timeout=20
            )
            # Tesla's side fails, then the house rises: 36 A on 30 A, and no road to the car.
            proxy.fail("500")
            before = len(proxy.requests)
            world.set_house(20.0)
            started = time.monotonic()
            await poll(lambda: relay.switches == [(0, False)], ESCALATE + 25, daemon)
            off_at = relay.switched_at[0]
            assert off_at - started >= ESCALATE
            await receiver.wait_for(lambda: len(receiver.bodies) >= 1, timeout=10)

            # The old code powered the car again once room had lasted RESUME_AFTER_SECS from
            # the first reading after this; watch 5 s past that: off all along, the house
            # within its limit, /health 503.
            peak = 0.0
            while time.monotonic() < off_at + RESUME_AFTER_SECS + 5:
                status = await daemon.status()
                assert status["controller"]["escalation"] == "relay_off", daemon.log()[-3000:]
                peak = max(peak, world.supply_amps()[0])
                assert relay.switches == [(0, False)]
                assert not car.circuit_on
            code, health = await daemon.get("/health")
            assert code == 503
            assert any("escalation relay_off" in p for p in health["problems"])
            assert peak <= LIMIT
            failing = proxy.requests[before:]
            # The cut, then the safe current once room had lasted, paced by the car link's
            # retry policy (no storm): every one answered 500.
            assert all(status == 500 for _, _, _, status in failing)

            proxy.fail(None)  # Tesla's side is back
            healed_at = time.monotonic()
            # The next try the policy allows sets 6 A first, then the relay powers the charger.
            await poll(lambda: len(relay.switches) == 2, 75, daemon)
            on_at = relay.switched_at[1]
            assert relay.switches[1] == (0, True)
            sets = [
                (t, body)
                for t, name, body in proxy.commands
                if name == "set_charging_amps" and t >= healed_at
            ]
            assert sets, daemon.log()[-3000:]
            assert sets[0][1] == {"charging_amps": 6}
            assert sets[0][0] <= on_at  # the car's current was set before it had power again
            assert car.request_amps == 6
            # Back on at 6 A: 26 A, within the limit (the old code: 36 A again).
            await daemon.wait_status(
                lambda st: st["controller"]["escalation"] == "none", timeout=15
            )
            await poll(lambda: car.current_draw(time.monotonic()) == 6.0, 10, daemon)
            assert world.supply_amps()[0] <= LIMIT
            await receiver.wait_for(lambda: len(receiver.bodies) >= 3, timeout=10)
    finally:
        await receiver.stop()
    events = [b["event"] for b in receiver.bodies]
    assert events == ["cut_failed", "relay_off", "relay_on", "resolved"]  # each step once
    assert "no road reaches the car" in receiver.bodies[1]["message"]
    # About 80 s of outage: the cut and its retry, then a try each time the policy allows.
    assert 1 <= len(failing) <= 12
    assert on_at - healed_at < 75  # the policy's longest wait (60 s) and some
    log = daemon.log()
    assert log.count("the charger circuit is switched off") == 1
    assert log.count("charger circuit switched on") == 1
    # The car link's failure is said once when it starts and once when it ends.
    assert log.count("WARNING tesla_smart_charger.car.fleet_api: car link") == 1
    assert log.count("car link (the Fleet API at") == 2  # the signed road: no proxy
    assert "works again" in log
    assert car.wakes == 0
    assert proxy.billing.wake == 0
