"""Pure Shelly parsers and channel mapping, on the recorded device replies (no network)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tesla_smart_charger.errors import MeterError
from tesla_smart_charger.shelly.build import (
    ChannelSample,
    compose_reading,
    detect_kind,
    parse_em1_status,
    parse_em_status,
    parse_gen1_3em_status,
    parse_gen1_em_status,
    parse_switch_status,
)
from tesla_smart_charger.shelly.meter import em1_channel_ids
from tests.helpers.fixtures import load_fixture

GEN1_EM = load_fixture("shelly/gen1_em_status.json")
PRO3EM = load_fixture("shelly/pro3em_em_status.json")
PRO3EM_SHELLY = load_fixture("shelly/pro3em_shelly.json")
PROEM_EM1 = load_fixture("shelly/proem_em1_status.json")
PLUS1PM = load_fixture("shelly/plus1pm_switch_status.json")

GEN1_3EM = {
    "emeters": [
        {"power": 2300.0, "pf": 0.98, "current": 10.2, "voltage": 231.0, "is_valid": True},
        {"power": -460.0, "pf": -0.9, "current": 2.1, "voltage": 229.5, "is_valid": True},
        {"power": 0.0, "pf": 0.0, "current": 0.0, "voltage": 0, "is_valid": True},
    ],
    "total_power": 1840.0,
}


# --- parsers on the recorded replies -----------------------------------------------------------


def test_gen1_em_computes_current_from_power_and_reactive() -> None:
    samples = parse_gen1_em_status(GEN1_EM, mains_voltage=230.0)
    assert len(samples) == 2
    expected = -math.sqrt(620.34**2 + 714.48**2) / 235.68  # exporting: power is negative
    assert samples[0].amps == pytest.approx(expected)
    assert samples[0].amps == pytest.approx(-4.0140, abs=1e-3)
    assert samples[0].volts == 235.68
    assert samples[0].valid
    assert samples[1] == ChannelSample(amps=0.0, volts=235.68, valid=True)


def test_gen1_em_uses_mains_voltage_when_the_meter_reports_none() -> None:
    status = {"emeters": [{"power": 2300.0, "reactive": 0.0, "voltage": 0, "is_valid": True}]}
    (sample,) = parse_gen1_em_status(status, mains_voltage=230.0)
    assert sample.amps == pytest.approx(10.0)
    assert sample.volts is None  # not measured: the controller must not treat 230 as a reading


def test_gen1_em_invalid_flag_makes_the_channel_invalid() -> None:
    status = copy.deepcopy(GEN1_EM)
    status["emeters"][1]["is_valid"] = False
    samples = parse_gen1_em_status(status, mains_voltage=230.0)
    assert samples[0].valid
    assert not samples[1].valid
    assert samples[1].error == "is_valid is false"


def test_gen1_em_parses_a_single_emeter_reply() -> None:
    emeter = GEN1_EM["emeters"][0]  # the shape of GET /emeter/0
    (sample,) = parse_gen1_em_status({"emeters": [emeter]}, mains_voltage=230.0)
    assert sample.amps < 0


def test_gen1_3em_reads_current_and_takes_the_sign_from_power() -> None:
    samples = parse_gen1_3em_status(GEN1_3EM, mains_voltage=230.0)
    assert [s.amps for s in samples] == [10.2, -2.1, 0.0]
    assert [s.volts for s in samples] == [231.0, 229.5, None]
    assert all(s.valid for s in samples)


def test_pro3em_em_status() -> None:
    samples = parse_em_status(PRO3EM)
    assert [s.amps for s in samples] == [9.592, 0.044, 1.479]
    assert [s.volts for s in samples] == [227.0, 230.0, 230.2]
    assert all(s.valid for s in samples)


def test_pro3em_negative_act_power_means_export() -> None:
    status = dict(PRO3EM, b_act_power=-3.6)
    assert [s.amps for s in parse_em_status(status)] == [9.592, -0.044, 1.479]


def test_pro3em_phase_errors_invalidate_that_phase_only() -> None:
    status = dict(PRO3EM, b_errors=["out_of_range:current"], b_current=None)
    a, b, c = parse_em_status(status)
    assert a.valid
    assert c.valid
    assert not b.valid
    assert b.error is not None
    assert "out_of_range:current" in b.error


def test_pro3em_top_level_errors_invalidate_every_phase() -> None:
    status = dict(PRO3EM, errors=["phase_sequence"])
    samples = parse_em_status(status)
    assert [s.valid for s in samples] == [False, False, False]


def test_pro3em_empty_error_arrays_are_fine() -> None:
    status = dict(PRO3EM, a_errors=[], errors=[])
    assert all(s.valid for s in parse_em_status(status))


def test_proem_em1_exporting_is_negative() -> None:
    assert parse_em1_status(PROEM_EM1) == [ChannelSample(amps=-1.473, volts=226.9, valid=True)]


def test_em1_errors_invalidate_the_channel() -> None:
    (sample,) = parse_em1_status(dict(PROEM_EM1, errors=["out_of_range:current"]))
    assert not sample.valid


def test_plus1pm_switch_zero_current() -> None:
    assert parse_switch_status(PLUS1PM) == [ChannelSample(amps=0.0, volts=232.8, valid=True)]


def test_switch_errors_do_not_invalidate_the_measurement() -> None:
    (sample,) = parse_switch_status(dict(PLUS1PM, errors=["overtemp"], current=3.0, apower=690.0))
    assert sample.valid
    assert sample.amps == 3.0


# --- malformed replies name the field ---------------------------------------------------------

_Parser = Callable[[Any], list[ChannelSample]]


def _gen1(status: Any) -> list[ChannelSample]:
    return parse_gen1_em_status(status, 230.0)


def _gen1_3em(status: Any) -> list[ChannelSample]:
    return parse_gen1_3em_status(status, 230.0)


def _without(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(
    ("parser", "payload", "field"),
    [
        (_gen1, {"wifi_sta": {}}, "emeters"),
        (_gen1, {"emeters": []}, "emeters"),
        (_gen1, {"emeters": "x"}, "emeters"),
        (_gen1, {"emeters": [42]}, "emeters[0]"),
        (_gen1, {"emeters": [{"reactive": 1.0, "voltage": 230}]}, "emeters[0].power"),
        (_gen1, {"emeters": [{"power": "12", "reactive": 1.0}]}, "emeters[0].power"),
        (
            _gen1,
            {"emeters": [{"power": 1.0, "reactive": 1.0}, {"power": 1.0}]},
            "emeters[1].reactive",
        ),
        (
            _gen1,
            {"emeters": [{"power": 1.0, "reactive": 1.0, "is_valid": "yes"}]},
            "emeters[0].is_valid",
        ),
        (_gen1, [1, 2], "status"),
        (_gen1_3em, {"emeters": [{"power": 1.0, "voltage": 230}]}, "emeters[0].current"),
        (parse_em_status, _without(PRO3EM, "a_current"), "a_current"),
        (parse_em_status, dict(PRO3EM, c_current=None), "c_current"),
        (parse_em_status, dict(PRO3EM, b_act_power=True), "b_act_power"),
        (parse_em_status, dict(PRO3EM, a_errors="bad"), "a_errors"),
        (parse_em_status, "not json object", "EM.GetStatus"),
        (parse_em1_status, _without(PROEM_EM1, "act_power"), "act_power"),
        (parse_em1_status, dict(PROEM_EM1, current="1.4"), "current"),
        (parse_switch_status, _without(PLUS1PM, "apower"), "apower"),
        (parse_switch_status, None, "Switch.GetStatus"),
    ],
)
def test_malformed_reply_raises_meter_error_naming_the_field(
    parser: _Parser, payload: Any, field: str
) -> None:
    with pytest.raises(MeterError, match=r"^" + field.replace("[", r"\[").replace("]", r"\]")):
        parser(payload)


# --- detection from GET /shelly ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "kind"),
    [
        (PRO3EM_SHELLY, "em"),
        (dict(PRO3EM_SHELLY, profile="monophase"), "em1"),
        ({"gen": 2, "app": "ProEM", "profile": "default"}, "em1"),
        ({"gen": 3, "app": "EMG3"}, "em1"),
        ({"gen": 3, "app": "S3EMG3"}, "em"),
        ({"gen": 2, "app": "Plus1PM"}, "switch"),
        ({"gen": 2, "app": "Pro1PM"}, "switch"),
        ({"type": "SHEM", "mac": "C45B00000000", "auth": False}, "shelly-em"),
        ({"type": "SHEM-3", "mac": "C45B00000000", "auth": True}, "shelly-3em"),
    ],
)
def test_detect_kind(info: Mapping[str, Any], kind: str) -> None:
    assert detect_kind(info) == kind


@pytest.mark.parametrize(
    ("info", "field"),
    [
        ({"type": "SHSW-1"}, "type"),
        ({}, "type"),
        ({"gen": "2"}, "gen"),
        ({"gen": 1}, "gen"),
    ],
)
def test_detect_kind_rejects_unknown_devices(info: Mapping[str, Any], field: str) -> None:
    with pytest.raises(MeterError, match=f"^{field}:"):
        detect_kind(info)


def test_em1_channel_ids() -> None:
    assert em1_channel_ids({"gen": 2, "app": "ProEM"}) == (0, 1)
    assert em1_channel_ids(dict(PRO3EM_SHELLY, profile="monophase")) == (0, 1, 2)


# --- compose_reading: channel roles ---------------------------------------------------------------


def _ch(amps: float, volts: float | None = 230.0, valid: bool = True) -> ChannelSample:
    return ChannelSample(amps, volts, valid, None if valid else "is_valid is false")


def test_single_phase_sums_every_channel_as_the_seed_did() -> None:
    channels = parse_gen1_em_status(GEN1_EM, 230.0)
    reading = compose_reading(
        channels, supply_channels=None, charger_channel=None, supply_phases=1, at=12.5
    )
    assert reading.phase_amps == pytest.approx((channels[0].amps + channels[1].amps,))
    assert reading.phase_volts == (235.68,)
    assert reading.car_amps is None
    assert reading.valid
    assert reading.error is None
    assert reading.at == 12.5


def test_three_phases_map_channel_i_to_phase_i_mod_3() -> None:
    reading = compose_reading(
        parse_em_status(PRO3EM),
        supply_channels=None,
        charger_channel=None,
        supply_phases=3,
        at=0.0,
    )
    assert reading.phase_amps == (9.592, 0.044, 1.479)
    assert reading.phase_volts == (227.0, 230.0, 230.2)
    assert reading.worst_phase_amps == 9.592


def test_three_phases_with_more_channels_sum_and_keep_first_volts() -> None:
    channels = [_ch(1.0, 230), _ch(2.0, 231), _ch(3.0, 232), _ch(4.0, 240), _ch(5.0), _ch(6.0)]
    reading = compose_reading(
        channels, supply_channels=None, charger_channel=None, supply_phases=3, at=0.0
    )
    assert reading.phase_amps == (5.0, 7.0, 9.0)
    assert reading.phase_volts == (230, 231, 232)


def test_three_phases_with_fewer_channels_leave_phases_empty() -> None:
    reading = compose_reading(
        [_ch(8.0), _ch(3.0)], supply_channels=None, charger_channel=None, supply_phases=3, at=0.0
    )
    assert reading.phase_amps == (8.0, 3.0, 0.0)
    assert reading.phase_volts == (230.0, 230.0, None)


def test_charger_channel_is_excluded_from_the_default_supply() -> None:
    reading = compose_reading(
        [_ch(20.0), _ch(-16.0)], supply_channels=None, charger_channel=1, supply_phases=1, at=0.0
    )
    assert reading.phase_amps == (20.0,)
    assert reading.car_amps == 16.0  # a reversed CT on the car circuit still reads as drawing


def test_explicit_supply_channels() -> None:
    channels = [_ch(1.0, 229), _ch(2.0, 231), _ch(16.0)]
    reading = compose_reading(
        channels, supply_channels=[1, 0], charger_channel=2, supply_phases=1, at=0.0
    )
    assert reading.phase_amps == (3.0,)
    assert reading.phase_volts == (231,)  # the first supply channel listed
    assert reading.car_amps == 16.0


def test_invalid_supply_channel_invalidates_the_reading() -> None:
    reading = compose_reading(
        [_ch(5.0), _ch(0.0, valid=False)],
        supply_channels=None,
        charger_channel=None,
        supply_phases=1,
        at=3.0,
    )
    assert not reading.valid
    assert reading.error == "channel 1 invalid: is_valid is false"


def test_invalid_charger_channel_only_loses_car_amps() -> None:
    reading = compose_reading(
        [_ch(5.0), _ch(0.0, valid=False)],
        supply_channels=None,
        charger_channel=1,
        supply_phases=1,
        at=3.0,
    )
    assert reading.valid
    assert reading.car_amps is None
    assert reading.phase_amps == (5.0,)


@pytest.mark.parametrize(
    ("supply", "charger", "key"),
    [
        ([0, 2], None, "energyMonitorSupplyChannels"),
        (None, 2, "energyMonitorChargerChannel"),
        ([0], 5, "energyMonitorChargerChannel"),
    ],
)
def test_channel_beyond_the_device_names_the_key(
    supply: list[int] | None, charger: int | None, key: str
) -> None:
    with pytest.raises(MeterError, match=f"^{key}: channel [25] does not exist"):
        compose_reading(
            [_ch(1.0), _ch(2.0)],
            supply_channels=supply,
            charger_channel=charger,
            supply_phases=1,
            at=0.0,
        )


def test_no_supply_channel_left_is_an_error() -> None:
    with pytest.raises(MeterError, match="energyMonitorSupplyChannels"):
        compose_reading(
            parse_switch_status(PLUS1PM),
            supply_channels=None,
            charger_channel=0,
            supply_phases=1,
            at=0.0,
        )
