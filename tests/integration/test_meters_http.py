"""Shelly drivers over real HTTP on 127.0.0.1: the simulated devices and small local servers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.errors import ConfigError, MeterAuthError, MeterError
from tesla_smart_charger.shelly.build import ShellyMeter, create_meter
from tesla_smart_charger.shelly.http import THROTTLE_BACKOFF_SECS
from tesla_smart_charger.simulator.shelly import SimKind, SimulatedShelly
from tests.helpers.e2e import WAIT_SECS
from tests.helpers.fixtures import FIXTURES, load_fixture
from tests.helpers.shelly import running

PASSWORD = "s3cret-Meter-PW"
SHORT = aiohttp.ClientTimeout(total=0.3, connect=0.2)


@asynccontextmanager
async def local_server(routes: Mapping[str, Any]) -> AsyncIterator[str]:
    """A tiny device: each path answers a JSON body, or a (status, body text) pair."""

    async def handle(request: web.Request) -> web.Response:
        key = request.path_qs if request.path_qs in routes else request.path
        reply = routes.get(key)
        if reply is None:
            return web.json_response({"code": 404, "message": "not found"}, status=404)
        if isinstance(reply, tuple):
            return web.Response(status=reply[0], text=reply[1])
        return web.json_response(reply)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def settings(url: str | None, **extra: Any) -> Settings:
    return Settings(
        home_max_amps=30, tesla_vehicle_id="5YJ3E1EA7KF000001", energy_monitor_ip=url, **extra
    )


class Sleeps:
    """Records the throttle back-off instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, secs: float) -> None:
        self.calls.append(secs)


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert "s3cret" not in text


# --- Shelly EM Gen1 -----------------------------------------------------------------------------


