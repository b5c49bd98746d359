"""The simulated car: ramps, the sub-5 A rule, falling asleep, refusals, billing."""

from __future__ import annotations

import pytest

from tesla_smart_charger.simulator.car import BillingCounter, CarModel
from tests.helpers.fixtures import load_fixture


def charging_car(**overrides: object) -> CarModel:
    """A car charging at 16 A, advanced to t=0."""
    car = CarModel(**overrides)  # type: ignore[arg-type]
    car.advance(0.0)
    return car


def test_default_car_is_settled_at_its_request() -> None:
    car = charging_car()
    assert car.charging
    assert car.current_draw(0.0) == 16.0
    assert car.charge_state_json()["charger_actual_current"] == 16


def test_actual_current_follows_a_new_request_after_the_ramp_delay() -> None:
    car = charging_car(ramp_delay=2.0)
    status, body = car.command("set_charging_amps", {"charging_amps": 10}, 0.0)
    assert (status, body["response"]) == (200, {"result": True, "reason": ""})
    assert car.request_amps == 10  # the request changes at once...
    assert car.current_draw(1.99) == 16.0  # ...the current only after the ramp
    assert car.current_draw(2.0) == 10.0


def test_queued_requests_land_in_order() -> None:
    car = charging_car(ramp_delay=2.0)
    car.command("set_charging_amps", {"charging_amps": 10}, 0.0)
    car.command("set_charging_amps", {"charging_amps": 12}, 1.0)
    assert car.current_draw(2.5) == 10.0
    assert car.current_draw(3.0) == 12.0


def test_actual_never_exceeds_the_pilot() -> None:
    car = charging_car(pilot_amps=20, ramp_delay=1.0)
    car.command("set_charging_amps", {"charging_amps": 32}, 0.0)
    assert car.request_amps == 20
    assert car.current_draw(5.0) == 20.0
    car.set_pilot(13, 6.0)  # a hot cable: the EVSE lowers its limit
    assert car.current_draw(7.0) == 13.0


def test_single_sub_5_request_lands_at_5_and_a_repeat_applies_it() -> None:
    car = charging_car(ramp_delay=0.0)
    car.command("set_charging_amps", {"charging_amps": 3}, 0.0)
    assert car.request_amps == 5
    car.command("set_charging_amps", {"charging_amps": 3}, 1.0)
    assert car.request_amps == 3
    assert car.current_draw(1.0) == 3.0
    car.command("set_charging_amps", {"charging_amps": 2}, 2.0)  # a different value: 5 again
    assert car.request_amps == 5


def test_sub_5_double_send_only_works_while_charging() -> None:
    car = charging_car(charging_state="Stopped")
    car.command("set_charging_amps", {"charging_amps": 3}, 0.0)
    car.command("set_charging_amps", {"charging_amps": 3}, 1.0)
    assert car.request_amps == 5


def test_replug_resets_a_sub_5_request() -> None:
    car = charging_car(ramp_delay=0.0)
    car.command("set_charging_amps", {"charging_amps": 2}, 0.0)
    car.command("set_charging_amps", {"charging_amps": 2}, 1.0)
    car.unplug(2.0)
    assert car.current_draw(2.0) == 0.0
    car.plug_in(3.0)
    assert car.request_amps == 5
    assert car.current_draw(3.0) == 5.0


def test_zero_amps_pauses_but_keeps_the_session_and_the_car_awake() -> None:
    car = charging_car(ramp_delay=1.0, sleep_after=600.0)
    car.command("set_charging_amps", {"charging_amps": 0}, 0.0)
    assert car.current_draw(1.0) == 0.0
    assert car.charging_state == "Charging"
    car.advance(5000.0)
    assert car.state == "online"


def test_car_falls_asleep_after_being_idle() -> None:
    car = charging_car(ramp_delay=1.0, sleep_after=600.0)
    car.command("charge_stop", {}, 0.0)
    assert car.current_draw(0.5) == 16.0  # still ramping down
    assert car.current_draw(1.0) == 0.0
    car.advance(599.0)
    assert car.state == "online"
    car.advance(600.0)
    assert car.vehicle_json()["state"] == "asleep"
    assert car.wakes == 0


def test_data_reads_keep_an_idle_car_awake_unless_disabled() -> None:
    awake = charging_car(charging_state="Stopped", sleep_after=600.0)
    sleepy = charging_car(charging_state="Stopped", sleep_after=600.0, data_keeps_awake=False)
    for t in range(0, 1200, 300):
        awake.touch(float(t))
        sleepy.touch(float(t))
    awake.advance(1200.0)
    sleepy.advance(1200.0)
    assert awake.state == "online"
    assert sleepy.state == "asleep"


@pytest.mark.parametrize(
    ("setup", "command", "reason"),
    [
        ({}, "charge_start", "is_charging"),
        ({"charging_state": "Stopped"}, "charge_stop", "not_charging"),
        ({"charging_state": "Complete"}, "charge_start", "complete"),
        ({"plugged": False}, "charge_start", "disconnected"),
    ],
)
def test_refusals_use_teslas_reasons(setup: dict[str, object], command: str, reason: str) -> None:
    car = charging_car(**setup)
    status, body = car.command(command, {}, 1.0)
    assert status == 200
    assert body["response"] == {
        "result": False,
        "reason": f"car could not execute command: {reason}",
    }


