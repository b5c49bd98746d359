"""Configuration: seed compatibility, validation messages, env overrides, redaction."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tesla_smart_charger.config.settings import (
    REQUIRED_KEYS,
    load_config,
    normalize_host_url,
    redacted,
)
from tesla_smart_charger.errors import ConfigError

WriteConfig = Callable[..., Path]


def test_seed_config_loads_unchanged(write_config: WriteConfig) -> None:
    cfg = load_config(write_config())
    s = cfg.settings
    assert s.home_max_amps == 30.0
    assert s.sleep_time_secs == 20.0
    assert s.energy_monitor_ip == "http://ip-or-hostname"
    assert s.tesla_access_token is not None
    assert s.tesla_access_token.get_secret_value() == "seed-access-token-SECRET"
    # The seed config still loads; what it leaves open is said, not refused.
    assert len(cfg.warnings) == 3
    assert "teslaHttpProxy" in cfg.warnings[0]
    assert "HTTPS only" in cfg.warnings[0]
    assert "chmod 600" in cfg.warnings[1]
    assert "teslaRefreshToken" in cfg.warnings[1]
    assert "apiToken is not set" in cfg.warnings[2]
    assert cfg.token_file == cfg.path.parent / "tokens.json"


def test_numbers_as_strings_are_accepted(write_config: WriteConfig) -> None:
    s = load_config(write_config(homeMaxAmps="32", apiPort="8080.0", sleepTimeSecs="5")).settings
    assert (s.home_max_amps, s.api_port, s.sleep_time_secs) == (32.0, 8080, 5.0)


def test_min_above_max_names_both_keys(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(chargerMinAmps=20, chargerMaxAmps=16))
    (line,) = info.value.problems
    assert "chargerMinAmps" in line
    assert "chargerMaxAmps" in line
    assert "config.json" in line


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("downStepPercentage", 0, "greater than or equal to 0.05"),
        ("upStepPercentage", 1.5, "less than or equal to 1"),
        ("sleepTimeSecs", 0, "greater than or equal to 1"),
        ("apiPort", 70000, "less than or equal to 65535"),
        ("teslaHttpProxy", "localhost:4443", "http:// or https://"),
        ("energyMonitorIp", "https://meter", "plain HTTP"),
        ("energyMonitorType", "fronius", "shelly-em"),
        ("apiAllowedHosts", ["http://charger.local:8000/"], "not a host name"),
    ],
)
def test_each_bad_value_is_one_line_naming_key_and_value(
    write_config: WriteConfig, key: str, value: object, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(**{key: value}))
    (line,) = info.value.problems
    assert f"{key} = " in line
    assert fragment in line


def test_several_problems_are_all_reported(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(sleepTimeSecs=-1, apiPort=-1))
    assert len(info.value.problems) == 2


def test_secret_values_are_masked_in_errors(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(apiToken=["not-a-string-SECRET"]))
    assert "SECRET" not in str(info.value)
    assert "apiToken = '***'" in str(info.value)


def test_malformed_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "homeMaxAmps": 30,\n  "apiPort" 8000\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 3, column 13" in str(info.value)


def test_missing_required_key_is_named(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(homeMaxAmps=...))
    assert "homeMaxAmps: required key is missing" in str(info.value)
    assert "homeMaxAmps" in REQUIRED_KEYS


def test_unknown_key_is_a_warning(write_config: WriteConfig) -> None:
    cfg = load_config(write_config(colour="red"))
    assert cfg.warnings[0] == f"{cfg.path}: unknown key 'colour' ignored"


def test_environment_overrides_file(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSC_HOME_MAX_AMPS", "40")
    monkeypatch.setenv("TSC_API_TOKEN", "env-token-SECRET")
    s = load_config(write_config()).settings
    assert s.home_max_amps == 40.0
    assert s.api_token is not None
    assert s.api_token.get_secret_value() == "env-token-SECRET"


def test_api_allowed_hosts_are_names_in_lower_case(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_config(write_config(apiAllowedHosts=["Charger.Local.", "[fd00::5]", "10.0.0.5"]))
    assert s.settings.api_allowed_hosts == ["charger.local", "fd00::5", "10.0.0.5"]
    monkeypatch.setenv("TSC_API_ALLOWED_HOSTS", '["ha.home.arpa"]')
    assert load_config(write_config()).settings.api_allowed_hosts == ["ha.home.arpa"]


def test_bad_environment_value_names_the_variable(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSC_SLEEP_TIME_SECS", "-3")
    with pytest.raises(ConfigError) as info:
        load_config(write_config())
    assert "environment TSC_SLEEP_TIME_SECS" in str(info.value)


def test_redacted_hides_every_secret(write_config: WriteConfig) -> None:
    s = load_config(write_config(apiToken="api-SECRET", energyMonitorPassword="pw-SECRET")).settings
    out = redacted(s)
    assert "SECRET" not in repr(out)
    assert "SECRET" not in repr(s)
    assert out["teslaAccessToken"] == "***"
    assert out["apiToken"] == "***"
    assert out["teslaClientSecret"] is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("192.0.2.7", "http://192.0.2.7"),
        ("shelly.local:8080", "http://shelly.local:8080"),
        ("http://10.0.0.5/", "http://10.0.0.5"),
        ("http://[::1]:81", "http://[::1]:81"),
    ],
)
def test_meter_address_forms(given: str, expected: str) -> None:
    assert normalize_host_url(given) == expected


def test_region_defaults_from_refresh_token_prefix(write_config: WriteConfig) -> None:
    s = load_config(write_config(teslaRefreshToken="EU_abcdef")).settings
    assert s.region == "eu"
    assert s.fleet_api_base == "https://fleet-api.prd.eu.vn.cloud.tesla.com"


def test_without_vehicles_the_top_level_keys_are_the_one_car(write_config: WriteConfig) -> None:
    s = load_config(write_config()).settings
    assert s.vehicles is None
    assert s.mode == "fast"
    assert (s.solar_start_secs, s.solar_stop_secs, s.solar_import_tolerance_amps) == (60, 300, 1)
    assert s.cloud_commands_per_hour == 20


def test_the_top_level_keys_are_a_one_car_list_the_user_never_sees(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """One car is a fleet of one: the daemon reads `cars`; /config and check-config still show
    the user's own keys, and no `vehicles` the user did not write."""
    from tesla_smart_charger.cli.main import main  # noqa: PLC0415

    path = write_config(
        chargerMinAmps=8, chargerMaxAmps=20, mode="solar", teslaBleProxy="http://127.0.0.1:9"
    )
    s = load_config(path).settings
    (car,) = s.cars
    assert car.vin == "12345678901234567"  # teslaVehicleId, as written
    assert (car.charger_min_amps, car.charger_max_amps, car.charger_phase) == (8, 20, 1)
    assert (car.mode, car.tesla_ble_proxy, car.name, car.priority) == (
        "solar",
        "http://127.0.0.1:9",
        None,
        0,
    )
    assert s.vehicles is None
    shown = redacted(s)
    assert shown["vehicles"] is None
    assert (shown["teslaVehicleId"], shown["chargerMinAmps"]) == ("12345678901234567", 8)
    assert main(["check-config", "--config", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["vehicles"] is None
    assert printed["teslaVehicleId"] == "12345678901234567"
    # With `vehicles`, they are the cars, as written.
    cars = [{"vin": "5YJ3E1EA1KF000001"}, {"vin": "5YJ3E1EA1KF000002", "priority": 1}]
    listed = load_config(write_config(vehicles=cars)).settings
    assert [(c.vin, c.priority) for c in listed.cars] == [
        ("5YJ3E1EA1KF000001", 0),
        ("5YJ3E1EA1KF000002", 1),
    ]


def test_vehicles_list_loads_and_shows_in_redacted(write_config: WriteConfig) -> None:
    cars = [
        {"vin": "5YJ3E1EA1KF000001", "name": "Red", "priority": 1, "mode": "solar"},
        {"vin": "5YJ3E1EA1KF000002", "chargerMaxAmps": 10, "chargerPhase": 1},
    ]
    s = load_config(write_config(vehicles=cars)).settings
    assert s.vehicles is not None
    assert [v.vin for v in s.vehicles] == ["5YJ3E1EA1KF000001", "5YJ3E1EA1KF000002"]
    assert (s.vehicles[0].priority, s.vehicles[0].mode, s.vehicles[1].priority) == (1, "solar", 0)
    shown = redacted(s)["vehicles"]
    assert shown[0] == {"vin": "5YJ3E1EA1KF000001", "name": "Red", "priority": 1, "mode": "solar"}
    assert shown[1]["chargerMaxAmps"] == 10


@pytest.mark.parametrize(
    ("cars", "fragment"),
    [
        ([{"name": "no vin"}], "vehicles[0].vin: required key is missing"),
        ([{"vin": "A1", "mode": "turbo"}], "vehicles[0].mode"),
        ([{"vin": "A1", "colour": "red"}], "vehicles[0].colour"),
        ([{"vin": "A1"}, {"vin": "a1"}], "vehicles[1].vin: 'a1' appears twice"),
        ([{"vin": "A1", "chargerMaxAmps": 40}], "vehicles[0].chargerMaxAmps (40) must not exceed"),
    ],
)
def test_bad_vehicle_entries_name_the_entry_and_key(
    write_config: WriteConfig, cars: list[dict[str, object]], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(vehicles=cars))
    assert any(fragment in line for line in info.value.problems), info.value.problems


def test_bad_mode_names_the_key(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(mode="eco"))
    assert "mode" in info.value.problems[0]
    assert "solar" in info.value.problems[0]


def test_vehicles_make_tesla_vehicle_id_optional(write_config: WriteConfig) -> None:
    cars = [{"vin": "5YJ3E1EA1KF000001"}, {"vin": "5YJ3E1EA1KF000002"}]
    s = load_config(write_config(teslaVehicleId=..., vehicles=cars)).settings
    assert s.tesla_vehicle_id == "5YJ3E1EA1KF000001"  # the first car stands in
    explicit = load_config(write_config(teslaVehicleId="5YJ3E1EA1KF999999", vehicles=cars))
    assert explicit.settings.tesla_vehicle_id == "5YJ3E1EA1KF999999"  # an old config unchanged


@pytest.mark.parametrize("value", [..., ""])
def test_neither_tesla_vehicle_id_nor_vehicles_names_both(
    write_config: WriteConfig, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(teslaVehicleId=value))
    (line,) = [p for p in info.value.problems if "teslaVehicleId" in p]
    assert "required" in line
    assert "vehicles" in line


@pytest.mark.parametrize(
    ("extra", "cars", "fragment"),
    [
        (
            {"energyMonitorSupplyChannels": [0]},
            [{"vin": "A1", "meterChargerChannel": 0}],
            "vehicles[0].meterChargerChannel (0) must not also be one of energyMonitorSupplyChannels",
        ),
        (
            {},
            [{"vin": "A1", "meterChargerChannel": 1}, {"vin": "A2", "meterChargerChannel": 1}],
            "vehicles[1].meterChargerChannel (1) is already vehicles[0]'s",
        ),
        (
            {"energyMonitorChargerChannel": 1},
            [{"vin": "A1", "meterChargerChannel": 1}, {"vin": "A2"}],
            "vehicles[0].meterChargerChannel (1) must not be energyMonitorChargerChannel",
        ),
    ],
)
def test_each_car_needs_its_own_charger_channel(
    write_config: WriteConfig, extra: dict[str, object], cars: object, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(vehicles=cars, **extra))
    assert any(fragment in line for line in info.value.problems), info.value.problems


def test_check_config_with_vehicles_and_no_tesla_vehicle_id(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    from tesla_smart_charger.cli.main import main  # noqa: PLC0415

    cars = [{"vin": "5YJ3E1EA1KF000001"}, {"vin": "5YJ3E1EA1KF000002"}]
    assert (
        main(["check-config", "--config", str(write_config(teslaVehicleId=..., vehicles=cars))])
        == 0
    )
    assert "configuration is valid" in capsys.readouterr().err
    assert main(["check-config", "--config", str(write_config(teslaVehicleId=...))]) == 2
    err = capsys.readouterr().err
    assert "teslaVehicleId: required key is missing" in err
    assert "`vehicles`" in err


def test_pausing_an_overload_the_cars_cannot_resolve_is_on_by_default(
    write_config: WriteConfig,
) -> None:
    cfg = load_config(write_config())
    assert cfg.settings.pause_when_overloaded is True
    assert not any("pauseWhenOverloaded" in w for w in cfg.warnings)
    # true given explicitly (the old opt-in) is the default: nothing to say
    assert not any(
        "pauseWhenOverloaded" in w
        for w in load_config(write_config(pauseWhenOverloaded=True)).warnings
    )


@pytest.mark.parametrize("source", ["file", "environment"])
def test_opting_out_of_the_pause_is_kept_and_warned_about(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "file":
        path = write_config(pauseWhenOverloaded=False)
    else:
        path = write_config()
        monkeypatch.setenv("TSC_PAUSE_WHEN_OVERLOADED", "false")
    cfg = load_config(path)
    assert cfg.settings.pause_when_overloaded is False  # the key still works
    (warning,) = [w for w in cfg.warnings if "pauseWhenOverloaded" in w]
    assert warning.startswith("pauseWhenOverloaded is false")
    assert "main breaker is not protected" in warning


def test_a_capacity_window_must_divide_an_hour(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(importLimitKw=2.5, importWindowMins=7))
    (line,) = info.value.problems
    assert "importWindowMins (7) must divide an hour" in line
    s = load_config(write_config(importLimitKw=2.5, importWindowMins=60)).settings
    assert (s.import_limit_kw, s.import_window_mins, s.random_start_delay_secs) == (2.5, 60, 0.0)
    assert load_config(write_config()).settings.import_limit_kw is None