async def test_gen1_em_without_auth(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", phase_amps=[12.0, -3.0])
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-em", clock=lambda: 42.0)
        reading = await meter.read()
    assert reading.valid
    assert reading.phase_amps == pytest.approx((9.0,), abs=0.01)
    assert reading.phase_volts == (230.0,)
    assert reading.at == 42.0
    assert sim.requests == 1  # the seed's type polls /status straight away, no detection


async def test_gen1_em_basic_auth(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", password=PASSWORD, user="owner", phase_amps=[7.5, 0.0])
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-em", user="owner", password=PASSWORD)
        first = await meter.read()
        second = await meter.read()
    assert first.phase_amps == pytest.approx((7.5,), abs=0.01)
    assert second.valid
    assert sim.requests == 2  # basic auth is sent up front: no 401 round trip


async def test_gen1_em_default_user_is_admin(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", password=PASSWORD)
    async with running(sim) as url:
        reading = await ShellyMeter(url, session, meter_type="shelly-em", password=PASSWORD).read()
    assert reading.valid


async def test_gen1_em_wrong_password(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = SimulatedShelly("em-gen1", password="the-right-one")
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-em", password=PASSWORD)
        with pytest.raises(MeterAuthError) as info:
            await meter.read()
    message = str(info.value)
    assert message.startswith(f"shelly-em@{url.removeprefix('http://')}: authentication failed")
    assert "energyMonitorPassword" in message
    assert_no_secret(message + repr(meter) + caplog.text)


async def test_gen1_em_password_missing(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", password=PASSWORD)
    async with running(sim) as url:
        with pytest.raises(
            MeterAuthError, match="authentication required: set energyMonitorPassword"
        ):
            await ShellyMeter(url, session, meter_type="shelly-em").read()


async def test_gen1_em_invalid_reading(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1")
    sim.set_valid(False)
    async with running(sim) as url:
        reading = await ShellyMeter(url, session, meter_type="shelly-em").read()
    assert not reading.valid
    assert reading.error == "channel 0 invalid: is_valid is false"


async def test_gen1_3em_from_local_server(session: aiohttp.ClientSession) -> None:
    status = {
        "emeters": [
            {"power": 2300.0, "current": 10.0, "voltage": 230.0, "is_valid": True},
            {"power": 460.0, "current": 2.0, "voltage": 230.0, "is_valid": True},
            {"power": -230.0, "current": 1.0, "voltage": 230.0, "is_valid": True},
        ]
    }
    async with local_server({"/status": status}) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-3em", supply_phases=3)
        reading = await meter.read()
    assert reading.phase_amps == (10.0, 2.0, -1.0)


# --- Shelly Pro 3EM, digest auth ------------------------------------------------------------------


async def test_pro3em_digest_auth(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", password=PASSWORD, phase_amps=[9.5, -2.0, 1.25])
    async with running(sim) as url:
        meter = ShellyMeter(
            url, session, meter_type="shelly-gen2", password=PASSWORD, supply_phases=3
        )
        reading = await meter.read()
        after_first = sim.requests
        await meter.read()
        after_second = sim.requests
    assert reading.phase_amps == (9.5, -2.0, 1.25)
    assert reading.phase_volts == (230.0, 230.0, 230.0)
    assert meter.kind == "em"
    assert after_first == 3  # /shelly, 401 challenge, authenticated retry
    assert after_second - after_first == 1  # preemptive once the nonce is known


async def test_pro3em_wrong_password(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = SimulatedShelly("pro3em", password="the-right-one")
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-gen2", password=PASSWORD)
        with pytest.raises(MeterAuthError) as info:
            await meter.read()
    host = url.removeprefix("http://")
    assert (
        str(info.value) == f"shelly-gen2@{host}: authentication failed: check energyMonitorPassword"
    )
    assert_no_secret(str(info.value) + repr(info.value) + repr(meter) + caplog.text)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_auth_failure_holds_off_the_device(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", password="the-right-one")
    clock = Clock()
    async with running(sim) as url:
        meter = ShellyMeter(url, session, password=PASSWORD, clock=clock, auth_retry_secs=30)
        with pytest.raises(MeterAuthError) as first:
            await meter.read()
        requests = sim.requests
        clock.now += 29
        with pytest.raises(MeterAuthError) as held:
            await meter.read()
        held_requests = sim.requests
        clock.now += 2
        with pytest.raises(MeterAuthError):
            await meter.read()
    assert str(held.value) == str(first.value)  # same text: the daemon logs it once
    assert held_requests == requests  # nobody knocked on the device meanwhile
    assert sim.requests > requests  # tried again after the hold-off


async def test_lockout_after_failed_logins_still_reports_auth(
    session: aiohttp.ClientSession,
) -> None:
    sim = SimulatedShelly("pro3em", password="the-right-one")
    clock = Clock()
    async with running(sim) as url:
        meter = ShellyMeter(url, session, password=PASSWORD, clock=clock, sleep=Sleeps())
        with pytest.raises(MeterAuthError):
            await meter.read()
        clock.now += 60
        sim.throttle_next = 10  # fw 2.x: too many failed authentication attempts
        with pytest.raises(MeterAuthError, match="refuses logins") as info:
            await meter.read()
    assert "energyMonitorPassword" in str(info.value)
    assert_no_secret(str(info.value))


async def test_right_password_after_fix_recovers(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", password=PASSWORD)
    clock = Clock()
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-em", password=PASSWORD, clock=clock)
        sim.set_password("changed-on-the-device")
        with pytest.raises(MeterAuthError):
            await meter.read()
        sim.set_password(PASSWORD)
        clock.now += 31
        reading = await meter.read()
    assert reading.valid


async def test_concurrent_reads_are_serialised(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", password=PASSWORD, phase_amps=[1.0, 2.0, 3.0])
    async with running(sim) as url:
        meter = ShellyMeter(url, session, password=PASSWORD, supply_phases=3)
        readings = await asyncio.gather(*(meter.read() for _ in range(5)))
        requests = sim.requests
    assert all(r.phase_amps == (1.0, 2.0, 3.0) for r in readings)
    assert requests == 3 + 4  # one detection and handshake, then one request per read


async def test_pro3em_password_missing(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", password=PASSWORD)
    async with running(sim) as url:
        with pytest.raises(MeterAuthError, match="set energyMonitorPassword"):
            await ShellyMeter(url, session, meter_type="shelly").read()


async def test_pro3em_429_drops_the_nonce_and_retries_once(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", password=PASSWORD, phase_amps=[4.0, 5.0, 6.0])
    sleeps = Sleeps()
    async with running(sim) as url:
        meter = ShellyMeter(url, session, password=PASSWORD, supply_phases=3, sleep=sleeps)
        await meter.read()
        before = sim.requests
        sim.throttle_next = 1
        reading = await meter.read()
        requests = sim.requests - before
    assert reading.phase_amps == (4.0, 5.0, 6.0)
    assert sleeps.calls == [THROTTLE_BACKOFF_SECS]
    assert THROTTLE_BACKOFF_SECS < 1.0  # well under the 1 s poll period
    # 429 on the preemptive request, then a fresh handshake: 401 challenge and the retry.
    assert requests == 3
    assert sim.throttle_next == 0


async def test_pro3em_second_429_is_a_meter_error(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em", password=PASSWORD)
    sleeps = Sleeps()
    async with running(sim) as url:
        meter = ShellyMeter(url, session, password=PASSWORD, supply_phases=3, sleep=sleeps)
        await meter.read()
        sim.throttle_next = 5
        with pytest.raises(MeterError, match="429") as info:
            await meter.read()
        sim.throttle_next = 0
        recovered = await meter.read()  # the next poll starts over cleanly
    assert not isinstance(info.value, MeterAuthError)
    assert len(sleeps.calls) == 1
    assert recovered.valid


async def test_pro3em_phase_errors_make_the_reading_invalid(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em")
    sim.set_valid(False)
    async with running(sim) as url:
        reading = await ShellyMeter(url, session, supply_phases=3).read()
    assert not reading.valid
    assert reading.error is not None
    assert reading.error.startswith("channel 0 invalid: phase a errors")


async def test_pro3em_fixture_acceptance_via_create_meter(session: aiohttp.ClientSession) -> None:
    """A device serving the recorded pro3em_em_status.json reads as [9.592, 0.044, 1.479]."""
    sim = SimulatedShelly.from_fixture("pro3em", FIXTURES / "shelly/pro3em_em_status.json")
    async with running(sim) as url:
        meter = create_meter(
            settings(url, energy_monitor_type="shelly", supply_phases=3), session, clock=lambda: 7.0
        )
        reading = await meter.read()
    assert list(reading.phase_amps) == [9.592, 0.044, 1.479]
    assert reading.at == 7.0


# --- detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "detected"), [("em-gen1", "shelly-em"), ("pro3em", "em")])
async def test_detection_via_shelly_endpoint(
    session: aiohttp.ClientSession, kind: SimKind, detected: str
) -> None:
    sim = SimulatedShelly(kind)
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly")
        assert meter.kind is None
        await meter.read()
        await meter.read()
        requests = sim.requests
    assert meter.kind == detected
    assert requests == 3  # /shelly once, then one status request per read


async def test_gen2_type_on_a_gen1_device_still_works(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", phase_amps=[5.0, 0.0])
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-gen2")
        reading = await meter.read()
    assert meter.kind == "shelly-em"
    assert reading.phase_amps == pytest.approx((5.0,), abs=0.01)


async def test_em1_device_reads_both_channels(session: aiohttp.ClientSession) -> None:
    em1 = load_fixture("shelly/proem_em1_status.json")
    routes = {
        "/shelly": {"gen": 2, "app": "ProEM", "id": "shellyproem50-x", "auth_en": False},
        "/rpc/EM1.GetStatus?id=0": em1,
        "/rpc/EM1.GetStatus?id=1": dict(em1, id=1, current=16.0, act_power=3680.0),
    }
    async with local_server(routes) as url:
        meter = ShellyMeter(url, session, charger_channel=1)
        reading = await meter.read()
    assert meter.kind == "em1"
    assert reading.phase_amps == (-1.473,)
    assert reading.car_amps == 16.0


async def test_switch_device(session: aiohttp.ClientSession) -> None:
    routes = {
        "/shelly": {"gen": 2, "app": "Plus1PM"},
        "/rpc/Switch.GetStatus?id=0": load_fixture("shelly/plus1pm_switch_status.json"),
    }
    async with local_server(routes) as url:
        reading = await ShellyMeter(url, session).read()
    assert reading.phase_amps == (0.0,)
    assert reading.phase_volts == (232.8,)


async def test_unsupported_device_is_a_meter_error_and_not_cached(
    session: aiohttp.ClientSession,
) -> None:
    async with local_server({"/shelly": {"type": "SHSW-1"}}) as url:
        meter = ShellyMeter(url, session)
        with pytest.raises(MeterError, match="cannot tell the device from /shelly: type"):
            await meter.read()
    assert meter.kind is None


# --- failures become one-line MeterErrors ------------------------------------------------------


async def test_hanging_device_times_out(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1")
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-em", timeout=SHORT)
        await meter.read()
        sim.set_responding(False)
        started = time.monotonic()
        with pytest.raises(MeterError, match=r"no answer from /status within 0\.3 s"):
            await meter.read()
        elapsed = time.monotonic() - started
        sim.set_responding(True)
        recovered = await meter.read()
    assert elapsed < WAIT_SECS  # a hang without the timeout would last until set_responding(True)
    assert recovered.valid


async def test_device_dropping_the_connection(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("pro3em")
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly", supply_phases=3, timeout=SHORT)
        await meter.read()
        sim.set_responding(False, hang=False)
        with pytest.raises(MeterError, match=r"cannot reach /rpc/EM\.GetStatus"):
            await meter.read()


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1")
    async with running(sim) as url:
        pass  # the port is free again
    meter = ShellyMeter(url, session, meter_type="shelly-em", timeout=SHORT)
    with pytest.raises(MeterError, match=r"^shelly-em@127\.0\.0\.1:\d+: cannot reach /status"):
        await meter.read()


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"/status": (200, "<html>")}, "/status did not return JSON"),
        ({"/status": (500, "oops")}, "/status answered HTTP 500"),
        ({"/shelly": {"gen": 2}}, "/status answered HTTP 404 (a Gen2+ device?"),
        ({"/status": {"emeters": [{"power": 1.0}]}}, "bad reply to /status: emeters[0].reactive"),
        ({"/status": {"foo": 1}}, "bad reply to /status: emeters"),
    ],
)
async def test_bad_replies(
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    routes: Mapping[str, Any],
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with local_server(routes) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-em")
        with pytest.raises(MeterError) as info:
            await meter.read()
    assert str(info.value).startswith(f"{meter.name}: {message}")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_gen2_rpc_error_status(session: aiohttp.ClientSession) -> None:
    routes = {"/shelly": {"gen": 2, "app": "Pro3EM", "profile": "triphase"}}
    async with local_server(routes) as url:
        with pytest.raises(MeterError, match=r"/rpc/EM\.GetStatus answered HTTP 404"):
            await ShellyMeter(url, session).read()


async def test_channel_index_beyond_device(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1")
    async with running(sim) as url:
        meter = create_meter(settings(url, energy_monitor_charger_channel=3), session)
        with pytest.raises(
            MeterError, match=r"energyMonitorChargerChannel: channel 3 does not exist"
        ):
            await meter.read()


# --- create_meter ------------------------------------------------------------------------------


def test_create_meter_needs_an_address() -> None:
    with pytest.raises(ConfigError, match="energyMonitorIp"):
        create_meter(settings(None), session=None)  # type: ignore[arg-type]


async def test_create_meter_wires_the_settings(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", password=PASSWORD, user="owner", phase_amps=[20.0, 16.0])
    async with running(sim) as url:
        conf = settings(
            url.removeprefix("http://"),
            energy_monitor_user="owner",
            energy_monitor_password=PASSWORD,
            energy_monitor_charger_channel=1,
        )
        meter = create_meter(conf, session)
        reading = await meter.read()
    assert meter.name == f"shelly-em@{url.removeprefix('http://')}"
    assert reading.phase_amps == pytest.approx((20.0,), abs=0.01)
    assert reading.car_amps == pytest.approx(16.0, abs=0.01)
    assert_no_secret(repr(meter) + meter.name)


@pytest.mark.parametrize(
    ("base", "name"),
    [
        ("http://192.0.2.10", "shelly-em@192.0.2.10"),
        ("http://shelly.local:8080", "shelly-em@shelly.local:8080"),
    ],
)
def test_meter_name(base: str, name: str) -> None:
    make: Callable[..., ShellyMeter] = ShellyMeter
    meter = make(base, None, meter_type="shelly-em", password=PASSWORD)
    assert meter.name == name
    assert_no_secret(repr(meter))
