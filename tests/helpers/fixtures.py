"""Recorded device replies (tests/fixtures/) and the seed README's config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


# The seed README's example config.json, verbatim apart from the values a test overrides.
SEED_CONFIG: dict[str, Any] = {
    "homeMaxAmps": 30.0,
    "chargerMaxAmps": 25.0,
    "chargerMinAmps": 6.0,
    "downStepPercentage": 0.5,
    "upStepPercentage": 0.25,
    "sleepTimeSecs": 20,
    "energyMonitorIp": "ip-or-hostname",
    "energyMonitorType": "shelly-em",
    "hostIp": "ip-address",
    "apiPort": 8000,
    "teslaVehicleId": "12345678901234567",
    "teslaAccessToken": "seed-access-token-SECRET",
    "teslaRefreshToken": "seed-refresh-token-SECRET",
    "teslaHttpProxy": "http://localhost:4443",
    "teslaClientId": "12345678901234567",
}


def load_fixture(relative: str) -> Any:
    """Parse one recorded JSON reply from tests/fixtures/."""
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))
