"""The pure core's settings, copied out of the validated `Settings`.

The core (control/) never imports the settings' pydantic models: the shell builds its
`ControlConfig` here and hands it over, so a decision depends on plain numbers only.
"""

from __future__ import annotations

import math

from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.control.state import ControlConfig


def controller_config(s: Settings, *, measured: bool) -> ControlConfig:
    """The decision's settings; amps become whole numbers the car accepts."""
    return ControlConfig(
        mode="measured" if measured else "push",
        home_max_amps=s.home_max_amps,
        charger_min_amps=math.ceil(s.charger_min_amps),
        charger_max_amps=math.floor(s.charger_max_amps),
        down_step=s.down_step_percentage,
        up_step=s.up_step_percentage,
        sleep_secs=s.sleep_time_secs,
        safety_margin=s.safety_margin_amps,
        stale_secs=s.energy_monitor_stale_secs,
        settle_secs=s.car_settle_secs,
        vehicle_check_secs=s.vehicle_check_secs,
        pause_when_overloaded=s.pause_when_overloaded,
        pause_after_secs=s.pause_after_secs,
        supply_phases=0 if s.supply_phases == "auto" else s.supply_phases,
        charger_phase=s.charger_phase,
        charger_measured=s.energy_monitor_charger_channel is not None,
        solar_tolerance=s.solar_import_tolerance_amps,
        solar_start_secs=s.solar_start_secs,
        solar_stop_secs=s.solar_stop_secs,
        cloud_budget=None if s.tesla_ble_proxy else s.cloud_commands_per_hour,
        mains_voltage=s.mains_voltage,
    )
