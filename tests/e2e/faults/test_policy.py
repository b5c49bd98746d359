"""The retry policy, the coalescing queue, the scrubber and the controller's waits, in virtual time."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from tesla_smart_charger import control as core
from tesla_smart_charger.control.events import (
    MeterFailed,
    Overload,
    Reading,
    TokenRefreshed,
)
from tesla_smart_charger.control.models import (
    ChargeState,
    MeterReading,
    VehicleSnapshot,
    VehicleState,
)
from tesla_smart_charger.logging_setup import clear_secrets, register_secret, scrub
from tesla_smart_charger.retry import RetryPolicy, classify_status, describe_transport_error
from tesla_smart_charger.runtime.queue import EventQueue
from tests.helpers.e2e import WAIT_SECS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock, rand: float = 0.0, **kwargs: object) -> RetryPolicy:
    return RetryPolicy(
        "car link",
        clock=clock,
        wall=clock,
        rand=lambda: rand,
        logger=logging.getLogger("test.policy"),
        **kwargs,  # type: ignore[arg-type]
    )


# --- backoff ---------------------------------------------------------------------------------


def test_transient_failures_double_from_one_second_to_the_cap() -> None:
    clock = Clock()
    p = policy(clock)
    waits = [p.failure("transient", "refused") for _ in range(9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert not p.allowed()
    clock.now += 59.9
    assert not p.allowed()
    clock.now += 0.1
    assert p.allowed()


def test_jitter_only_lengthens_and_never_passes_the_cap() -> None:
    clock = Clock()
    p = policy(clock, rand=1.0)
    waits = [p.failure("transient", "refused") for _ in range(8)]
    assert waits[:3] == pytest.approx([1.2, 2.4, 4.8])
    assert max(waits) == 60


def test_a_fault_goes_straight_to_the_cap_and_counts_as_down() -> None:
    clock = Clock()
    p = policy(clock)
    assert p.failure("fault", "proxy answered HTTP 412") == 60
    assert p.health().state == "down"
    assert p.health().failures == 1


def test_rate_limit_waits_for_retry_after() -> None:
    clock = Clock()
    p = policy(clock)
    assert p.failure("rate_limited", "429", retry_after=300) == 300
    assert p.health().state == "degraded"
    assert p.wait_secs() == 300


def test_first_success_resets_everything() -> None:
    clock = Clock()
    p = policy(clock)
    for _ in range(5):
        p.failure("transient", "refused")
    clock.now += 100
    p.success()
    assert p.allowed()
    assert p.health().state == "ok"
    assert p.failure("transient", "refused") == 1


def test_sixty_seconds_of_a_dead_dependency_cost_at_most_seven_attempts() -> None:
    """The budget behind the fault tests: a caller that retries as soon as allowed."""
    clock = Clock()
    p = policy(clock, rand=0.0)
    attempts = 0
    end = clock.now + 60
    while clock.now <= end:
        if p.allowed():
            attempts += 1
            p.failure("transient", "refused")
        clock.now += 0.05
    assert attempts <= 7


# --- log once --------------------------------------------------------------------------------


def test_a_condition_is_logged_once_then_every_ten_minutes_then_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    p = policy(clock)
    with caplog.at_level(logging.INFO, logger="test.policy"):
        for _ in range(100):  # 100 failures over ~95 minutes
            p.failure("transient", "nothing listens on localhost:4443")
            clock.now += 57
        p.success()
    lines = [r.getMessage() for r in caplog.records]
    starts = [m for m in lines if "trying again in 1 s" in m]
    reminders = [m for m in lines if "still failing" in m]
    recovered = [m for m in lines if "works again" in m]
    assert len(starts) == 1
    assert 8 <= len(reminders) <= 10  # ~95 min / 10 min
    assert len(recovered) == 1
    assert "100 failed attempts" in recovered[0]
    assert "1.6 h" in recovered[0]  # 99 x 57 s
    assert all(r.levelno >= logging.WARNING for r in caplog.records if "failing" in r.getMessage())


def test_status_classes() -> None:
    assert classify_status(500) == "transient"
    assert classify_status(503) == "transient"
    assert classify_status(408) == "transient"
    assert classify_status(429) == "rate_limited"
    assert classify_status(404) == "fault"
    assert classify_status(412) == "fault"
    assert classify_status(401) is None
    assert classify_status(200) is None


async def test_errors_in_words_for_a_refused_port() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError) as caught:
            # Port 9 on loopback: nothing listens (discard is never enabled in CI containers).
            await session.get("http://127.0.0.1:9/", timeout=aiohttp.ClientTimeout(total=2))
    words = describe_transport_error(caught.value, host="127.0.0.1:9", service="tesla-http-proxy")
    assert words == "nothing listens on 127.0.0.1:9 (is tesla-http-proxy running?)"


def test_errors_in_words_for_a_timeout_and_a_dns_failure() -> None:
    assert "did not answer in time" in describe_transport_error(TimeoutError(), host="p:4443")
    import socket  # noqa: PLC0415

    err = aiohttp.ClientConnectorDNSError(
        aiohttp.client_reqrep.ConnectionKey(
            "fleet-auth.prd.vn.cloud.tesla.com", 443, True, True, None, None, None
        ),
        socket.gaierror(-2, "Name or service not known"),
    )
    assert describe_transport_error(err, host="fleet-auth.prd.vn.cloud.tesla.com:443") == (
        "cannot resolve the host name fleet-auth.prd.vn.cloud.tesla.com"
    )


# --- scrubbing --------------------------------------------------------------------------------


def test_scrub_masks_held_secrets_and_token_shaped_runs() -> None:
    clear_secrets()
    try:
        register_secret("my-refresh-token-0123")
        jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ"
        raw = (
            "bad token my-refresh-token-0123 / Bearer "
            + jwt
            + " / NA_ab12CD34ef56GH78ij90KL12mn34OP56"
        )
        text = scrub(raw)
        assert "my-refresh-token-0123" not in text
        assert "eyJ" not in text
        assert "ab12CD34" not in text
        # Ordinary text survives: paths, VINs, host names, long lowercase words.
        kept = "POST /api/1/vehicles/5YJ3E1EA7KF000001/command/set_charging_amps fleet-api.prd.na.vn.cloud.tesla.com"
        assert scrub(kept) == kept
    finally:
        clear_secrets()


# --- the coalescing queue ----------------------------------------------------------------------


def reading(at: float, amps: float = 10.0) -> Reading:
    return Reading(MeterReading((amps,), (230.0,), None, valid=True, at=at))


async def test_the_queue_keeps_one_event_per_kind_and_never_fills() -> None:
    queue = EventQueue()
    for i in range(100_000):
        queue.put_nowait(reading(float(i)))
        queue.put_nowait(Overload(at=float(i)))
    queue.put_nowait(MeterFailed(at=1.0, error="timeout"))
    queue.put_nowait(TokenRefreshed(at=2.0))
    assert queue.qsize() == 3
    first = await queue.get()
    assert isinstance(first, MeterFailed)  # the newest meter event, in the meter's place
    second = await queue.get()
    assert isinstance(second, Overload)
    assert second.at == 99_999.0
    assert isinstance(await queue.get(), TokenRefreshed)
    assert queue.empty()


async def test_a_waiting_consumer_is_woken() -> None:
    queue = EventQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(reading(1.0))
    async with asyncio.timeout(WAIT_SECS):
        got = await getter
    assert isinstance(got, Reading)


# --- the controller waits for the policy ---------------------------------------------------------


def push_cfg() -> core.ControlConfig:
    return core.ControlConfig(
        mode="push",
        home_max_amps=30,
        charger_min_amps=6,
        charger_max_amps=16,
        down_step=0.5,
        up_step=0.25,
        sleep_secs=20,
    )


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("error", "car link has a fault"),
        ("transient", "car link is down"),
        ("token", "token endpoint is failing"),
        ("rate_limited", "rate limits us"),
    ],
)
def test_a_failed_look_for_an_overload_waits_for_the_policy(kind: str, words: str) -> None:
    """No request storm: an overload whose look fails must not retry at once."""
    cfg = push_cfg()
    s = core.initial_state(0.0)
    d = core.decide(s, Overload(at=1.0), 1.0, cfg)
    assert isinstance(d.actions[0], core.RefreshVehicle)
    failed = core.VehicleUnavailable(kind, "detail", retry_after=8.0)  # type: ignore[arg-type]
    d = core.decide(d.state, failed, 1.5, cfg)
    assert d.state.overload_pending
    assert core.next_deadline(d.state, cfg) == pytest.approx(9.5)
    # Events before the wait ends send nothing.
    early = core.decide(d.state, Overload(at=3.0), 3.0, cfg)
    assert early.actions == ()
    tick = core.decide(d.state, core.Tick(), 9.5, cfg)
    assert isinstance(tick.actions[0], core.RefreshVehicle)
    assert words in tick.state.reason
    if kind != "rate_limited":
        assert "rate limit" not in tick.state.reason
    if kind == "token":
        assert "unreachable" not in d.state.reason


def test_push_restart_looks_at_the_car_before_raising() -> None:
    cfg = push_cfg()
    s = core.initial_state(0.0, setpoint=8, driver_amps=16)
    d = core.decide(s, core.Tick(), 25.0, cfg)
    assert d.actions == (core.RefreshVehicle(d.state.reason),)
    assert "before raising" in d.state.reason
    # The driver set 10 A meanwhile: that is the new wish, not our throttled 8 A.
    charge = ChargeState("Charging", 10, 32, 10, 1, 230)
    snap = VehicleSnapshot(VehicleState.ONLINE, charge, 25.5)
    d = core.decide(d.state, core.VehicleUpdate(snap), 25.5, cfg)
    assert d.state.setpoint == 10
    assert not any(isinstance(a, core.SetAmps) and a.amps > 10 for a in d.actions)


# --- malformed HTTP requests ---------------------------------------------------------------------


async def test_malformed_requests_do_not_log_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web  # noqa: PLC0415

    from tesla_smart_charger.logging_setup import MalformedRequestFilter  # noqa: PLC0415

    server_logger = logging.getLogger("aiohttp.server")
    flt = MalformedRequestFilter()
    server_logger.addFilter(flt)
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.server"):
            for raw in (
                b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                await writer.drain()
                assert (await reader.read(12)).startswith(b"HTTP/1.")
                writer.close()
        assert not [r for r in caplog.records if r.name == "aiohttp.server"]
    finally:
        server_logger.removeFilter(flt)
        await runner.cleanup()
