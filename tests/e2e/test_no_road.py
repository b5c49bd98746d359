"""Black-box: an overload no road to the car can carry, from start-up, switches the relay off.

The controller never reaches the car (tesla-http-proxy refused or answering 500, or the token
endpoint failing with the access token expired), so it never sends a cut; the overload is still
a failed cut and the charger circuit goes off after escalateAfterSecs, with one alert. What
follows (the relay stays off until a road can set the car safe) is
tests/e2e/test_relay_no_road.py.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import closed_port, world_and_daemon
from tests.helpers.escalation import ESCALATE, charging_car, poll
from tests.helpers.webhook import Receiver

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "fault", ["proxy refused", "proxy answering 500", "token endpoint failing"]
)
async def test_overload_with_no_road_from_start_up_switches_the_relay_off(
    tmp_path: Path, fault: str
) -> None:
    receiver = Receiver()
    await receiver.start()
    # 20 A of house and the car's 16 A on a 30 A supply, from the first reading on.
    world = World(
        car=charging_car(),
        manual_house=(20.0,),
        relay_gen=2,
        access_ttl=0.5 if fault == "token endpoint failing" else 28800.0,
    )
    config: dict[str, Any] = {"escalateAfterSecs": ESCALATE, "alertWebhook": receiver.url}
    # Each from before the daemon starts.
    refusing = contextlib.AsyncExitStack()
    if fault == "proxy refused":
        port = refusing.enter_context(closed_port())  # bound, never listening: refused
        config["teslaHttpProxy"] = f"http://127.0.0.1:{port}"
    elif fault == "proxy answering 500":
        world.proxy.fail("500")
    else:
        world.oauth.fail("500")  # the access token expires at once: no token ever
    try:
        async with (
            refusing,
            world_and_daemon(tmp_path, world, "--monitor", **config) as (
                world,
                daemon,
            ),
        ):
            relay = world.relay
            assert relay is not None
            await poll(lambda: relay.switches == [(0, False)], ESCALATE + 25, daemon)
            assert world.car.current_draw(time.monotonic()) == 0.0
            status = await daemon.wait_status(
                lambda st: st["controller"]["escalation"] == "relay_off", timeout=10
            )
            assert status["dependencies"]["safety_relay"]["state"] == "ok"
            code, health = await daemon.get("/health")
            assert code == 503
            assert any(
                p.startswith("escalation relay_off: no road reaches the car")
                for p in health["problems"]
            )
            await receiver.wait_for(lambda: len(receiver.bodies) >= 1, timeout=10)
            # The circuit stays off: the house alone (20 A) leaves no room for the car's 16 A
            # and no road could set it lower first.
            await daemon.wait_status(
                lambda st: st["meter"]["amps"] is not None and st["meter"]["amps"][0] < 25,
                timeout=10,
            )
            assert relay.switches == [(0, False)]
            code, _ = await daemon.get("/health")
            assert code == 503
    finally:
        await receiver.stop()
    assert [b["event"] for b in receiver.bodies] == ["relay_off"]  # one POST, no repeats
    body = receiver.bodies[0]
    assert body["limit"] == 30.0
    assert "no road reaches the car" in body["message"]
    # escalateAfterSecs after the overload showed with no road (a late reading adds a second).
    lasted = re.search(r"above 30 A for (\d+) s", body["message"])
    assert lasted is not None
    assert ESCALATE <= int(lasted.group(1)) <= ESCALATE + 5
    assert body["house_amps"][0] > 30
    log = daemon.log()
    assert log.count("the charger circuit is switched off") == 1
    assert log.count("asking the car to stop charging") == 0  # no road would carry it
    assert world.car.wakes == 0
    if fault == "proxy answering 500":
        # Looks at the car only, paced by the car link's policy, every one answered 500.
        assert 1 <= len(world.proxy.requests) <= 8
        assert all(status == 500 for _, _, _, status in world.proxy.requests)
        assert log.count("WARNING tesla_smart_charger.car.fleet_api: car link") == 1
        return
    assert world.proxy.seen == 0  # the other two never reach the proxy
    if fault == "token endpoint failing":
        # The token endpoint's own policy paces the refreshes: no storm while the relay is off.
        assert 1 <= world.oauth.requests <= 8
        assert log.count("Tesla token refresh: token endpoint") == 1  # said once
    else:
        # The car link's outage is said once, with its cause (the controller's reason aside).
        assert log.count("WARNING tesla_smart_charger.car.fleet_api: car link") == 1
        assert "nothing listens on" in log
