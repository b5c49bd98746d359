"""Fixtures the setup-command tests share: a simulated token endpoint for the configured client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tesla_smart_charger.simulator.oauth import SimulatedOAuth
from tests.helpers.setup_cli import CLIENT, SECRET


@pytest.fixture
async def oauth() -> AsyncIterator[SimulatedOAuth]:
    sim = SimulatedOAuth(client_id=CLIENT, client_secret=SECRET)
    await sim.start()
    yield sim
    await sim.stop()
