"""A simulated Shelly served on 127.0.0.1 for one block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tesla_smart_charger.simulator.shelly import SimulatedShelly


@asynccontextmanager
async def running(sim: SimulatedShelly) -> AsyncIterator[str]:
    """Serve a simulated Shelly on 127.0.0.1 for the duration of the block; yields its URL."""
    url = await sim.start()
    try:
        yield url
    finally:
        await sim.stop()