def test_refusal_matches_the_recorded_reply() -> None:
    car = charging_car()
    assert car.command("charge_start", {}, 1.0) == (200, load_fixture("tesla/command_refused.json"))


def test_stop_then_start_resumes_after_the_ramp() -> None:
    car = charging_car(ramp_delay=2.0)
    car.command("charge_stop", {}, 0.0)
    assert car.current_draw(3.0) == 0.0
    assert car.command("charge_start", {}, 10.0)[0] == 200
    assert car.current_draw(11.0) == 0.0
    assert car.current_draw(12.0) == 16.0


@pytest.mark.parametrize("state", ["asleep", "offline"])
def test_command_to_an_unavailable_car_is_500_and_does_not_wake_it(state: str) -> None:
    car = charging_car(state=state)
    status, body = car.command("set_charging_amps", {"charging_amps": 8}, 1.0)
    assert status == 500
    assert body == load_fixture("tesla/vehicle_data_unavailable_408.json")
    assert car.state == state
    assert car.wakes == 0


def test_wake_is_counted_and_brings_a_sleeping_car_online() -> None:
    car = charging_car(state="asleep")
    assert car.wake(1.0) is True
    assert car.state == "online"
    assert car.wakes == 1
    status, body = car.command("wake_up", {}, 2.0)
    assert status == 200
    assert body["response"]["state"] == "online"
    assert car.wakes == 2


def test_offline_car_cannot_be_woken() -> None:
    car = charging_car(state="offline")
    assert car.wake(1.0) is False
    assert car.wakes == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "missing charging_amps param"),
        ({"charging_amps": "ten"}, "invalid charging_amps param"),
        ({"charging_amps": -1}, "invalid charging_amps param"),
    ],
)
def test_bad_charging_amps_is_400(body: dict[str, object], reason: str) -> None:
    car = charging_car()
    status, reply = car.command("set_charging_amps", body, 1.0)
    assert status == 400
    assert reply["response"] == {"result": False, "reason": reason}
    assert car.request_amps == 16


def test_reaching_the_charge_limit_completes_the_session() -> None:
    # 10 kWh battery at 79 %: 0.1 kWh to go at 16 A x 230 V (3.68 kW) is ~98 s.
    car = charging_car(capacity_kwh=10.0, battery_level=79.0, charge_limit_soc=80)
    car.advance(90.0)
    assert car.charging_state == "Charging"
    car.advance(100.0)
    assert car.charging_state == "Complete"
    assert car.current_draw(100.0) == 0.0
    assert car.energy_added_kwh == pytest.approx(0.1)
    assert car.command("charge_start", {}, 101.0)[1]["response"]["reason"].endswith("complete")


def test_time_never_runs_backwards() -> None:
    car = charging_car(ramp_delay=1.0)
    car.command("set_charging_amps", {"charging_amps": 8}, 5.0)
    assert car.current_draw(10.0) == 8.0
    assert car.current_draw(3.0) == 8.0


def test_phase_draw_maps_the_car_onto_supply_phases() -> None:
    single = charging_car()
    three = charging_car(phases=3)
    assert single.phase_draw(0.0, 3) == (16.0, 0.0, 0.0)
    assert three.phase_draw(0.0, 3) == (16.0, 16.0, 16.0)
    assert three.phase_draw(0.0, 1) == (16.0,)


def test_json_shapes_have_every_fixture_key() -> None:
    car = charging_car()
    stopped = load_fixture("tesla/vehicle_data_charge_state_stopped.json")["response"]
    charging = load_fixture("tesla/charge_state_charging.json")["response"]["charge_state"]
    asleep = load_fixture("tesla/vehicle_asleep.json")["response"]
    charge = car.charge_state_json()
    assert set(stopped["charge_state"]) <= set(charge)
    assert set(charging) <= set(charge)
    vehicle_keys = set(stopped) - {"charge_state"}
    assert vehicle_keys | set(asleep) <= set(car.vehicle_json())
    assert charge["charge_current_request"] == 16
    assert charge["charge_current_request_max"] == 32
    assert charge["charger_phases"] == 1
    assert charge["charger_power"] == 4  # 16 A x 230 V


def test_idle_charge_state_looks_like_the_recorded_stopped_car() -> None:
    car = charging_car(charging_state="Stopped")
    charge = car.charge_state_json()
    assert charge["charging_state"] == "Stopped"
    assert charge["charger_actual_current"] == 0
    assert charge["charger_voltage"] == 2
    assert charge["charger_phases"] is None


def test_billing_counts_only_answers_below_500() -> None:
    billing = BillingCounter()
    billing.record("data", 200)
    billing.record("data", 408)
    billing.record("command", 429)
    billing.record("command", 500)
    billing.record("wake", 200)
    assert (billing.data, billing.command, billing.wake, billing.unbilled) == (2, 1, 1, 1)
    assert billing.cost() == pytest.approx(2 * 0.002 + 0.001 + 0.02)
    assert billing.cost_per_day(43_200.0) == pytest.approx(2 * billing.cost())
    with pytest.raises(ValueError, match="unknown billing category"):
        billing.record("streaming", 200)
