"""A typed /status document for tests that need one without a running daemon."""

from __future__ import annotations

from typing import Any

from tesla_smart_charger.runtime.status import (
    CapacityView,
    DaemonStatus,
    GridLimitSource,
    GridLimitView,
)

VIN = "5YJ3E7EB2KF000001"

# Measured mode, three phases, the car charging at 12 A under a 16 A driver's setting.
SAMPLE: dict[str, Any] = {
    "vehicle": {
        "state": "online",
        "charging_state": "Charging",
        "amps_actual": 12,
        "amps_requested": 16,
        "checked_secs_ago": 3.0,
    },
    "controller": {
        "mode": "measured",
        "charge_mode": "fast",
        "target_amps": 12,
        "setpoint_amps": 12,
        "driver_amps": 16,
        "driver_limit_amps": 16,
        "reason": "holding 12 A: house leaves 12.4 A",
        "failsafe": False,
        "paused": False,
        "rate_limited_for_secs": 0.0,
        "car_calls_wait_secs": 0.0,
        "car_calls_wait_reason": None,
        "command_in_flight": False,
        "escalation": "none",
    },
    "last_command": None,
    "vehicles": [
        {
            "vin": VIN,
            "name": None,
            "mode": "fast",
            "state": "online",
            "charging_state": "Charging",
            "setpoint_amps": 12,
            "target_amps": 12,
            "driver_amps": 16,
            "driver_limit_amps": 16,
            "reason": "holding 12 A: house leaves 12.4 A",
            "escalation": "none",
        }
    ],
    "api_calls": {
        "data": 3,
        "command": 2,
        "wake": 0,
        "by_outcome": {},
        "cost_usd": 0.008,
        "cost_last_24h_usd": 0.008,
    },
    "auth": {"state": "ok", "access_expires_in_secs": 3600, "last_refresh_at": None},
    "meter": {
        "type": "shelly-3em",
        "name": "shelly",
        "amps": [11.63, 20.4, 9.0],
        "phases": 3,
        "volts": [230.0, 231.0, 229.0],
        "car_amps": None,
        "age_secs": 0.4,
        "valid": True,
        "error": None,
        "supply_phases": 3,
    },
    "daemon": {"version": "2.0.0", "uptime_secs": 12.0},
    "breaker": None,
    "dependencies": {
        "car_link": {"state": "ok", "since": None, "last_error": None, "failures": 0},
        "token_endpoint": {"state": "ok", "since": None, "last_error": None, "failures": 0},
        "token_store": {"state": "ok", "since": None, "last_error": None, "failures": 0},
        "tasks": {"state": "ok", "since": None, "last_error": None, "failures": 0},
    },
}


def sample_status(**changes: dict[str, Any] | None) -> DaemonStatus:
    """SAMPLE as the model, each top-level part in `changes` updated key by key (None: null)."""
    doc = {key: value.copy() if isinstance(value, dict) else value for key, value in SAMPLE.items()}
    for key, part in changes.items():
        doc[key] = None if part is None else {**(doc.get(key) or {}), **part}
    return DaemonStatus.model_validate(doc)


def capacity_and_grid_limit() -> tuple[CapacityView, GridLimitView]:
    """A capacity window and an active grid limit, as /status shows them when configured."""
    capacity = CapacityView(
        limit_kw=2.5,
        window_mins=15,
        window_start="2026-12-03T18:15:00+01:00",
        window_avg_kw=2.1,
        projection_kw=2.4,
        last_window_kw=None,
        month_peak_kw=2.45,
        import_ceiling_kw=1.2,
        active=True,
    )
    grid = GridLimitView(
        active=True,
        source="input",
        since=None,
        limit_kw=4.2,
        car_kw=4.2,
        reason="the Shelly input on the control box is on",
        lost=[],
        sources={"input": GridLimitSource(state="active", detail=None)},
    )
    return capacity, grid
