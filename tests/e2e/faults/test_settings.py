"""No setting can switch protection off, and every config error is a clean
exit 2 naming the key, from `check-config` and from the daemon alike (real processes).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic.alias_generators import to_camel

from tesla_smart_charger.cli import main as cli
from tesla_smart_charger.config.settings import KEY_BY_FIELD, Settings, VehicleSettings
from tests.helpers.fixtures import SEED_CONFIG

Write = Callable[[Path], Path]


def with_values(**values: Any) -> Write:
    def write(folder: Path) -> Path:
        path = folder / "config.json"
        path.write_text(json.dumps({**SEED_CONFIG, **values}), encoding="utf-8")
        return path

    return write


def raw(text: bytes) -> Write:
    def write(folder: Path) -> Path:
        path = folder / "config.json"
        path.write_bytes(text)
        return path

    return write


def seed_text(**values: Any) -> str:
    return json.dumps({**SEED_CONFIG, **values}, ensure_ascii=False)


def bad_ca_file(folder: Path) -> Path:
    (folder / "proxy-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    return with_values(
        teslaHttpProxy="https://localhost:4443", teslaHttpProxyCaFile="proxy-ca.pem"
    )(folder)


# (id, how to write the config, text the one error line must contain)
ROWS: list[tuple[str, Write, str]] = [
    # The table, row by row.
    (
        "homeMaxAmps-Infinity",
        raw(seed_text().replace('"homeMaxAmps": 30.0', '"homeMaxAmps": Infinity').encode()),
        "homeMaxAmps = Infinity",
    ),
    ("stale-1e9", with_values(energyMonitorStaleSecs=1e9), "energyMonitorStaleSecs"),
    ("poll-1e-9", with_values(energyMonitorPollSecs=1e-9), "energyMonitorPollSecs"),
    ("vehicleCheck-0.01", with_values(vehicleCheckSecs=0.01), "vehicleCheckSecs"),
    ("downStep-1.0", with_values(downStepPercentage=1.0), "downStepPercentage"),
    ("not-utf8", raw(seed_text(teslaVehicleId="caf\u00e9").encode("latin-1")), "not UTF-8"),
    (
        "nested-100000",
        raw(b'{"homeMaxAmps": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "nested deeper",
    ),
    (
        "token-folder-missing",
        with_values(tokenFile="no/such/folder/tokens.json"),
        "tokenFile: folder",
    ),
    ("carSettle-1e-9", with_values(carSettleSecs=1e-9), "carSettleSecs"),
    ("margin-1e308", with_values(safetyMarginAmps=1e308), "safetyMarginAmps"),
]
# The other bounds of item 6: the same checks, run in-process to keep the suite quick.
MORE_ROWS: list[tuple[str, Write, str]] = [
    (
        "homeMaxAmps-NaN",
        raw(seed_text().replace('"homeMaxAmps": 30.0', '"homeMaxAmps": NaN').encode()),
        "homeMaxAmps = NaN",
    ),
    ("homeMaxAmps-1001", with_values(homeMaxAmps=1001, chargerMaxAmps=16), "homeMaxAmps"),
    (
        "chargerMin--Infinity",
        raw(seed_text().replace('"chargerMinAmps": 6.0', '"chargerMinAmps": -Infinity').encode()),
        "chargerMinAmps",
    ),
    (
        "stale-1",
        with_values(energyMonitorStaleSecs=1, energyMonitorPollSecs=0.2),
        "energyMonitorStaleSecs",
    ),
    ("stale-121", with_values(energyMonitorStaleSecs=121), "energyMonitorStaleSecs"),
    (
        "poll-61",
        with_values(energyMonitorPollSecs=61, energyMonitorStaleSecs=120),
        "energyMonitorPollSecs",
    ),
    (
        "poll-over-third",
        with_values(energyMonitorPollSecs=4, energyMonitorStaleSecs=10),
        "at most a third of energyMonitorStaleSecs",
    ),
    ("vehicleCheck-299", with_values(vehicleCheckSecs=299), "vehicleCheckSecs"),
    ("sleep-3601", with_values(sleepTimeSecs=3601), "sleepTimeSecs"),
    ("meter-not-an-ip", with_values(energyMonitorIp="999.1.1.1"), "energyMonitorIp"),
    ("meter-not-a-host", with_values(energyMonitorIp="my meter!"), "energyMonitorIp"),
    (
        "ca-file-missing",
        with_values(teslaHttpProxy="https://localhost:4443", teslaHttpProxyCaFile="missing.pem"),
        "teslaHttpProxyCaFile: cannot read",
    ),
    ("ca-file-garbage", bad_ca_file, "teslaHttpProxyCaFile"),
    ("string-inf", with_values(homeMaxAmps="inf"), "homeMaxAmps"),
    (
        "margin-at-home-max",
        with_values(homeMaxAmps=10, chargerMaxAmps=10, safetyMarginAmps=10),
        "safetyMarginAmps (10) must be less than homeMaxAmps",
    ),
]

# Every numeric setting's range: (key, lowest accepted, highest accepted, just below, just
# above, other keys each value needs to pass the rules between keys).
BOUNDS: list[tuple[str, Any, Any, Any, Any, dict[str, Any]]] = [
    ("homeMaxAmps", 6, 1000, 5.9, 1000.5, {"chargerMaxAmps": 6, "chargerMinAmps": 5}),
    ("chargerMaxAmps", 1, 80, 0.5, 80.5, {"chargerMinAmps": 1, "homeMaxAmps": 100}),
    ("chargerMinAmps", 0, 80, -0.1, 80.5, {"chargerMaxAmps": 80, "homeMaxAmps": 100}),
    ("downStepPercentage", 0.05, 0.95, 0.04, 0.96, {}),
    ("upStepPercentage", 0.01, 1, 0.009, 1.01, {}),
    ("sleepTimeSecs", 1, 3600, 0.5, 3601, {}),
    ("apiPort", 0, 65535, -1, 65536, {}),  # 0: the OS picks a free port
    ("energyMonitorPollSecs", 0.2, 40, 0.19, 41, {"energyMonitorStaleSecs": 120}),
    ("energyMonitorStaleSecs", 2, 120, 1.9, 121, {"energyMonitorPollSecs": 0.5}),
    ("energyMonitorSupplyChannels", [0], [5], [-1], [6], {}),
    ("energyMonitorChargerChannel", 0, 5, -1, 6, {}),
    ("chargerPhase", 1, 3, 0, 4, {"supplyPhases": 3}),
    ("mainsVoltage", 90, 500, 89, 501, {}),
    ("safetyMarginAmps", 0, 20, -0.1, 20.5, {}),
    ("pauseAfterSecs", 1, 3600, 0.5, 3601, {}),
    ("carSettleSecs", 1, 120, 0.5, 121, {}),
    ("vehicleCheckSecs", 300, 86400, 299, 86401, {}),
    ("solarImportToleranceAmps", 0, 10, -0.1, 10.5, {}),
    ("solarStartSecs", 1, 3600, 0.5, 3601, {}),
    ("solarStopSecs", 1, 7200, 0.5, 7201, {}),
    ("cloudCommandsPerHour", 1, 1000, 0, 1001, {}),
    ("importLimitKw", 0.5, 250, 0.4, 250.5, {}),
    ("importWindowMins", 1, 60, 0, 61, {}),
    ("randomStartDelaySecs", 0, 1800, -1, 1801, {}),
    ("gridLimitKw", 1, 100, 0.9, 100.5, {}),
    ("gridLimitInputId", 0, 3, -1, 4, {}),
    ("gridLimitInputPollSecs", 0.2, 10, 0.1, 10.5, {}),
    ("escalateAfterSecs", 5, 120, 4, 121, {}),
    ("safetyRelayChannel", 0, 3, -1, 4, {}),
]
# The same for each car of `vehicles` (the key in the error is vehicles[0].<key>).
CAR_BOUNDS: list[tuple[str, Any, Any, Any, Any]] = [
    ("chargerMinAmps", 0, 25, -0.1, 80.5),
    ("chargerMaxAmps", 6, 25, 0.5, 80.5),
    ("chargerPhase", 1, 1, 0, 4),
    ("priority", -100, 100, -101, 101),
    ("meterChargerChannel", 0, 5, -1, 6),
]
CAR_VIN = "5YJ3E1EA7KF000009"


async def run_cli(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TSC_")} | (env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tesla_smart_charger", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
        cwd=config.parent,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # a config that should have failed started the daemon
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode("utf-8", "replace")


def error_lines(output: str) -> list[str]:
    lines = output.splitlines()
    assert "configuration error:" in lines, output
    start = lines.index("configuration error:") + 1
    return [line.strip() for line in lines[start:] if line.startswith("  ")]


@pytest.mark.slow
@pytest.mark.parametrize(("write", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
async def test_every_row_is_exit_2_from_check_config_and_the_daemon(
    tmp_path: Path, write: Write, expected: str
) -> None:
    config = write(tmp_path)
    (check_code, check_out), (run_code, run_out) = await asyncio.gather(
        run_cli(config, "check-config"), run_cli(config, "--monitor")
    )
    for code, output in ((check_code, check_out), (run_code, run_out)):
        assert code == 2, output
        assert "Traceback" not in output
        problems = error_lines(output)
        assert len(problems) == 1, problems
        assert expected in problems[0], problems
        assert len(problems[0]) < 400  # one readable line, not a dump
        assert "configuration is valid" not in output
        assert "seed-refresh-token-SECRET" not in output


@pytest.mark.parametrize(
    ("write", "expected"), [r[1:] for r in ROWS + MORE_ROWS], ids=[r[0] for r in ROWS + MORE_ROWS]
)
def test_check_config_and_the_daemon_share_one_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], write: Write, expected: str
) -> None:
    config = write(tmp_path)
    assert cli.main(["--config", str(config), "check-config"]) == 2
    checked = capsys.readouterr().err
    # What `cmd_run` calls before anything starts: the same function, the same answer.
    assert cli.load_or_exit(str(config), monitor=True) == 2
    started = capsys.readouterr().err
    assert checked == started
    problems = error_lines(checked)
    assert len(problems) == 1, problems
    assert expected in problems[0], problems


@pytest.mark.slow
async def test_environment_values_are_checked_the_same(tmp_path: Path) -> None:
    config = with_values()(tmp_path)
    env = {"TSC_HOME_MAX_AMPS": "Infinity"}
    (c1, out1), (c2, out2) = await asyncio.gather(
        run_cli(config, "check-config", env=env), run_cli(config, env=env)
    )
    for code, output in ((c1, out1), (c2, out2)):
        assert code == 2
        assert "environment TSC_HOME_MAX_AMPS: homeMaxAmps" in output


@pytest.mark.slow
async def test_monitor_without_meter_address_is_exit_2_from_both(tmp_path: Path) -> None:
    config = with_values(energyMonitorIp="")(tmp_path)
    (c1, out1), (c2, out2) = await asyncio.gather(
        run_cli(config, "check-config", "--monitor"), run_cli(config, "--monitor")
    )
    for code, output in ((c1, out1), (c2, out2)):
        assert code == 2, output
        assert "energyMonitorIp: required with --monitor" in output
    code, output = await run_cli(config, "check-config")  # push mode needs no meter
    assert code == 0, output


@pytest.mark.slow
async def test_seed_config_is_valid_with_warnings(tmp_path: Path) -> None:
    config = with_values()(tmp_path)
    config.chmod(0o644)
    code, output = await run_cli(config, "check-config")
    assert code == 0, output
    assert "configuration is valid" in output
    warnings = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, warnings
    assert "teslaHttpProxy: http://localhost:4443 is http://" in warnings[0]
    assert "HTTPS only" in warnings[0]
    assert "other users can read it" in warnings[1]
    assert "teslaAccessToken, teslaRefreshToken" in warnings[1]
    assert "apiToken is not set and apiHost 0.0.0.0" in warnings[2]
    assert "seed-refresh-token-SECRET" not in output


@pytest.mark.slow
async def test_private_file_loopback_https_config_has_no_warnings(tmp_path: Path) -> None:
    config = with_values(teslaHttpProxy="https://localhost:4443", apiHost="127.0.0.1")(tmp_path)
    config.chmod(0o600)
    code, output = await run_cli(config, "check-config")
    assert code == 0, output
    assert "warning:" not in output


@pytest.mark.slow
async def test_duplicate_keys_warn_and_the_last_wins(tmp_path: Path) -> None:
    text = seed_text()[:-1] + ', "homeMaxAmps": 40}'
    config = raw(text.encode())(tmp_path)
    code, output = await run_cli(config, "check-config")
    assert code == 0, output
    assert "key 'homeMaxAmps' appears more than once; the last value is used" in output
    printed = json.loads(output[output.index("{") : output.rindex("}") + 1])
    assert printed["homeMaxAmps"] == 40.0


def _numeric(annotation: Any) -> bool:
    """int or float (also inside Optional, list or Annotated), not bool."""
    if annotation in (int, float):
        return True
    return any(_numeric(arg) for arg in get_args(annotation) if arg is not type(None))


def test_every_numeric_setting_has_a_range_in_the_table() -> None:
    numeric = {
        KEY_BY_FIELD[name]
        for name, info in Settings.model_fields.items()
        if info.annotation is not bool and _numeric(info.annotation)
    }
    assert numeric == {row[0] for row in BOUNDS}
    car = {
        to_camel(name)
        for name, info in VehicleSettings.model_fields.items()
        if _numeric(info.annotation)
    }
    assert car == {row[0] for row in CAR_BOUNDS}


def _check(tmp_path: Path, capsys: pytest.CaptureFixture[str], **values: Any) -> list[str]:
    """check-config and the daemon's own check on one config: [] when valid, else the lines."""
    config = with_values(**values)(tmp_path)
    code = cli.main(["--config", str(config), "check-config"])
    checked = capsys.readouterr()
    started = cli.load_or_exit(str(config), monitor=True)  # what `cmd_run` calls first
    output = capsys.readouterr().err
    if code == 0:
        assert not isinstance(started, int), output
        return []
    assert code == 2, checked
    assert started == 2
    assert checked.err == output
    return error_lines(checked.err)


