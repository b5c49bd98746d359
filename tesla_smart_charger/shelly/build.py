"""Meter drivers behind the `api.Meter` protocol, built from the configuration."""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from tesla_smart_charger.config.settings import Settings
from tesla_smart_charger.control import interfaces as api
from tesla_smart_charger.errors import ConfigError
from tesla_smart_charger.shelly.http import MAX_REPLY_BYTES
from tesla_smart_charger.shelly.meter import (
    PLAUSIBLE_FACTOR,
    ChannelSample,
    ShellyMeter,
    check_plausible,
    compose_reading,
    detect_kind,
    parse_em1_status,
    parse_em_status,
    parse_gen1_3em_status,
    parse_gen1_em_status,
    parse_switch_status,
)

__all__ = [
    "MAX_REPLY_BYTES",
    "PLAUSIBLE_FACTOR",
    "ChannelSample",
    "ShellyMeter",
    "check_plausible",
    "compose_reading",
    "create_meter",
    "detect_kind",
    "parse_em1_status",
    "parse_em_status",
    "parse_gen1_3em_status",
    "parse_gen1_em_status",
    "parse_switch_status",
]


def create_meter(
    settings: Settings,
    session: aiohttp.ClientSession,
    clock: Callable[[], float] = time.monotonic,
) -> api.Meter:
    """The meter `energyMonitorType` names, on the shared session; nothing is sent yet."""
    if settings.energy_monitor_ip is None:
        raise ConfigError(["energyMonitorIp: required in measured mode (the meter's address)"])
    password = settings.energy_monitor_password
    cars = settings.vehicles or ()
    own = [v.meter_charger_channel for v in cars if v.meter_charger_channel is not None]
    charger = settings.energy_monitor_charger_channel
    if len(cars) == 1 and own:
        charger, own = own[0], []  # one car: its own channel is the charger channel
    return ShellyMeter(
        settings.energy_monitor_ip,
        session,
        meter_type=settings.energy_monitor_type,
        user=settings.energy_monitor_user,
        password=password.get_secret_value() if password is not None else None,
        supply_channels=settings.energy_monitor_supply_channels,
        charger_channel=charger,
        car_channels=own,
        supply_phases=settings.supply_phases,
        mains_voltage=settings.mains_voltage,
        clock=clock,
        max_amps=PLAUSIBLE_FACTOR * settings.home_max_amps,
    )
