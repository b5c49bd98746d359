"""Simulated PV, several cars behind one proxy, and a World whose meter reads export."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tesla_smart_charger.shelly.build import parse_em_status, parse_gen1_em_status
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.house import House
from tesla_smart_charger.simulator.pv import DAY, PvArray, solar_day
from tesla_smart_charger.simulator.world import World, settings_keys

VIN_A = "5YJ3E1EA7KF000001"
VIN_B = "5YJ3E1EA7KF000002"
NOON = 13 * 3600.0


# --- PV model ------------------------------------------------------------------------------


def test_pv_is_zero_at_night_and_peaks_near_midday() -> None:
    pv = PvArray(peak_kw=6.0, sky="clear", seed=3)
    assert pv.watts(3 * 3600) == 0.0
    assert pv.watts(22 * 3600) == 0.0
    assert pv.watts(-5) == 0.0
    assert pv.watts(DAY + 5) == 0.0
    # The clear-sky bell at its top (a thin cloud may dim a second, so take the best minute).
    best = max(pv.watts(NOON + s) for s in range(-60, 60))
    assert 4900.0 <= best <= 5100.0  # 6 kWp x derate 0.85
    assert pv.watts(8 * 3600) < best / 2


def test_same_seed_same_day_other_seed_other_clouds() -> None:
    a, b, c = solar_day("cloudy", seed=5), solar_day("cloudy", seed=5), solar_day("cloudy", seed=6)
    assert a.clouds == b.clouds
    assert [a.watts(t) for t in range(0, DAY, 37)] == [b.watts(t) for t in range(0, DAY, 37)]
    assert a.clouds != c.clouds


def test_cloudy_day_has_more_and_deeper_dips_and_less_energy() -> None:
    clear, cloudy = solar_day("clear", seed=1), solar_day("cloudy", seed=1)
    assert len(cloudy.clouds) > 3 * len(clear.clouds)
    assert cloudy.energy_kwh() < 0.8 * clear.energy_kwh()
    # A clear summer day on 6 kWp: roughly 35-45 kWh.
    assert 30.0 < clear.energy_kwh() < 48.0


def test_a_passing_cloud_dims_with_soft_edges_at_one_second_resolution() -> None:
    pv = solar_day("cloudy", seed=2)
    cloud = next(c for c in pv.clouds if 10 * 3600 < c.start < 16 * 3600 and c.opacity > 0.6)
    before = pv.fraction(cloud.start - 1)
    core = pv.fraction(cloud.start + cloud.edge + cloud.duration / 2)
    halfway = pv.fraction(cloud.start + cloud.edge / 2)
    assert core < before * (1.0 - cloud.opacity) + 0.02
    assert core < halfway < before  # the edge shades in gradually
    # Consecutive seconds inside the edge differ (1 s resolution, not a step per minute).
    edge = [pv.fraction(cloud.start + s) for s in range(int(cloud.edge))]
    assert len(set(edge)) > int(cloud.edge) // 2


def test_pv_amps_split_by_inverter_phases() -> None:
    one = PvArray(peak_kw=6.9, sky="clear", seed=1, phases=1)
    three = PvArray(peak_kw=6.9, sky="clear", seed=1, phases=3)
    a1, a3 = one.amps(NOON, 3), three.amps(NOON, 3)
    assert a1[1:] == (0.0, 0.0)
    assert a3[0] == a3[1] == a3[2]
    assert sum(a3) == pytest.approx(a1[0], abs=0.01)
    assert a1[0] == pytest.approx(one.watts(NOON) / 230.0, abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sky": "foggy"}, "sky"),
        ({"peak_kw": -1.0}, "peak_kw"),
        ({"phases": 4}, "phases"),
        ({"sunrise_h": 20.0, "sunset_h": 6.0}, "sunrise_h"),
    ],
)
def test_bad_pv_parameters_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PvArray(**kwargs)


# --- several cars behind one proxy ---------------------------------------------------------


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, json: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, url, json=json, headers=headers) as resp:
        return resp.status, await resp.json()


def test_two_cars_must_have_distinct_vins() -> None:
    with pytest.raises(ValueError, match="VIN"):
        World(cars=[CarModel(vin=VIN_A), CarModel(vin=VIN_A, numeric_id=2)])


async def test_one_proxy_routes_commands_and_reads_by_vin() -> None:
    a = CarModel(vin=VIN_A, numeric_id=1, request_amps=16, ramp_delay=0.0)
    b = CarModel(vin=VIN_B, numeric_id=2, request_amps=16, ramp_delay=0.0, display_name="B")
    async with World(cars=[a, b], manual_house=(5.0,)) as world, aiohttp.ClientSession() as s:
        assert world.car is a
        token, _ = world.oauth.issue_initial()
        base = world.urls["proxy"] + "/api/1/vehicles"
        status, body = await _call(s, "GET", base, token)
        assert status == 200
        assert [v["vin"] for v in body["response"]] == [VIN_A, VIN_B]
        assert body["count"] == 2
        status, body = await _call(
            s, "POST", f"{base}/{VIN_B}/command/set_charging_amps", token, {"charging_amps": 8}
        )
        assert (status, body["response"]["result"]) == (200, True)
        assert (a.request_amps, b.request_amps) == (16, 8)
        assert [e[2] for e in world.proxy.commands_for(VIN_B)] == [{"charging_amps": 8}]
        assert world.proxy.commands_for(VIN_A) == []
        status, body = await _call(s, "GET", f"{base}/2/vehicle_data?endpoints=charge_state", token)
        assert status == 200
        assert body["response"]["vin"] == VIN_B
        assert body["response"]["charge_state"]["charge_current_request"] == 8
        status, _ = await _call(s, "GET", f"{base}/5YJ3E1EA7KF000009", token)
        assert status == 404
        # Both cars draw on L1 of the one-phase supply: house 5 + 16 + 8 (after the ramp).
        await world.proxy.wait_until(lambda: True)
        world.feed()
        assert world.supply_amps()[0] == pytest.approx(5.0 + 16.0 + 8.0)
        assert world.proxy.billing.command == 1


def test_single_car_world_is_unchanged() -> None:
    car = CarModel(vin=VIN_A)
    world = World(car=car)
    assert world.cars == (car,)
    assert world.proxy.car is car
    assert world.proxy.cars == (car,)


# --- PV in the World: the meter reads export as a real one does -------------------------------


async def test_meter_reads_negative_supply_on_export_gen1() -> None:
    car = CarModel(vin=VIN_A, charging_state="Stopped")
    house = House(1, [], duration=DAY)
    pv = PvArray(peak_kw=6.0, sky="clear", seed=1)
    clock = [0.0]
    world = World(house=house, car=car, pv=pv, pv_offset=NOON, clock=lambda: clock[0])
    async with world, aiohttp.ClientSession() as s:
        world.feed()
        expected = -pv.amps(NOON, 1)[0]
        assert expected < -20.0
        async with s.get(world.urls["meter"] + "/status") as resp:
            status = await resp.json()
        meter = status["emeters"][0]
        assert meter["power"] < 0  # Gen1 signs power on export, like the recorded device
        assert meter["pf"] < 0
        (sample, _) = parse_gen1_em_status(status, 230.0)
        assert sample.amps == pytest.approx(expected, abs=0.3)


async def test_meter_reads_export_per_phase_pro3em() -> None:
    pv = PvArray(peak_kw=9.0, sky="clear", seed=1, phases=3)
    clock = [0.0]
    world = World(
        house=None,
        phases=3,
        meter_kind="pro3em",
        car=CarModel(vin=VIN_A, charging_state="Stopped"),
        pv=pv,
        pv_offset=NOON,
        manual_house=(2.0, 1.0, 1.0),
        clock=lambda: clock[0],
    )
    async with world, aiohttp.ClientSession() as s:
        world.feed()
        async with s.get(world.urls["meter"] + "/rpc/EM.GetStatus?id=0") as resp:
            em = await resp.json()
        assert em["a_act_power"] < 0
        assert em["a_current"] > 0  # the Pro 3EM reports current unsigned, power signed
        samples = parse_em_status(em)
        per_phase = pv.amps(NOON, 3)[0]
        assert [x.amps for x in samples] == pytest.approx(
            [2.0 - per_phase, 1.0 - per_phase, 1.0 - per_phase], abs=0.3
        )


def test_settings_keys_know_the_seed_keys() -> None:
    keys = settings_keys()
    assert {"homeMaxAmps", "teslaVehicleId", "chargerMinAmps"} <= keys


def test_one_phase_cars_draw_on_their_own_supply_phase() -> None:
    a = CarModel(vin=VIN_A, request_amps=16, ramp_delay=0.0)
    b = CarModel(vin=VIN_B, request_amps=10, ramp_delay=0.0, supply_phase=2)
    clock = [0.0]
    world = World(
        phases=3,
        meter_kind="pro3em",
        cars=[a, b],
        manual_house=(1.0, 2.0, 3.0),
        clock=lambda: clock[0],
    )
    assert world.supply_amps() == (17.0, 12.0, 3.0)
    assert [v.get("chargerPhase") for v in world.vehicles()] == [1, 2]
    # On a one-phase supply everything is L1, whatever the car's wiring says.
    assert b.phase_draw(0.0, 1) == (10.0,)
    with pytest.raises(ValueError, match="supply_phase"):
        CarModel(vin=VIN_A, supply_phase=4)
