"""The charge controller: a pure function of (state, event, now), split by concern.

- `state`: the state, the shell's events and actions, `ControlConfig`, shared helpers.
- `decide`: `decide()`, `next_deadline()`, `call_started()`; events both policies share.
- `push`: push mode (/overload calls). `measured`: the closed loop on the meter.
- `allocation`: sharing one supply between several cars.
- `escalation`: what to do when a cut does not land; `supervisor`: its part in the
  controller's loop (which effects the shell carries out, what it writes into the state).
"""

from tesla_smart_charger.control.decide import call_started, decide, next_deadline
from tesla_smart_charger.control.measured import house_estimate, unresolved_problem
from tesla_smart_charger.control.state import (
    EPS,
    FAILSAFE_LOOK_SECS,
    JUMP_AMPS,
    LIMIT_RETRY_SECS,
    METER_RESOLUTION,
    UNEXPLAINED_MIN_INTERVAL,
    VEHICLE_FRESH_SECS,
    VERIFY_INTERVAL,
    VERIFY_RETRY_SECS,
    VERIFY_TOLERANCE,
    Action,
    CommandDone,
    ControlConfig,
    ControllerEvent,
    ControllerState,
    Decision,
    Mode,
    RefreshVehicle,
    SetAmps,
    StartCharging,
    StopCharging,
    Tick,
    VehicleUnavailable,
    VehicleUpdate,
    initial_state,
)

__all__ = [
    "EPS",
    "FAILSAFE_LOOK_SECS",
    "JUMP_AMPS",
    "LIMIT_RETRY_SECS",
    "METER_RESOLUTION",
    "UNEXPLAINED_MIN_INTERVAL",
    "VEHICLE_FRESH_SECS",
    "VERIFY_INTERVAL",
    "VERIFY_RETRY_SECS",
    "VERIFY_TOLERANCE",
    "Action",
    "CommandDone",
    "ControlConfig",
    "ControllerEvent",
    "ControllerState",
    "Decision",
    "Mode",
    "RefreshVehicle",
    "SetAmps",
    "StartCharging",
    "StopCharging",
    "Tick",
    "VehicleUnavailable",
    "VehicleUpdate",
    "call_started",
    "decide",
    "house_estimate",
    "initial_state",
    "next_deadline",
    "unresolved_problem",
]
