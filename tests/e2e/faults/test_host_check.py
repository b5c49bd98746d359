"""DNS rebinding and Referer-only cross-site requests.

A page on evil.example whose name is re-pointed at 127.0.0.1 talks to the daemon as "same
origin": only the Host header gives it away. The daemon answers only to its own names and
addresses (plus `apiAllowedHosts`); bound to every address, it accepts any IP literal, since a
rebinding attack always uses a name. First the rules against the HTTP app on a real 127.0.0.1
server, then the real daemon process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tesla_smart_charger.httpapi.server import ApiContext, HostPolicy, build_app
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import Recorder, world_and_daemon
from tests.helpers.status import sample_status


async def _client(rec: Recorder, bind: str, names: Iterable[str] = ()) -> TestClient[Any, Any]:
    ctx = ApiContext(
        rec.overload, sample_status, dict, list, hosts=HostPolicy.for_bind(bind, tuple(names))
    )
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def loopback_api(rec: Recorder) -> AsyncIterator[TestClient[Any, Any]]:
    client = await _client(rec, "127.0.0.1", ["charger.home.arpa"])
    yield client
    await client.close()


@pytest.fixture
async def wildcard_api(rec: Recorder) -> AsyncIterator[TestClient[Any, Any]]:
    client = await _client(rec, "0.0.0.0", ["Charger.Local"])
    yield client
    await client.close()


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil"]
)
@pytest.mark.parametrize("path", ["/overload", "/status", "/health", "/config"])
async def test_another_name_is_421_json_and_changes_nothing(
    loopback_api: TestClient[Any, Any], rec: Recorder, host: str, path: str
) -> None:
    async with loopback_api.get(path, headers={"Host": host}) as r:
        assert r.status == 421
        body = await r.json()
    assert body["status"] == 421
    assert "apiAllowedHosts" in body["error"]
    assert host.split(":", maxsplit=1)[0] in body["error"]
    assert rec.overloads == []


@pytest.mark.parametrize(
    "host",
    [
        *("127.0.0.1", "127.0.0.1:8000", "localhost", "LOCALHOST:8000", "localhost."),
        *("[::1]:8000", "charger.home.arpa", "charger.home.arpa:8000"),
    ],
)
async def test_own_names_and_listed_names_are_served(
    loopback_api: TestClient[Any, Any], rec: Recorder, host: str
) -> None:
    async with loopback_api.get("/overload?source=shelly", headers={"Host": host}) as r:
        assert r.status == 202
    assert rec.overloads == ["shelly"]


async def test_bound_to_loopback_a_lan_address_is_refused(
    loopback_api: TestClient[Any, Any],
) -> None:
    async with loopback_api.get("/status", headers={"Host": "192.168.1.50:8000"}) as r:
        assert r.status == 421


@pytest.mark.parametrize(
    "host", ["192.168.1.50:8000", "192.168.1.50", "[fe80::1]:8000", "charger.local:8000"]
)
async def test_bound_to_every_address_any_ip_literal_and_listed_names_are_served(
    wildcard_api: TestClient[Any, Any], rec: Recorder, host: str
) -> None:
    # A Shelly URL action calls http://192.168.x.y:8000/overload.
    async with wildcard_api.get("/overload?source=shelly", headers={"Host": host}) as r:
        assert r.status == 202
    assert rec.overloads == ["shelly"]


async def test_bound_to_every_address_other_names_are_refused(
    wildcard_api: TestClient[Any, Any], rec: Recorder
) -> None:
    async with wildcard_api.get("/overload", headers={"Host": "rebind.evil.example"}) as r:
        assert r.status == 421
    assert rec.overloads == []


@pytest.mark.parametrize(
    "referer", ["https://evil.example/page", "http://127.0.0.1:1/", "http://localhost.evil/"]
)
async def test_referer_only_cross_site_post_is_refused(
    loopback_api: TestClient[Any, Any], rec: Recorder, referer: str
) -> None:
    async with loopback_api.post("/overload", headers={"Referer": referer}) as r:
        assert r.status == 403
        body = await r.json()
    assert "Referer" in body["error"]
    assert rec.overloads == []


async def test_same_origin_referer_is_accepted(
    loopback_api: TestClient[Any, Any], rec: Recorder
) -> None:
    own = f"http://127.0.0.1:{loopback_api.port}/"
    async with loopback_api.post("/overload", headers={"Referer": own}) as r:
        assert r.status == 202
    assert len(rec.overloads) == 1


def test_host_policy_is_a_pure_decision() -> None:
    loop = HostPolicy.for_bind("127.0.0.1", ())
    assert loop.allows(None)  # HTTP/1.0 without Host: not a browser
    assert loop.allows("[::1]")
    assert not loop.allows("")
    assert not loop.allows("evil.example")
    lan = HostPolicy.for_bind("192.168.1.5", ())
    assert lan.allows("192.168.1.5:8000")
    assert not lan.allows("192.168.1.6:8000")
    assert HostPolicy.for_bind("::", ()).allows("10.0.0.7")
    assert not HostPolicy.for_bind("::", ()).allows("ten.example")
    assert HostPolicy.for_bind("charger.lan", ()).allows("Charger.LAN:8000")


@pytest.mark.slow
async def test_daemon_refuses_a_rebound_name_and_referer_only_cross_site(tmp_path: Path) -> None:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    world = World(car=car, manual_house=(8.0,))
    async with world_and_daemon(tmp_path, world) as (world, daemon):
        port = daemon.url.rsplit(":", 1)[1]
        code, body = await daemon.get("/status", headers={"Host": f"evil.example:{port}"})
        assert code == 421
        assert "evil.example" in body["error"]
        code, body = await daemon.get("/overload", headers={"Host": "evil.example"})
        assert code == 421
        code, body = await daemon.get(
            "/overload", headers={"Referer": "https://evil.example/", "Host": f"127.0.0.1:{port}"}
        )
        assert code == 403
        assert "Referer" in body["error"]
        assert world.proxy.commands_named("set_charging_amps") == []
        said = [line for line in daemon.log().splitlines() if "apiAllowedHosts" in line]
        assert len(said) == 1  # once, in words, however many requests
        assert "evil.example" in said[0]
        code, _ = await daemon.get("/health", headers={"Host": f"localhost:{port}"})
        assert code in (200, 503)
        code, _ = await daemon.get("/status", headers={"Host": f"127.0.0.1:{port}"})
        assert code == 200
        code, _ = await daemon.get("/overload?source=shelly", headers={"Host": f"localhost:{port}"})
        assert code == 202
        _, _, sent = await world.proxy.wait_for_command("set_charging_amps", timeout=10.0)
        assert sent["charging_amps"] == 8
