"""A test client of the real broker: what it saw, and publishing as Home Assistant would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiomqtt
import pytest


@dataclass
class Seen:
    """Messages a test client received, in order: (time, topic, payload, retain)."""

    messages: list[tuple[float, str, str, bool]] = field(default_factory=list)

    def last(self, topic: str) -> str | None:
        for _, t, payload, _ in reversed(self.messages):
            if t == topic:
                return payload
        return None

    def on(self, topic: str) -> list[tuple[float, str, str, bool]]:
        return [m for m in self.messages if m[1] == topic]


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` until true; fail naming `what` after `timeout`. Returns the time taken."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@asynccontextmanager
async def watching(port: int, *topics: str) -> AsyncIterator[Seen]:
    """A test client subscribed to `topics`, collecting into a Seen."""
    seen = Seen()
    async with aiomqtt.Client("127.0.0.1", port, timeout=5) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for m in client.messages:
                payload = m.payload.decode() if isinstance(m.payload, bytes) else str(m.payload)
                seen.messages.append((time.monotonic(), m.topic.value, payload, m.retain))

        task = asyncio.create_task(collect())
        try:
            yield seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def publish(port: int, topic: str, payload: str, *, retain: bool = False) -> None:
    """Publish one message as Home Assistant would."""
    async with aiomqtt.Client("127.0.0.1", port, timeout=5) as client:
        await client.publish(topic, payload, qos=1, retain=retain)
