"""Config and doctor on the signed road: no teslaHttpProxy, the key keygen wrote, a real handshake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tesla_smart_charger.car.signing import crypto
from tesla_smart_charger.car.signing.cache import CACHE_FILE
from tesla_smart_charger.config.keys import load_private_key
from tesla_smart_charger.config.settings import check_config, load_config
from tesla_smart_charger.errors import ConfigError
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.oauth import SimulatedOAuth
from tesla_smart_charger.simulator.proxy import SimulatedProxy
from tests.helpers.doctor import doctor_rows
from tests.helpers.setup_cli import VIN, WriteConfig, oauth_config, run, seed_store


@pytest.fixture
async def fleet(oauth: SimulatedOAuth) -> AsyncIterator[tuple[SimulatedProxy, str]]:
    proxy = SimulatedProxy(CarModel(vin=VIN), token_validator=oauth.is_valid_access)
    base = await proxy.start()
    try:
        yield proxy, base
    finally:
        await proxy.stop()


def signed_config(write_config: WriteConfig, oauth: SimulatedOAuth, base: str) -> Path:
    config = oauth_config(
        write_config,
        oauth,
        teslaHttpProxy=...,  # unset: sign ourselves
        teslaFleetApiUrl=base,
        teslaVehicleId=VIN,
        energyMonitorIp=...,
    )
    assert run("--config", str(config), "keygen") == 0  # private-key.pem beside the config
    seed_store(config, oauth)
    return config


def test_road_follows_proxy_key_and_key_file(write_config: WriteConfig, tmp_path: Path) -> None:
    config = write_config(teslaHttpProxy=...)
    loaded = load_config(config)
    assert loaded.command_road == "proxy"  # no key yet: the old default proxy URL
    assert loaded.car_api_url == "https://localhost:4443"
    assert run("--config", str(config), "keygen") == 0
    loaded = load_config(config)
    assert loaded.command_road == "signed"
    assert loaded.private_key_file == tmp_path / "private-key.pem"
    assert loaded.car_api_url == "https://fleet-api.prd.na.vn.cloud.tesla.com"
    proxied = load_config(write_config(teslaHttpProxy="https://proxy.lan:4443"))
    assert proxied.command_road == "proxy"


def test_missing_or_bad_private_key_names_the_key(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    config = write_config(teslaHttpProxy=..., teslaPrivateKey="keys/missing.pem")
    with pytest.raises(ConfigError, match=r"teslaPrivateKey: .*missing\.pem does not exist"):
        check_config(config, monitor=False)
    (tmp_path / "private-key.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"teslaPrivateKey: .* not an unencrypted PEM"):
        check_config(write_config(teslaHttpProxy=...), monitor=False)


async def test_doctor_names_the_signed_road_and_checks_pairing(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    fleet: tuple[SimulatedProxy, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy, base = fleet
    config = signed_config(write_config, oauth, base)
    key = load_private_key(config.parent / "private-key.pem")
    proxy.signed[VIN].pair(crypto.public_bytes(key))
    code = await asyncio.to_thread(run, "--config", str(config), "doctor")
    out = capsys.readouterr().out
    assert code == 0, out
    road = doctor_rows(out)["car commands"]
    assert "signed by this charger" in road
    assert base in road
    paired = doctor_rows(out)["key paired with the car"]
    assert paired.startswith("ok ")
    assert not [line for line in out.splitlines() if line.startswith("proxy reachable")]
    assert proxy.signed[VIN].handshakes == 1
    assert (config.parent / CACHE_FILE).exists()  # the daemon starts without a handshake
    assert proxy.billing.wake == 0


async def test_doctor_with_an_unpaired_key_says_how_to_pair(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    fleet: tuple[SimulatedProxy, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy, base = fleet
    config = signed_config(write_config, oauth, base)
    code = await asyncio.to_thread(run, "--config", str(config), "doctor")
    out = capsys.readouterr().out
    assert code == 1
    paired = doctor_rows(out)["key paired with the car"]
    assert "FAIL" in paired
    assert "does not know our key" in paired
    assert "tesla.com/_ak/" in paired
    assert proxy.signed[VIN].faults == [3]
