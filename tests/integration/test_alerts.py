"""The alert webhook sender against a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import aiohttp
import pytest
from tenacity import wait_none

from tesla_smart_charger.runtime.alerts import AlertSender
from tests.helpers.webhook import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    try:
        yield rec
    finally:
        await rec.stop()


@asynccontextmanager
async def delivering(sender: AlertSender) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sender.run())
    try:
        yield task
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()  # the loop never died on its own


async def drained(sender: AlertSender, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        await sender.drain()


async def test_one_post_per_alert_with_the_documented_body(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sender = AlertSender(session, receiver.url, wall_clock=lambda: 1_790_000_000.0)
    async with delivering(sender):
        sender.send("charge_stop", "charging stopped", house_amps=[36.04, 2.0], limit=30)
        sender.send("relay_off", "circuit off", house_amps=[35.0], limit=30)
        await drained(sender)
        assert sender.sent == 2
    assert receiver.bodies[0] == {
        "event": "charge_stop",
        "message": "charging stopped",
        "at": "2026-09-21T14:13:20+00:00",
        "house_amps": [36.0, 2.0],
        "limit": 30,
    }
    assert dt.datetime.fromisoformat(receiver.bodies[1]["at"]).tzinfo is not None
    assert [b["event"] for b in receiver.bodies] == ["charge_stop", "relay_off"]
    assert receiver.requests == 2


async def test_webhook_down_bounded_retries_then_logged_once(
    session: aiohttp.ClientSession, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tesla_smart_charger.runtime.alerts")
    receiver.status = 503
    sender = AlertSender(session, receiver.url, attempts=3, retry_wait=wait_none())
    async with delivering(sender):
        sender.send("a", "first", house_amps=[31], limit=30)
        sender.send("b", "second", house_amps=[31], limit=30)
        await drained(sender)
        assert sender.failed == 2
        assert receiver.requests == 6  # 3 attempts each, no more
        receiver.status = 200
        sender.send("c", "third", house_amps=[20], limit=30)
        await drained(sender)
        assert sender.sent == 1
    warnings = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(warnings) == 1
    assert sum("accepts alerts again" in r.getMessage() for r in caplog.records) == 1
    assert all("SECRET" not in r.getMessage() for r in caplog.records)
    assert sender.as_dict()["failing"] is False


async def test_a_wrong_url_is_not_retried(
    session: aiohttp.ClientSession, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 404
    sender = AlertSender(session, receiver.url, attempts=4, retry_wait=wait_none())
    async with delivering(sender):
        sender.send("a", "x", house_amps=[1], limit=30)
        await drained(sender)
        assert sender.failed == 1
    assert receiver.requests == 1
    assert any("check alertWebhook" in r.getMessage() for r in caplog.records)


async def test_a_hanging_webhook_never_blocks_the_caller(
    session: aiohttp.ClientSession, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hang = True
    sender = AlertSender(
        session,
        receiver.url,
        queue_size=3,
        attempts=1,
        timeout=aiohttp.ClientTimeout(total=30),
    )
    async with delivering(sender):
        sender.send("first", "in flight", house_amps=[31], limit=30)
        await receiver.wait_for(lambda: receiver.requests == 1)
        for i in range(10):  # synchronous: nothing to await, the webhook is not waited for
            queued = sender.send(f"e{i}", "queued", house_amps=[31], limit=30)
            assert not inspect.isawaitable(queued)
        assert sender.queued == 3
        assert sender.dropped == 8  # the in-flight alert and the 7 oldest queued
        assert receiver.requests == 1
    assert sum("dropping the oldest" in r.getMessage() for r in caplog.records) == 1


async def test_webhook_refusing_connections_counts_failures(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    url = receiver.url
    await receiver.stop()
    sender = AlertSender(session, url, attempts=2, retry_wait=wait_none())
    async with delivering(sender):
        sender.send("a", "x", house_amps=[1], limit=30)
        await drained(sender)
        assert sender.failed == 1
    assert sender.sent == 0
    assert "SECRET" not in repr(sender)


def test_bad_sizes_are_rejected(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AlertSender(session, "http://127.0.0.1:9/x", queue_size=0)