@pytest.mark.parametrize("row", BOUNDS, ids=[r[0] for r in BOUNDS])
def test_each_setting_accepts_its_range_and_refuses_beyond_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    row: tuple[str, Any, Any, Any, Any, dict[str, Any]],
) -> None:
    key, low, high, below, above, extra = row
    for good in (low, high):
        assert _check(tmp_path, capsys, **extra, **{key: good}) == [], (key, good)
    for bad in (below, above):
        problems = _check(tmp_path, capsys, **extra, **{key: bad})
        assert len(problems) == 1, problems
        assert problems[0].split(": ", 1)[1].startswith(key), problems


@pytest.mark.parametrize("row", CAR_BOUNDS, ids=[r[0] for r in CAR_BOUNDS])
def test_each_car_setting_accepts_its_range_and_refuses_beyond_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: tuple[str, Any, Any, Any, Any]
) -> None:
    key, low, high, below, above = row
    for good in (low, high):
        cars = [{"vin": CAR_VIN, key: good}]
        assert _check(tmp_path, capsys, vehicles=cars) == [], (key, good)
    for bad in (below, above):
        problems = _check(tmp_path, capsys, vehicles=[{"vin": CAR_VIN, key: bad}])
        assert len(problems) == 1, problems
        assert f"vehicles[0].{key}" in problems[0], problems


def test_the_shipped_and_the_seed_config_are_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(tmp_path, capsys) == []  # the seed README's example
    shipped = Path(__file__).parents[3] / "config.json"
    (tmp_path / "shipped.json").write_bytes(shipped.read_bytes())
    assert cli.main(["--config", str(tmp_path / "shipped.json"), "check-config"]) == 0
