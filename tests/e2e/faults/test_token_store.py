"""The token store: a kill between writing and renaming the token store must not
lose a rotated pair. A complete, newer pair in a leftover `.tokens.json.*.tmp` is adopted at
start; every other leftover temp file is removed.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import aiohttp
import pytest

from tesla_smart_charger.car.tokens import (
    TokenPair,
    TokenStore,
    pair_from_reply,
    post_token_request,
)
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, run_daemon

NOW = 1_800_000_000.0
OLD = TokenPair("old-access", "old-refresh", NOW + 100, NOW - 28_700, "eu")
NEW = TokenPair("new-access", "new-refresh", NOW + 28_800, NOW, "eu")


def leftover(folder: Path, name: str, content: bytes | TokenPair) -> Path:
    """A temp file as atomic_write_bytes names and creates it (0600)."""
    path = folder / name
    data = json.dumps(content.to_json()).encode() if isinstance(content, TokenPair) else content
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_newer_complete_pair_is_adopted_and_temp_files_removed(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(OLD)
    leftover(tmp_path, ".tokens.json.a1b2c3.tmp", NEW)
    leftover(tmp_path, ".tokens.json.zzz999.tmp", b'{"access_token": "x", "refre')  # cut short

    adopted = store.recover_leftovers()

    assert adopted == NEW
    assert store.load() == NEW
    assert names(tmp_path) == ["tokens.json", "tokens.json.lock"]
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600


def test_older_pair_is_not_adopted_but_removed(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(NEW)
    leftover(tmp_path, ".tokens.json.x.tmp", OLD)
    assert store.recover_leftovers() is None
    assert store.load() == NEW
    assert names(tmp_path) == ["tokens.json", "tokens.json.lock"]


def test_same_expiry_later_issue_wins(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(OLD)
    later = TokenPair("a2", "r2", OLD.expires_at, OLD.issued_at + 1, "eu")
    leftover(tmp_path, ".tokens.json.x.tmp", later)
    assert store.recover_leftovers() == later


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        json.dumps(
            {"access_token": "a", "refresh_token": "", "expires_at": NOW + 9e4, "issued_at": NOW}
        ).encode(),
        json.dumps({"access_token": "a", "refresh_token": "r", "issued_at": NOW}).encode(),
        b"\xff\xfe not json",
        b"[" * 100_000,
    ],
)
def test_incomplete_pairs_are_removed_never_adopted(tmp_path: Path, content: bytes) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(OLD)
    leftover(tmp_path, ".tokens.json.x.tmp", content)
    assert store.recover_leftovers() is None
    assert store.load() == OLD
    assert names(tmp_path) == ["tokens.json", "tokens.json.lock"]


def test_a_pair_beats_a_missing_or_corrupt_store(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    leftover(tmp_path, ".tokens.json.x.tmp", NEW)
    assert store.recover_leftovers() == NEW  # killed during the very first save
    (tmp_path / "tokens.json").write_text("{garbage")
    leftover(tmp_path, ".tokens.json.y.tmp", OLD)
    assert store.recover_leftovers() == OLD
    assert store.load() == OLD


def test_other_files_are_left_alone(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(OLD)
    keep = [
        leftover(tmp_path, ".charger-state.json.abc.tmp", b"{}"),  # another file's temp
        leftover(tmp_path, "tokens.json.tmp", b"{}"),  # not our pattern
        leftover(tmp_path, ".other-tokens.json.x.tmp", NEW),
    ]
    target = leftover(tmp_path, "elsewhere.json", NEW)
    os.symlink(target, tmp_path / ".tokens.json.link.tmp")  # never followed, never adopted
    assert store.recover_leftovers() is None
    assert store.load() == OLD
    assert all(p.exists() for p in keep)
    assert (tmp_path / ".tokens.json.link.tmp").is_symlink()


def test_nothing_to_do_is_cheap_and_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(OLD)
    assert store.recover_leftovers() is None
    assert caplog.records == []


@pytest.mark.slow
async def test_daemon_adopts_the_pair_a_kill_left_behind(tmp_path: Path) -> None:
    car = CarModel(request_amps=16, charging_state="Charging", capacity_kwh=None)
    # Strict single-use refresh tokens: using the spent one again would be login_required.
    async with World(car=car, manual_house=(8.0,), refresh_reuse_grace=0.0) as world:
        config = world.write_config(
            tmp_path,
        )
        seeded = json.loads(config.read_text())
        # The kill: the endpoint rotated the pair, the new one reached only the temp file.
        async with aiohttp.ClientSession() as session:
            reply = await post_token_request(
                session,
                world.oauth.token_url,
                {
                    "grant_type": "refresh_token",
                    "refresh_token": seeded["teslaRefreshToken"],
                    "client_id": seeded["teslaClientId"],
                },
            )
        new = pair_from_reply(reply, issued_at=time.time())
        old = TokenPair(
            seeded["teslaAccessToken"],
            seeded["teslaRefreshToken"],
            time.time() - 1,
            time.time() - 3600,
        )
        TokenStore(tmp_path / "tokens.json").save(old)
        leftover(tmp_path, ".tokens.json.k1ll3d.tmp", new)
        refreshes = world.oauth.refresh_count

        async with run_daemon(tmp_path, config) as daemon:
            status = await daemon.wait_status(
                lambda st: (st["auth"]["access_expires_in_secs"] or 0) > 1000
            )
            code, _ = await daemon.get("/overload?source=shelly")
            assert code == 202
            _, _, body = await world.proxy.wait_for_command("set_charging_amps", timeout=5 * LOADED)

    assert status["auth"]["state"] == "ok"
    assert body == {"charging_amps": 8}  # the car link works with the adopted access token
    assert world.oauth.login_required_count == 0
    assert world.oauth.refresh_count == refreshes  # adopted, not refreshed again
    stored = json.loads((tmp_path / "tokens.json").read_text())
    assert stored["refresh_token"] == new.refresh_token
    assert not list(tmp_path.glob(".tokens.json.*.tmp"))
    assert "adopted a newer token pair" in daemon.log()
