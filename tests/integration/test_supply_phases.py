"""supplyPhases auto: the meter's own profile decides how many supply phases there are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.config.control import controller_config
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.shelly.build import create_meter
from tesla_smart_charger.shelly.meter import ShellyMeter, phases_of
from tesla_smart_charger.simulator.shelly import SimulatedShelly
from tests.helpers.fixtures import FIXTURES
from tests.helpers.shelly import running

WriteConfig = Callable[..., Path]


async def test_pro3em_triphase_with_supply_phases_unset_reads_three_phases(
    write_config: WriteConfig, session: aiohttp.ClientSession
) -> None:
    sim = SimulatedShelly.from_fixture("pro3em", FIXTURES / "shelly/pro3em_em_status.json")
    async with running(sim) as url:
        config = write_config(energyMonitorIp=url, energyMonitorType="shelly-gen2")
        settings = load_config(config).settings
        assert settings.supply_phases == "auto"
        assert controller_config(settings, measured=True).supply_phases == 0
        meter = create_meter(settings, session)
        reading = await meter.read()
    assert reading.phase_amps == pytest.approx((9.592, 0.044, 1.479))


async def test_explicit_one_phase_still_sums_a_pro3em(
    write_config: WriteConfig, session: aiohttp.ClientSession
) -> None:
    sim = SimulatedShelly.from_fixture("pro3em", FIXTURES / "shelly/pro3em_em_status.json")
    async with running(sim) as url:
        config = write_config(energyMonitorIp=url, energyMonitorType="shelly-gen2", supplyPhases=1)
        reading = await create_meter(load_config(config).settings, session).read()
    assert reading.phase_amps == pytest.approx((9.592 + 0.044 + 1.479,))


async def test_gen1_em_auto_is_one_phase(session: aiohttp.ClientSession) -> None:
    sim = SimulatedShelly("em-gen1", phase_amps=[7.5, 2.5])
    async with running(sim) as url:
        meter = ShellyMeter(url, session, meter_type="shelly-em", supply_phases="auto")
        reading = await meter.read()
    assert reading.phase_amps == pytest.approx((10.0,))


def test_phases_of_each_kind() -> None:
    assert phases_of("em") == 3
    assert phases_of("shelly-3em") == 3
    for kind in ("shelly-em", "em1", "switch"):
        assert phases_of(kind) == 1


@pytest.mark.parametrize(("given", "expected"), [("auto", "auto"), (3, 3), ("3", 3), ("1", 1)])
def test_supply_phases_accepts_auto_and_numbers(
    write_config: WriteConfig, given: object, expected: object
) -> None:
    assert load_config(write_config(supplyPhases=given)).settings.supply_phases == expected
